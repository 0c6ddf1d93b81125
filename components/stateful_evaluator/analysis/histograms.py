"""TFMA's per-class calibration histograms, binned in NumPy.

TFMA builds the histogram behind AUC and top-1 precision / recall of a
multi-class model one example and one class at a time in Python
(``calibration_histogram._CalibrationHistogramCombiner`` through
``metric_util.to_label_prediction_example_weight``); with a baseline that is
most of an in-process TFMA run. ``vectorise`` swaps each such combiner of
``in_process`` for ``FastHistogram``: the same values in the same order,
binned every ``CHUNK`` examples, so memory stays flat. Protos equal TFMA's
(``test_tfma_in_process.py``). The TFMA internals used here (that combiner
and its settings, TFMA's label and prediction preparation) come from
``tfma_internals``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

from components.stateful_evaluator.analysis import tfma_internals as internals


def vectorise(computations: List[metric_types.MetricComputation],
              config: tfma.EvalConfig
             ) -> List[metric_types.MetricComputation]:
  """``computations`` with every eligible calibration histogram's combiner
  replaced by a ``FastHistogram`` (one shared ``Inputs``)."""
  inputs = Inputs(config)
  return [metric_types.MetricComputation(
              keys=c.keys, preprocessors=c.preprocessors,
              combiner=FastHistogram(c.combiner, inputs))
          if FastHistogram.eligible(c.combiner) else c
          for c in computations]


class Inputs:
  """One example's (label, prediction, example weight) per model, as
  ``metric_util.to_label_prediction_example_weight`` prepares them before
  any sub-key selection; computed once per example for all the histograms
  (the combiners of one slice see the same element one after another)."""

  def __init__(self, config: tfma.EvalConfig):
    self._keys = {}
    for spec in config.model_specs:
      name = spec.name if len(config.model_specs) > 1 else ''
      self._keys[name] = (spec.label_key, spec.prediction_key)
    self._element = None
    self._values: Dict[str, Any] = {}

  def get(self, element, model: str):
    if element is not self._element:
      self._element, self._values = element, {}
    if model not in self._values:
      self._values[model] = self._prepare(element, model)
    return self._values[model]

  def _prepare(self, element, model: str):
    label_key, prediction_key = self._keys.get(model, ('', ''))
    label, prediction = element.label, element.prediction
    weight = element.example_weight
    if label_key and isinstance(label, Mapping):
      label = label.get(label_key, label)
    if model:
      prediction = internals.get_by_keys(prediction, [model])
      if isinstance(label, Mapping):
        label = label.get(model, label)
      if isinstance(weight, Mapping):
        weight = weight.get(model, weight)
    label, prediction = internals.prepare_labels_and_predictions(
        label, prediction, prediction_key)
    return label, prediction, np.asarray(weight)


class FastHistogram(beam.CombineFn):
  """TFMA's calibration histogram for one class of a multi-class model
  (sub key ``class_id``, optionally ``top_k``), vectorised: the examples'
  sparse labels, probability vectors and weights are binned in NumPy every
  ``CHUNK`` examples (``np.add.at`` adds in example order), with the same
  values in the same order as TFMA's ``_CalibrationHistogramCombiner`` and
  its ``to_label_prediction_example_weight``: the class's one-hot label,
  its probability or -inf outside the top k, zero weights skipped. An
  example of another shape goes through TFMA's own per-example code (its
  buckets added in; within such an example the sums may associate
  differently in the last bit)."""

  CHUNK = 4096

  def __init__(self, slow, inputs: Inputs):
    self._slow = slow
    self._inputs = inputs
    self._settings = internals.calibration_settings(slow)
    self._key = self._settings.key
    self._buckets = self._settings.num_buckets + 2

  @staticmethod
  def eligible(combiner) -> bool:
    if type(combiner) is not (  # pylint: disable=unidiomatic-typecheck
        internals.CalibrationHistogramCombiner):
      return False
    c = internals.calibration_settings(combiner)
    sub = c.key.sub_key
    return (c.aggregation_type is None and not c.class_weights and
            c.prediction_based_bucketing and c.fractional_labels and
            not c.key.output_name and sub is not None and
            sub.class_id is not None and sub.k is None)

  def create_accumulator(self):
    return {'rows': [], 'sums': np.zeros((3, self._buckets)),
            'seen': np.zeros(self._buckets, bool)}

  def add_input(self, acc, element):
    label, prediction, weight = self._inputs.get(element,
                                                 self._key.model_name)
    if (label is None or prediction is None or label.size != 1 or
        prediction.ndim != 1 or weight.size != 1 or
        self._key.sub_key.class_id >= prediction.size):
      self._flush(acc)
      for b, bucket in self._slow.add_input({}, element).items():
        acc['sums'][:, b] += (bucket.weighted_labels,
                              bucket.weighted_predictions,
                              bucket.weighted_examples)
        acc['seen'][b] = True
      return acc
    acc['rows'].append((int(label.reshape(-1)[0]), prediction,
                        float(weight.reshape(-1)[0])))
    if len(acc['rows']) >= self.CHUNK:
      self._flush(acc)
    return acc

  def _flush(self, acc) -> None:
    rows = acc['rows']
    if not rows:
      return
    acc['rows'] = []
    sub, cal = self._key.sub_key, self._settings
    labels = np.array([r[0] for r in rows])
    scores = np.stack([r[1] for r in rows])
    weights = (np.array([r[2] for r in rows]) if self._key.example_weighted
               else np.ones(len(rows)))
    prediction = scores[:, sub.class_id].astype(np.float64)
    if sub.top_k is not None:
      top = np.argpartition(scores, -sub.top_k, axis=-1)[:, -sub.top_k:]
      prediction = np.where((top == sub.class_id).any(axis=1), prediction,
                            -np.inf)
    label = (labels == sub.class_id).astype(np.float64)
    keep = weights != 0.0
    label, prediction, weights = label[keep], prediction[keep], weights[keep]
    index = ((prediction - cal.left) / cal.range * cal.num_buckets) + 1
    last = self._buckets - 1
    bucket = np.where(index < 0, 0, np.where(
        index >= last, last,
        np.floor(np.where(np.isfinite(index), index, 0)))).astype(np.int64)
    np.add.at(acc['sums'][0], bucket, label * weights)
    np.add.at(acc['sums'][1], bucket, prediction * weights)
    np.add.at(acc['sums'][2], bucket, weights)
    acc['seen'][bucket] = True

  def merge_accumulators(self, accumulators):
    raise NotImplementedError('in-process TFMA has one accumulator per slice')

  def extract_output(self, acc):
    self._flush(acc)
    sums = acc['sums']
    return {self._key: [
        internals.CalibrationBucket(int(b), float(sums[0, b]),
                                     float(sums[1, b]), float(sums[2, b]))
        for b in np.flatnonzero(acc['seen'])]}
