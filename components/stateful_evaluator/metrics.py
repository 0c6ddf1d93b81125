"""Metric maths and slicing over labelled steps. NumPy only.

The evaluator turns the chunked model outputs into ``StepRecords``: one row
per labelled time step (``label_weight > 0``), with the step's label, model
output, weight, loss and where it sits (sequence, length, segment, position).
Everything here is a plain function of those arrays.

Shapes: N labelled steps, K model outputs per step, S sequences.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from components.stateful_evaluator import config as config_lib

CLASSIFICATION = 'classification'
REGRESSION = 'regression'

MetricValues = Dict[str, Optional[float]]


@dataclasses.dataclass
class StepRecords:
  """Labelled steps of one model run.

  Attributes:
    labels: [N] class ids (int64) or values (float32).
    outputs: float32[N, K], the model output at each step (logits for
      classification).
    weights: float32[N], ``label_weight`` (> 0).
    losses: float32[N], the unreduced per-step loss.
    sequence_ids: int64[N], index of the step's sequence in
      ``sequence_keys``.
    sequence_lengths: int64[N], the length L of the step's sequence.
    segment_index: int64[N], the segment k holding the step.
    position: int64[N], the step's index in its sequence (0 .. L-1).
    sequence_keys: [S] the keys (str).
  """
  labels: np.ndarray
  outputs: np.ndarray
  weights: np.ndarray
  losses: np.ndarray
  sequence_ids: np.ndarray
  sequence_lengths: np.ndarray
  segment_index: np.ndarray
  position: np.ndarray
  sequence_keys: List[str]

  def __len__(self) -> int:
    return int(self.weights.shape[0])

  def subset(self, rows: np.ndarray) -> 'StepRecords':
    """The rows selected by a bool[N] mask (keys table kept)."""
    return StepRecords(
        labels=self.labels[rows], outputs=self.outputs[rows],
        weights=self.weights[rows], losses=self.losses[rows],
        sequence_ids=self.sequence_ids[rows],
        sequence_lengths=self.sequence_lengths[rows],
        segment_index=self.segment_index[rows], position=self.position[rows],
        sequence_keys=self.sequence_keys)


def _wmean(values: np.ndarray, weights: np.ndarray) -> Optional[float]:
  total = float(np.sum(weights, dtype=np.float64))
  if total <= 0:
    return None
  return float(np.sum(values.astype(np.float64) * weights) / total)


def binary_auc(scores: np.ndarray, positive: np.ndarray,
               weights: np.ndarray) -> Optional[float]:
  """Weighted ROC AUC (Mann-Whitney; tied scores count one half).

  Args:
    scores: float[N], higher means more likely positive.
    positive: bool[N].
    weights: float[N] >= 0.

  Returns:
    P(score of a random positive > score of a random negative), weighted;
    None when either class has no weight.
  """
  w = weights.astype(np.float64)
  wpos = float(np.sum(w[positive]))
  wneg = float(np.sum(w[~positive]))
  if wpos <= 0 or wneg <= 0:
    return None
  order = np.argsort(scores, kind='mergesort')
  s, p, w = scores[order], positive[order], w[order]
  # Group equal scores.
  starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
  pos_w = np.add.reduceat(np.where(p, w, 0.0), starts)
  neg_w = np.add.reduceat(np.where(p, 0.0, w), starts)
  neg_below = np.cumsum(neg_w) - neg_w
  area = np.sum(pos_w * (neg_below + 0.5 * neg_w))
  return float(area / (wpos * wneg))


def classification_metrics(records: StepRecords, num_classes: int,
                           families: Sequence[str],
                           top_k: Sequence[int]) -> MetricValues:
  """Accuracy, per-class precision/recall, AUC (binary), top-k accuracy.

  Every metric is weighted by ``records.weights``; a metric whose
  denominator is zero (e.g. precision of a class never predicted) is None.
  """
  labels = records.labels.astype(np.int64)
  out = records.outputs
  w = records.weights.astype(np.float64)
  pred = np.argmax(out, axis=1)
  result: MetricValues = {}
  if 'accuracy' in families:
    result['accuracy'] = _wmean((pred == labels).astype(np.float64), w)
  for family, chosen, actual in (('precision', pred, labels),
                                 ('recall', labels, pred)):
    if family not in families:
      continue
    # precision/c = P(label = c | pred = c); recall/c = P(pred = c | label = c)
    values = []
    for c in range(num_classes):
      sel = chosen == c
      value = _wmean((actual[sel] == c).astype(np.float64), w[sel])
      result[f'{family}/{c}'] = value
      if value is not None:
        values.append(value)
    result[f'macro_{family}'] = float(np.mean(values)) if values else None
  if 'auc' in families:
    if num_classes != 2:
      raise config_lib.EvalConfigError(
          f'auc is for binary classification; this model has {num_classes} '
          'classes (use top_k_accuracy)')
    # softmax(z)[1] = sigmoid(z1 - z0): same order, no overflow.
    score = (out[:, 1] - out[:, 0]).astype(np.float64) if len(records) else (
        np.zeros(0))
    result['auc'] = binary_auc(score, labels == 1, w)
  if 'top_k_accuracy' in families:
    for k in top_k:
      if k >= num_classes:
        continue
      if len(records):
        label_score = out[np.arange(len(records)), labels]
        # As tf.math.in_top_k: ties at the boundary count as in the top k.
        higher = np.sum(out > label_score[:, None], axis=1)
        hit = (higher < k).astype(np.float64)
      else:
        hit = np.zeros(0)
      result[f'top_{k}_accuracy'] = _wmean(hit, w)
  return result


def regression_metrics(records: StepRecords,
                       families: Sequence[str]) -> MetricValues:
  """MAE and RMSE of output 0 against the labels, weighted."""
  w = records.weights.astype(np.float64)
  err = (records.outputs[:, 0].astype(np.float64) -
         records.labels.astype(np.float64)) if len(records) else np.zeros(0)
  result: MetricValues = {}
  if 'mae' in families:
    result['mae'] = _wmean(np.abs(err), w)
  if 'rmse' in families:
    mse = _wmean(err * err, w)
    result['rmse'] = math.sqrt(mse) if mse is not None else None
  return result


@dataclasses.dataclass(frozen=True)
class MetricSettings:
  """What to compute for one model: its task and the selected families."""
  task: str
  num_classes: Optional[int]
  families: Tuple[str, ...]
  top_k: Tuple[int, ...]

  @classmethod
  def for_task(cls, task: str, num_classes: Optional[int],
               output_units: int,
               config: config_lib.EvalConfig) -> 'MetricSettings':
    """Resolves ``config.metrics`` for a task; errors on families that do
    not apply."""
    if task == CLASSIFICATION:
      default = ['accuracy', 'precision', 'recall']
      default.append('auc' if num_classes == 2 else 'top_k_accuracy')
      allowed = set(config_lib.CLASSIFICATION_FAMILIES)
    elif task == REGRESSION:
      if output_units != 1:
        raise config_lib.EvalConfigError(
            f'regression metrics need one output per step; the model has '
            f'{output_units}')
      default = list(config_lib.REGRESSION_FAMILIES)
      allowed = set(default)
    else:
      raise config_lib.EvalConfigError(f'unknown task {task!r}')
    families = tuple(default if config.metrics is None else config.metrics)
    wrong = [f for f in families if f not in allowed]
    if wrong:
      raise config_lib.EvalConfigError(
          f'metrics {wrong} do not apply to a {task} model; choose from '
          f'{sorted(allowed)}')
    if task == CLASSIFICATION and 'auc' in families and num_classes != 2:
      raise config_lib.EvalConfigError(
          f'auc is for binary classification; this model has {num_classes} '
          'classes (use top_k_accuracy)')
    return cls(task=task, num_classes=num_classes, families=families,
               top_k=tuple(config.top_k))

  def metric_names(self) -> List[str]:
    """Every metric name ``compute_metrics`` returns, in report order."""
    names = ['loss']
    if self.task == CLASSIFICATION:
      if 'accuracy' in self.families:
        names.append('accuracy')
      if 'auc' in self.families:
        names.append('auc')
      if 'top_k_accuracy' in self.families:
        names += [f'top_{k}_accuracy' for k in self.top_k
                  if k < self.num_classes]
      for family in ('precision', 'recall'):
        if family in self.families:
          names.append(f'macro_{family}')
          names += [f'{family}/{c}' for c in range(self.num_classes)]
    else:
      names += [f for f in config_lib.REGRESSION_FAMILIES
                if f in self.families]
    return names + ['weighted_count', 'num_sequences']

  @property
  def primary(self) -> str:
    """The metric the report plots by slice (accuracy or MAE; else loss)."""
    if self.task == CLASSIFICATION and 'accuracy' in self.families:
      return 'accuracy'
    if self.task == REGRESSION and 'mae' in self.families:
      return 'mae'
    return 'loss'


def compute_metrics(records: StepRecords,
                    settings: MetricSettings) -> MetricValues:
  """Every metric of ``settings`` over ``records`` (one slice)."""
  result: MetricValues = {'loss': _wmean(records.losses.astype(np.float64),
                                         records.weights)}
  if settings.task == CLASSIFICATION:
    result.update(classification_metrics(records, settings.num_classes,
                                         settings.families, settings.top_k))
  else:
    result.update(regression_metrics(records, settings.families))
  result['weighted_count'] = float(np.sum(records.weights, dtype=np.float64))
  result['num_sequences'] = float(np.unique(records.sequence_ids).size)
  return {name: result.get(name) for name in settings.metric_names()}


def step_errors(records: StepRecords, task: str) -> np.ndarray:
  """float64[N]: 0/1 misclassification, or absolute error (regression)."""
  if not len(records):
    return np.zeros(0)
  if task == CLASSIFICATION:
    return (np.argmax(records.outputs, axis=1) !=
            records.labels.astype(np.int64)).astype(np.float64)
  return np.abs(records.outputs[:, 0].astype(np.float64) -
                records.labels.astype(np.float64))


# --------------------------------------------------------------------------
# Slices
# --------------------------------------------------------------------------


def sequence_lengths(records: StepRecords) -> np.ndarray:
  """int64[S']: the length of every sequence that has a labelled step."""
  _, first = np.unique(records.sequence_ids, return_index=True)
  return records.sequence_lengths[first]


def length_edges(lengths: np.ndarray, buckets: int) -> List[float]:
  """The ``buckets - 1`` cut points: equally spaced quantiles of ``lengths``.

  A sequence of length L goes to bucket ``i`` = the number of edges ``< L``,
  i.e. short is ``L <= edges[0]``, long is ``L > edges[-1]``.
  """
  if buckets < 2 or lengths.size == 0:
    return []
  qs = np.arange(1, buckets) / buckets
  # Rounded so that float noise (6.999999999999998) cannot move a length
  # across a cut point.
  return [round(float(q), 9)
          for q in np.quantile(lengths.astype(np.float64), qs)]


def length_bucket_of(lengths: np.ndarray, edges: Sequence[float]) -> np.ndarray:
  """int64[...]: the bucket index of each length (see ``length_edges``)."""
  return np.searchsorted(np.asarray(edges, np.float64),
                         lengths.astype(np.float64), side='left')


@dataclasses.dataclass(frozen=True)
class SliceDefinitions:
  """How steps are assigned to slices; shared by candidate and baseline.

  Attributes:
    names: every slice name, in report order.
    length_edges: the cut points of the length buckets.
    length_ranges: ``{slice: [min_length, max_length]}`` observed.
  """
  names: Tuple[str, ...]
  length_edges: Tuple[float, ...]
  length_ranges: Mapping[str, Tuple[Optional[int], Optional[int]]]

  def rows(self, name: str, records: StepRecords) -> np.ndarray:
    """bool[N]: the steps of ``records`` in slice ``name``."""
    if name == config_lib.OVERALL:
      return np.ones(len(records), bool)
    if name == config_lib.SEGMENT_FIRST:
      return records.segment_index == 0
    if name == config_lib.SEGMENT_LATER:
      return records.segment_index > 0
    if name.startswith(config_lib.LENGTH_PREFIX):
      bucket = self._length_names().index(name)
      return length_bucket_of(records.sequence_lengths,
                              self.length_edges) == bucket
    raise KeyError(name)

  def _length_names(self) -> List[str]:
    return [n for n in self.names if n.startswith(config_lib.LENGTH_PREFIX)]

  def to_dict(self) -> Dict[str, object]:
    return {'names': list(self.names),
            'length_edges': list(self.length_edges),
            'length_ranges': {k: list(v) for k, v in
                              self.length_ranges.items()}}


def define_slices(records: StepRecords,
                  config: config_lib.EvalConfig) -> SliceDefinitions:
  """Slices for ``config`` with length quantiles taken from ``records``."""
  lengths = sequence_lengths(records)
  edges = length_edges(lengths, config.length_buckets)
  ranges = {}
  buckets = length_bucket_of(lengths, edges)
  for i, name in enumerate(config.length_bucket_names()):
    chosen = lengths[buckets == i]
    ranges[config_lib.LENGTH_PREFIX + name] = (
        (int(chosen.min()), int(chosen.max())) if chosen.size else
        (None, None))
  return SliceDefinitions(names=config.slice_names(),
                          length_edges=tuple(edges), length_ranges=ranges)


def sliced_metrics(records: StepRecords, slices: SliceDefinitions,
                   settings: MetricSettings) -> Dict[str, MetricValues]:
  """``{slice name: metrics}`` for every slice."""
  return {name: compute_metrics(records.subset(slices.rows(name, records)),
                                settings)
          for name in slices.names}


# --------------------------------------------------------------------------
# Error by position in the sequence
# --------------------------------------------------------------------------


def position_edges(max_position: int, bins: int) -> List[int]:
  """Integer bin edges over positions ``0 .. max_position``.

  One bin per position when there are at most ``bins`` positions; else
  ``bins`` equal-width bins. Bin ``i`` is ``[edges[i], edges[i + 1])``.
  """
  count = max_position + 1
  if count <= bins:
    return list(range(count + 1))
  edges = np.unique(np.ceil(np.linspace(0, count, bins + 1)).astype(np.int64))
  return [int(e) for e in edges]


def by_position(records: StepRecords, edges: Sequence[int],
                task: str) -> Dict[str, List[Optional[float]]]:
  """Per position bin: labelled-step weight, mean loss and mean error.

  The error is the misclassification rate (classification) or the mean
  absolute error (regression).
  """
  bins = np.searchsorted(np.asarray(edges), records.position, side='right') - 1
  errors = step_errors(records, task)
  out = {'weight': [], 'loss': [], 'error': []}
  for i in range(len(edges) - 1):
    sel = bins == i
    w = records.weights[sel]
    out['weight'].append(float(np.sum(w, dtype=np.float64)))
    out['loss'].append(_wmean(records.losses[sel], w))
    out['error'].append(_wmean(errors[sel], w))
  return out


def json_safe(value: Any) -> Any:
  """NaN/inf as strings (JSON has neither), numpy scalars as Python."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, (np.floating, float)):
    value = float(value)
    return value if math.isfinite(value) else str(value)
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  return value
