"""TFMA's output read back, and the one verdict written into it.

``load`` reads the metrics, plots and validation result of the stock
Evaluator's layout (``tfma.load_eval_result``, ``load_metrics``,
``load_plots`` and ``load_validation_result`` read the same folder);
``record_checks`` adds the evaluator's own checks (the chunked == whole
check, the no-skill gate) to TFMA's validation result, so that its
``validation_ok`` is the blessing.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Dict, List, Optional

import tensorflow as tf
import tensorflow_model_analysis as tfma
from google.protobuf import json_format
from tensorflow_model_analysis.proto import validation_result_pb2

from components.stateful_evaluator.analysis import config as tfma_config

def _slice_name(slice_key) -> str:
  parts = [f'{k.column}:{k.bytes_value.decode() if k.HasField("bytes_value") else (k.int64_value if k.HasField("int64_value") else k.float_value)}'
           for k in slice_key.single_slice_keys]
  return ','.join(parts) or 'overall'


def _value(value) -> Optional[float]:
  if value.HasField('double_value'):
    return float(value.double_value.value)
  return None


@dataclasses.dataclass
class Results:
  """What TFMA wrote, read back.

  Attributes:
    metrics: ``{model: {slice: {metric: value}}}``; a per-class metric is
      named ``<metric>/class_<id>``; diffs (minus the baseline) under
      ``diff`` (the candidate's) and ``diff:<model>``.
    confusion: ``{slice: [[count]]}``: the candidate's multi-class
      confusion matrix (rows: label, columns: predicted class), when plotted.
    validation_ok: TFMA's verdict on the thresholds (True when there are
      none).
    failures: its failed thresholds and unmatched slices, one line each.
    thresholds: whether the config had any threshold.
  """
  metrics: Dict[str, Dict[str, Dict[str, Optional[float]]]]
  confusion: Dict[str, List[List[float]]]
  validation_ok: bool
  failures: List[str]
  thresholds: bool = True


def load(output_dir: str, num_classes: Optional[int]) -> Results:
  """Reads TFMA's metrics, plots and validation result."""
  metrics: Dict[str, Dict[str, Dict[str, Optional[float]]]] = {}
  for record in tfma.load_metrics(output_dir):
    where = _slice_name(record.slice_key)
    for kv in record.metric_keys_and_values:
      key = kv.key
      name = key.name
      if key.HasField('sub_key') and key.sub_key.HasField('class_id'):
        name = f'{name}/class_{key.sub_key.class_id.value}'
      # '': TFMA's name for its lone model.
      model = key.model_name or tfma_config.CANDIDATE
      if key.is_diff:  # Minus the baseline; 'diff' is the candidate's.
        model = ('diff' if model == tfma_config.CANDIDATE else
                 f'diff:{model}')
      metrics.setdefault(model, {}).setdefault(where, {})[name] = _value(
          kv.value)
  confusion: Dict[str, List[List[float]]] = {}
  for record in tfma.load_plots(output_dir):
    where = _slice_name(record.slice_key)
    for kv in record.plot_keys_and_values:
      if (kv.key.model_name not in (tfma_config.CANDIDATE, '') or
          not kv.value.HasField('multi_class_confusion_matrix_at_thresholds')):
        continue
      matrices = kv.value.multi_class_confusion_matrix_at_thresholds.matrices
      if not matrices:
        continue
      # Threshold 0 (the plot's default): the predicted class is the argmax.
      matrix = min(matrices, key=lambda m: abs(m.threshold))
      k = int(num_classes or 0)
      grid = [[0.0] * k for _ in range(k)]
      for entry in matrix.entries:
        if 0 <= entry.actual_class_id < k and 0 <= entry.predicted_class_id < k:
          grid[entry.actual_class_id][entry.predicted_class_id] = float(
              entry.num_weighted_examples)
      confusion[where] = grid
  validation = tfma.load_validation_result(output_dir)
  failures = []
  for failure in validation.metric_validations_per_slice:
    where = _slice_name(failure.slice_key)
    for f in failure.failures:
      failures.append(f'{f.metric_key.name} [{where}]: {f.message}'
                      .strip())
  for missing in validation.missing_slices:
    failures.append(f'slice {json_format.MessageToJson(missing, indent=None)}'
                    ' matched no example')
  # TFMA marks a config without any threshold "not ok, missing thresholds"
  # (its Evaluator then writes no blessing); here the chunked == whole check
  # and the no-skill gate are always validations, so no threshold is no
  # failure.
  ok = bool(validation.validation_ok) or (
      validation.missing_thresholds and not failures)
  return Results(metrics=metrics, confusion=confusion, validation_ok=ok,
                 failures=failures,
                 thresholds=not validation.missing_thresholds)


@dataclasses.dataclass(frozen=True)
class Check:
  """A check of the evaluator's own, recorded in TFMA's validation result.

  Attributes:
    name: the metric key's name, e.g. ``chunked_whole_max_abs_diff``.
    value: the measured value (None: it could not be measured).
    ok: whether it passed.
    message: one line.
    upper_bound, lower_bound: the threshold it was held to.
  """
  name: str
  value: Optional[float]
  ok: bool
  message: str
  upper_bound: Optional[float] = None
  lower_bound: Optional[float] = None


def record_checks(output_dir: str, checks: List[Check], *,
                  thresholds_ok: bool, rubber_stamp: bool
                 ) -> validation_result_pb2.ValidationResult:
  """Makes TFMA's ``validations.tfrecord`` the one verdict: TFMA's own
  threshold checks and ``checks`` (the chunked == whole check, the no-skill
  gate), a failed check listed as a ``ValidationFailure`` of the candidate
  on the overall slice. ``validation_ok`` is then True exactly when every
  TFMA threshold and every check passed (the blessing);
  ``missing_thresholds`` is False (the checks are thresholds);
  ``rubber_stamp`` is True when there was no comparable baseline (change
  thresholds skipped, as TFX's Evaluator does). ``thresholds_ok``: TFMA's
  own verdict as ``load`` reads it (``Results.validation_ok``). Returns what
  was written."""
  pattern = os.path.join(output_dir, 'validations*')
  paths = tf.io.gfile.glob(pattern)
  if len(paths) != 1:
    raise tfma_config.EvalConfigError(
        f'expected one TFMA validation file {pattern}, found {len(paths)}')
  result = tfma.load_validation_result(output_dir)
  failed = [c for c in checks if not c.ok]
  if failed:
    entry = result.metric_validations_per_slice.add()
    entry.slice_key.SetInParent()  # Overall.
    for check in failed:
      failure = entry.failures.add(message=check.message)
      failure.metric_key.name = check.name
      # TFMA's name for the candidate: '' when it is the only model.
      failure.metric_key.model_name = ('' if rubber_stamp else
                                       tfma_config.CANDIDATE)
      if check.value is not None and math.isfinite(check.value):
        failure.metric_value.double_value.value = check.value
      bound = failure.metric_threshold.value_threshold
      if check.upper_bound is not None:
        bound.upper_bound.value = check.upper_bound
      if check.lower_bound is not None:
        bound.lower_bound.value = check.lower_bound
  result.validation_ok = bool(thresholds_ok) and not failed
  result.missing_thresholds = False
  result.rubber_stamp = bool(rubber_stamp)
  with tf.io.TFRecordWriter(paths[0]) as writer:
    writer.write(result.SerializeToString())
  return result
