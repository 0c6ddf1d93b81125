"""The planning stage of the Beam transform: one lane plan per split.

Owns ``PlanLanes`` (every sequence's ``(key, length)`` gathered on one
worker and laid out by ``layout.plan_lanes``) with its ``PlanSummary``, and
``ChooseLayout`` (the train split's lengths -> ``(batch_size, num_unroll)``
by ``layout_rule.choose_layout`` when they are unset, shared by every split).
Only keys and lengths travel here, never features.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import List, Optional, Tuple

import apache_beam as beam
import numpy as np

from components.sequence_batcher import layout

from components.sequence_batcher import layout_rule
from components.sequence_batcher import sequences as seqlib

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PlanSummary:
  """What the shard writers need of the plan (small; a side input)."""
  config: layout.LayoutConfig
  num_batches: int
  batches_per_shard: int
  num_shards: int
  num_features: int
  label_dtype: str


def _label_dtype(all_int: bool) -> str:
  return 'int64' if all_int else 'float32'


def apply_choice(config: layout.LayoutConfig, choice,
                 auto: Tuple[bool, bool]) -> layout.LayoutConfig:
  """``config`` with the unset (``auto``) batch_size / num_unroll taken from
  ``choice = (batch_size, num_unroll)``."""
  if choice is None or not any(auto):
    return config
  return dataclasses.replace(
      config, batch_size=int(choice[0]) if auto[0] else config.batch_size,
      num_unroll=int(choice[1]) if auto[1] else config.num_unroll)


class ChooseLayout(beam.PTransform):
  """Decoded rows ``(key, RowChunk)`` of the train split -> a singleton
  ``(batch_size, num_unroll)`` by ``layout_rule.choose_layout``; only per-key row
  counts travel (capped at ``max_sequence_length`` when truncating)."""

  def __init__(self, config: layout.LayoutConfig):
    super().__init__()
    self._cap = config.max_sequence_length if config.truncate else None
    self._multiple = config.lane_multiple

  def expand(self, chunks):
    cap, multiple = self._cap, self._multiple
    return (chunks
            | 'Rows' >> beam.Map(lambda kc: (kc[0], kc[1].num_rows))
            | 'Length' >> beam.CombinePerKey(sum)
            | 'Capped' >> beam.Map(
                lambda kv: min(kv[1], cap) if cap else kv[1])
            | 'Gather' >> beam.combiners.ToList()
            | 'Choose' >> beam.Map(_choose_logged, multiple))


def _choose_logged(lengths: List[int], multiple: int = 1) -> Tuple[int, int]:
  batch_size, num_unroll = layout_rule.choose_layout(lengths, multiple)
  unrounded, _ = layout_rule.choose_layout(lengths)
  if unrounded != batch_size:
    _LOG.info('layout: batch_size %d rounded up to %d, a multiple of the %d '
              'training replicas', unrounded, batch_size, multiple)
  _LOG.info('layout chosen from %d training sequences (median length %.0f, '
            'longest %d): batch_size %d, num_unroll %d', len(lengths),
            float(np.median(lengths)) if lengths else 0.0,
            max(lengths) if lengths else 0, batch_size, num_unroll)
  return batch_size, num_unroll


def _make_plan(stats: List[Tuple[str, int, bool, int]],
               config: layout.LayoutConfig, feature_names,
               split: str, source: Optional[str] = None
              ) -> Tuple[layout.LanePlan, PlanSummary, int]:
  # Checked first: with no rows the inferred feature names side input is
  # empty too (Beam's EmptySideInput), and has no len().
  if not stats:
    raise seqlib.InputDataError(
        f'{source or f"split {split!r}"}: the input has no rows')
  num_features = len(feature_names)
  t0 = time.time()
  plan = layout.plan_lanes(((k, n) for k, n, _, _ in stats), config,
                           num_features)
  summary = PlanSummary(
      config=config, num_batches=plan.num_batches,
      batches_per_shard=plan.batches_per_shard, num_shards=plan.num_shards,
      num_features=num_features,
      label_dtype=_label_dtype(all(is_int for _, _, is_int, _ in stats)))
  truncated = sum(t for _, _, _, t in stats)
  _LOG.info('split %s: planned %d sequences into %d batches of %dx%d '
            '(%s mode, efficiency %.3f) in %.2f s', split, plan.num_sequences,
            plan.num_batches, config.batch_size, config.num_unroll,
            config.mode, plan.efficiency, time.time() - t0)
  return plan, summary, truncated


class PlanLanes(beam.PTransform):
  """``SequenceArrays`` -> a singleton ``(LanePlan, PlanSummary, truncated)``.

  Only ``(key, length, label is integral, truncated steps)`` tuples travel to
  the single worker that plans.
  """

  def __init__(self, config: layout.LayoutConfig, feature_names, *,
               split: str = 'train', choice=None,
               auto: Tuple[bool, bool] = (False, False),
               source: Optional[str] = None):
    """``source``: names the input in errors (default: the split)."""
    super().__init__()
    self._source = source
    self._config = config
    self._names = feature_names
    self._split = split
    self._choice = choice
    self._auto = auto

  def expand(self, seqs):
    split, auto, source = self._split, self._auto, self._source
    names = self._names
    if isinstance(names, beam.PCollection):
      names = beam.pvalue.AsSingleton(names)
    config = self._config
    gathered = (seqs
                | 'KeyLength' >> beam.Map(
                    lambda s: (s.key, s.length, s.labels.dtype.kind in 'iu',
                               s.truncated))
                | 'Gather' >> beam.combiners.ToList())
    if self._choice is None:
      return gathered | 'Plan' >> beam.Map(
          lambda st, fn: _make_plan(st, config, fn, split, source), names)
    return gathered | 'Plan' >> beam.Map(
        lambda st, fn, ch: _make_plan(st, apply_choice(config, ch, auto), fn,
                                      split, source),
        names, beam.pvalue.AsSingleton(self._choice))

