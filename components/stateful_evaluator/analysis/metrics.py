"""The default config's weighted-mean metrics for TFMA, in vectorised numpy.

A Keras metric such as ``SparseCategoricalAccuracy`` goes through a
TensorFlow function per combiner, traced in every run; TFMA's own
``MeanSquaredError`` and ``MeanAbsoluteError`` walk every label element in a
Python loop (most of TFMA's time over a per-step regression set, whose
extracts hold a sequence's steps each; BENCHMARKS section 5). These are TFMA metrics with the same names and values:

* ``SparseCategoricalAccuracy`` (``sparse_categorical_accuracy``): the
  weighted share of examples whose arg-max class is the label (the first
  highest probability wins a tie, as ``np.argmax`` and Keras's
  ``sparse_categorical_matches`` do);
* ``SparseCategoricalCrossentropy`` (``sparse_categorical_crossentropy``):
  the weighted mean of ``-log p[label]``, the probability clipped to
  ``[eps, 1 - eps]`` with Keras's epsilon (1e-7) as Keras clips it;
* ``ElementwiseMeanSquaredError`` (``mean_squared_error``) and
  ``ElementwiseMeanAbsoluteError`` (``mean_absolute_error``): TFMA's
  ``MeanSquaredError`` and ``MeanAbsoluteError``, the weighted mean over every label
  element of the squared / absolute error, the example weight counted once
  per element and elements whose error is NaN left out, as TFMA's
  ``mean_regression_error`` does element by element.

For the first two labels are class ids (one value per example),
predictions class probabilities. The evaluator's default config names them with ``module``
set to this module; TFMA imports it where the metrics are computed.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterable, Optional, Tuple

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util
from tensorflow_model_analysis.proto import config_pb2

MODULE = __name__
ACCURACY_NAME = 'sparse_categorical_accuracy'
CROSSENTROPY_NAME = 'sparse_categorical_crossentropy'
MSE_NAME = 'mean_squared_error'
MAE_NAME = 'mean_absolute_error'
EPSILON = 1e-7  # tf_keras.backend.epsilon(), the clip of its crossentropy.


def _matches(label: np.ndarray, probabilities: np.ndarray,
             weight: np.ndarray) -> Tuple[float, float]:
  weight = metric_util.safe_to_scalar(weight)
  hit = float(int(np.argmax(probabilities)) == int(label.reshape(-1)[0]))
  return hit * weight, weight


def _crossentropy(label: np.ndarray, probabilities: np.ndarray,
                  weight: np.ndarray) -> Tuple[float, float]:
  weight = metric_util.safe_to_scalar(weight)
  p = float(np.clip(probabilities.reshape(-1)[int(label.reshape(-1)[0])],
                    EPSILON, 1.0 - EPSILON))
  return -float(np.log(p)) * weight, weight


def _elementwise(error: Callable[[np.ndarray], np.ndarray]):
  """A regression score: ``error(label - prediction)`` summed over the
  elements, each weighted by the example weight (one for the example or one
  per element), NaN errors left out."""

  def score(label: np.ndarray, prediction: np.ndarray,
            weight: np.ndarray) -> Tuple[float, float]:
    label = np.asarray(label, np.float64).reshape(-1)
    prediction = np.asarray(prediction, np.float64).reshape(-1)
    weight = np.asarray(weight, np.float64).reshape(-1)
    if label.shape != prediction.shape or weight.size not in (1, label.size):
      raise ValueError(f'{label.size} label values against '
                       f'{prediction.size} predictions and {weight.size} '
                       'example weights in one example')
    values = error(label - prediction) * weight
    kept = ~np.isnan(values)
    weights = np.broadcast_to(weight, label.shape)
    return float(np.sum(values[kept])), float(np.sum(weights[kept]))

  return score


_SCORES = {ACCURACY_NAME: _matches, CROSSENTROPY_NAME: _crossentropy,
           MSE_NAME: _elementwise(np.square),
           MAE_NAME: _elementwise(np.abs)}


@dataclasses.dataclass
class _Accumulator:
  total: float = 0.0
  weight: float = 0.0


class _WeightedMeanCombiner(beam.CombineFn):
  """The example-weighted mean of one per-example score."""

  def __init__(self, key: metric_types.MetricKey, scored: str,
               eval_config: Optional[config_pb2.EvalConfig],
               example_weighted: bool):
    self._key = key
    self._score = _SCORES[scored]
    self._eval_config = eval_config
    self._example_weighted = example_weighted

  def create_accumulator(self) -> _Accumulator:
    return _Accumulator()

  def add_input(self, accumulator: _Accumulator,
                element: metric_types.StandardMetricInputs) -> _Accumulator:
    for label, prediction, weight in (
        metric_util.to_label_prediction_example_weight(
            element, eval_config=self._eval_config,
            model_name=self._key.model_name,
            output_name=self._key.output_name,
            example_weighted=self._example_weighted, flatten=False)):
      total, w = self._score(np.asarray(label), np.asarray(prediction),
                             np.asarray(weight))
      accumulator.total += total
      accumulator.weight += w
    return accumulator

  def merge_accumulators(self, accumulators: Iterable[_Accumulator]
                        ) -> _Accumulator:
    merged = _Accumulator()
    for a in accumulators:
      merged.total += a.total
      merged.weight += a.weight
    return merged

  def extract_output(self, accumulator: _Accumulator
                    ) -> Dict[metric_types.MetricKey, float]:
    value = (accumulator.total / accumulator.weight if accumulator.weight
             else float('nan'))
    return {self._key: value}


def _computations(name: str, scored: str):
  """TFMA's ``create_computations`` for the metric ``scored`` named
  ``name``."""

  def create(name: str = name,
             eval_config: Optional[config_pb2.EvalConfig] = None,
             model_name: str = '', output_name: str = '',
             example_weighted: bool = False,
             sub_key: Optional[metric_types.SubKey] = None,
             **_) -> metric_types.MetricComputations:
    if sub_key is not None:
      raise ValueError(f'{scored} takes class ids as labels; it has no '
                       f'per-class form (sub_key {sub_key})')
    key = metric_types.MetricKey(name=name, model_name=model_name,
                                 output_name=output_name,
                                 example_weighted=example_weighted)
    return [metric_types.MetricComputation(
        keys=[key], preprocessors=None,
        combiner=_WeightedMeanCombiner(key, scored, eval_config,
                                       example_weighted))]

  return metric_util.merge_per_key_computations(create)


class _WeightedMean(metric_types.Metric):
  """A TFMA metric: the example-weighted mean of the score ``SCORED``."""
  SCORED = ''

  def __init__(self, name: Optional[str] = None):
    name = name or self.SCORED
    super().__init__(_computations(name, self.SCORED), name=name)


class SparseCategoricalAccuracy(_WeightedMean):
  """The share of examples whose arg-max class is the label."""
  SCORED = ACCURACY_NAME


class SparseCategoricalCrossentropy(_WeightedMean):
  """The mean of ``-log p[label]`` (probabilities clipped as Keras clips)."""
  SCORED = CROSSENTROPY_NAME


# TFMA looks a metric's class name up among its own registered metrics
# before it reads ``module``: these two need names of their own.
class ElementwiseMeanSquaredError(_WeightedMean):
  """The weighted mean of the squared error over every label element."""
  SCORED = MSE_NAME


class ElementwiseMeanAbsoluteError(_WeightedMean):
  """The weighted mean of the absolute error over every label element."""
  SCORED = MAE_NAME
