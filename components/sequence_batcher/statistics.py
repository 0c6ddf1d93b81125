"""The per-split numbers of a lane plan (``metadata.json``): counts,
padding efficiency and the sequence-length histogram; the label statistics
of the written batches (``LabelTally``); and the whole ``metadata.json``
dict of a split (``split_metadata``, shared by the Beam writer and the NumPy
reference). Plain NumPy."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from components.sequence_batcher import metadata as metadata_lib
from components.sequence_batcher.layout import LanePlan


def length_histogram(lengths: np.ndarray,
                     num_unroll: int) -> Dict[str, List[int]]:
  """Counts of sequence lengths in power-of-two bins.

  Returns:
    ``{'edges': [...], 'counts': [...]}`` where ``counts[i]`` is the number
    of lengths in ``[edges[i], edges[i + 1])`` (the last bin is closed).
  """
  del num_unroll  # Bins are absolute lengths; T is in the metadata.
  if lengths.size == 0:
    return {'edges': [1, 2], 'counts': [0]}
  top = int(lengths.max())
  edges = [1]
  while edges[-1] <= top:
    edges.append(edges[-1] * 2)
  counts, _ = np.histogram(lengths, bins=np.array(edges))
  return {'edges': edges, 'counts': [int(c) for c in counts]}


def split_statistics(plan: LanePlan, truncated_timesteps: int = 0) -> dict:
  """The per-split numbers written to ``metadata.json``."""
  lengths = plan.lengths
  stats = {
      'num_sequences': plan.num_sequences,
      'num_batches': plan.num_batches,
      'num_shards': plan.num_shards,
      'batches_per_shard': plan.batches_per_shard,
      'real_timesteps': plan.real_timesteps,
      'padded_timesteps': plan.total_timesteps - plan.real_timesteps,
      'truncated_timesteps': int(truncated_timesteps),
      'efficiency': plan.efficiency,
      'length_histogram': length_histogram(lengths, plan.config.num_unroll),
      'min_length': int(lengths.min()) if lengths.size else 0,
      'median_length': float(np.median(lengths)) if lengths.size else 0.0,
      'max_length': int(lengths.max()) if lengths.size else 0,
  }
  if plan.groups is not None:
    stats['groups'] = [list(g) for g in plan.groups]
  return stats


# Integer labels are counted per value (``class_counts``) while they are in
# [0, MAX_CLASS_COUNTS): class ids. Others are not class ids; none are kept.
MAX_CLASS_COUNTS = 1 << 16

# The key of a split's ``metadata.json`` that holds ``LabelTally.result()``.
LABELS_KEY = 'labels'


@dataclasses.dataclass
class LabelTally:
  """The statistics of the labelled steps (``label_weight > 0``) of a run of
  consecutive batches, taken as they are written.

  The sums are kept per batch (``sums``, ``squares``: the float64 sum of a
  non-empty batch's labelled values and of their squares) and added in
  batch order only by ``result``, so the mean and standard deviation are
  the same floats whichever worker tallied which batches, and the same as a
  scan of the written batches in order. ``extend`` appends the tally of the
  batches that follow.

  Attributes:
    count: labelled steps.
    lo, hi: their least and greatest label.
    integral: every labelled value is a whole number.
    sums, squares: float64 per non-empty batch, in batch order.
    class_counts: int64[max + 1], steps per label value, while every label
      is an integer in [0, MAX_CLASS_COUNTS); else None.
  """
  count: int = 0
  lo: float = float('inf')
  hi: float = float('-inf')
  integral: bool = True
  sums: List[float] = dataclasses.field(default_factory=list)
  squares: List[float] = dataclasses.field(default_factory=list)
  class_counts: Optional[np.ndarray] = dataclasses.field(
      default_factory=lambda: np.zeros((0,), np.int64))

  def add_batch(self, labels: np.ndarray, label_weight: np.ndarray) -> None:
    """Tallies the next batch: ``labels`` [B, T] as written (int64 or
    float32) and ``label_weight`` float32[B, T]."""
    values = np.asarray(labels)[np.asarray(label_weight) > 0]
    if values.dtype.kind != 'i':
      self.class_counts = None
    if values.size == 0:
      return
    self.count += int(values.size)
    self.lo = min(self.lo, float(values.min()))
    self.hi = max(self.hi, float(values.max()))
    as_float = values.astype(np.float64)
    self.sums.append(float(as_float.sum()))
    self.squares.append(float((as_float * as_float).sum()))
    if self.integral and values.dtype.kind == 'f':
      self.integral = bool(np.all(np.isfinite(values)) and
                           np.all(values == np.round(values)))
    if self.class_counts is not None:
      if values.min() < 0 or values.max() >= MAX_CLASS_COUNTS:
        self.class_counts = None
      else:
        self.class_counts = _add_counts(self.class_counts,
                                        np.bincount(values))

  def extend(self, later: 'LabelTally') -> None:
    """Adds the tally of the batches after this one's."""
    self.count += later.count
    self.lo = min(self.lo, later.lo)
    self.hi = max(self.hi, later.hi)
    self.integral = self.integral and later.integral
    self.sums.extend(later.sums)
    self.squares.extend(later.squares)
    if self.class_counts is None or later.class_counts is None:
      self.class_counts = None
    else:
      self.class_counts = _add_counts(self.class_counts, later.class_counts)

  def result(self) -> Dict[str, Any]:
    """The statistics as ``metadata.json`` holds them under ``labels``:
    ``count``, ``min``, ``max``, ``mean``, ``std`` (population), ``integral``
    and ``class_counts`` (a list, or None); ``min`` to ``std`` are None
    when there is no labelled step (``label_statistics`` reads them)."""
    total = total_sq = 0.0
    for s in self.sums:  # In batch order.
      total += s
    for s in self.squares:
      total_sq += s
    count = self.count
    mean = total / count if count else None
    std = (float(np.sqrt(max(0.0, total_sq / count - mean * mean)))
           if count else None)
    return {
        'count': count, 'min': self.lo if count else None,
        'max': self.hi if count else None, 'mean': mean, 'std': std,
        'integral': self.integral,
        'class_counts': (None if self.class_counts is None else
                         [int(c) for c in self.class_counts])}


def _add_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  out = np.zeros((max(a.size, b.size),), np.int64)
  out[:a.size] += a
  out[:b.size] += b
  return out


def label_statistics(recorded: Mapping[str, Any]) -> Dict[str, Any]:
  """A split's recorded ``labels`` as the trainer and evaluator use them:
  no labelled step gives ``min`` inf, ``max`` -inf, ``mean`` and ``std``
  NaN (JSON holds None there)."""
  stats = dict(recorded)
  for key, empty in (('min', float('inf')), ('max', float('-inf')),
                     ('mean', float('nan')), ('std', float('nan'))):
    if stats.get(key) is None:
      stats[key] = empty
  return stats


def split_metadata(plan: LanePlan, truncated_timesteps: int, *, split: str,
                   feature_names: Sequence[str], label_dtype: str,
                   key_column: str, order_column: str, label_column: str,
                   files: Sequence[str], input_timesteps: int,
                   nbytes: int, labels: LabelTally) -> dict:
  """A split's ``metadata.json``: its layout, columns and files,
  ``split_statistics`` and the statistics of its labels (``labels``)."""
  config = plan.config
  meta = {
      'format_version': metadata_lib.FORMAT_VERSION,
      'split': split,
      'batch_size': config.batch_size,
      'num_unroll': config.num_unroll,
      'mode': config.mode,
      'label_kind': config.label_kind,
      'feature_names': list(feature_names),
      'num_features': len(feature_names),
      'label_dtype': label_dtype,
      'key_column': key_column,
      'order_column': order_column,
      'label_column': label_column,
      'files': list(files),
      'input_timesteps': int(input_timesteps),
      'bytes': int(nbytes),
  }
  meta.update(split_statistics(plan, truncated_timesteps))
  meta[LABELS_KEY] = labels.result()
  return meta
