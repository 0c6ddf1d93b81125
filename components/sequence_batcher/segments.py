"""Cutting sequences into lane segments and assembling batches from them,
in plain Python/NumPy: the second half of the lane layout (``layout.py``
plans which lane and batch each sequence goes to).

``cut_segments`` gives the pieces of one planned sequence, ``assemble_batch``
lays the pieces of one batch into its ``[B, T]`` arrays, and
``layout_in_memory`` does both for a whole split in one process (the
reference the Beam transform must reproduce).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Mapping, Tuple

import numpy as np

from components.sequence_batcher.layout import (DENSE, LanePlan,
                                                LayoutConfig, LayoutError,
                                                PER_SEQUENCE, SequenceArrays,
                                                num_segments, plan_lanes)


@dataclasses.dataclass
class Segment:
  """One lane of one batch: ``num_unroll`` steps of one sequence.

  Attributes:
    batch_index: the batch it belongs to.
    lane: its lane in that batch.
    features: float32[T, F], zero past the sequence end.
    labels: [T], zero past the sequence end.
    mask: float32[T], 1 on real steps.
    label_weight: float32[T].
    reset: 1 on a sequence's first segment.
    key: the sequence key.
    segment_index: k, the position of the segment in its sequence.
    sequence_length: L.
    offset: ``dense`` mode: the step of the batch lane where this piece
      starts (0 otherwise); its arrays then hold only its ``n`` real steps
      (``features`` float32[n, F], ...), not ``T``.
    first_step: ``dense`` mode: the position in the sequence of the piece's
      first step (0 otherwise).
  """
  batch_index: int
  lane: int
  features: np.ndarray
  labels: np.ndarray
  mask: np.ndarray
  label_weight: np.ndarray
  reset: int
  key: str
  segment_index: int
  sequence_length: int
  offset: int = 0
  first_step: int = 0


def _label_weight(seq: SequenceArrays, config: LayoutConfig,
                  steps: int) -> np.ndarray:
  """float32[steps]: the weights of the sequence's first ``steps`` steps
  (``steps`` >= L; zero past L)."""
  weight = np.zeros((steps,), dtype=np.float32)
  if seq.labeled and config.label_kind == PER_SEQUENCE:
    weight[seq.length - 1] = 1.0
  elif seq.labeled:
    weight[:seq.length] = 1.0
  return weight


def _cut_dense(seq: SequenceArrays, lane: int, start: int,
               config: LayoutConfig) -> List[Segment]:
  """``dense`` mode: the pieces of a sequence whose first step is step
  ``start`` of its lane's stream, one per batch it touches."""
  unroll, length = config.num_unroll, seq.length
  weight = _label_weight(seq, config, length)
  features = np.asarray(seq.features, np.float32)
  pieces, pos = [], 0
  while pos < length:
    batch_index, offset = divmod(start + pos, unroll)
    n = min(unroll - offset, length - pos)
    pieces.append(Segment(
        batch_index=batch_index, lane=lane,
        features=features[pos:pos + n], labels=seq.labels[pos:pos + n],
        mask=np.ones((n,), np.float32), label_weight=weight[pos:pos + n],
        reset=int(pos == 0), key=seq.key, segment_index=len(pieces),
        sequence_length=length, offset=offset, first_step=pos))
    pos += n
  return pieces


def cut_segments(seq: SequenceArrays, lane: int, start: int,
                 config: LayoutConfig) -> List[Segment]:
  """Cuts one sequence into the segments placed by the plan (``start``:
  see ``LanePlan.starts``): padded to T, or in ``dense`` mode unpadded
  pieces, one per batch the sequence touches."""
  if config.mode == DENSE:
    return _cut_dense(seq, lane, start, config)
  start_batch = start
  unroll = config.num_unroll
  length = seq.length
  nseg = num_segments(length, unroll)
  padded = nseg * unroll
  nfeat = seq.features.shape[1]
  feats = np.zeros((padded, nfeat), dtype=np.float32)
  feats[:length] = seq.features
  labels = np.zeros((padded,), dtype=seq.labels.dtype)
  labels[:length] = seq.labels
  mask = np.zeros((padded,), dtype=np.float32)
  mask[:length] = 1.0
  weight = _label_weight(seq, config, padded)
  feats = feats.reshape(nseg, unroll, nfeat)
  labels = labels.reshape(nseg, unroll)
  mask = mask.reshape(nseg, unroll)
  weight = weight.reshape(nseg, unroll)
  return [
      Segment(batch_index=start_batch + k, lane=lane, features=feats[k],
              labels=labels[k], mask=mask[k], label_weight=weight[k],
              reset=int(k == 0), key=seq.key, segment_index=k,
              sequence_length=length) for k in range(nseg)
  ]


def empty_batch(batch_index: int, config: LayoutConfig, num_features: int,
                label_dtype: np.dtype) -> Dict[str, np.ndarray]:
  """A batch with every lane padded (mask 0, segment_index -1)."""
  bsz, unroll = config.batch_size, config.num_unroll
  lane = (bsz, unroll) if config.mode == DENSE else (bsz,)
  return {
      'features': np.zeros((bsz, unroll, num_features), np.float32),
      'labels': np.zeros((bsz, unroll), label_dtype),
      'mask': np.zeros((bsz, unroll), np.float32),
      'label_weight': np.zeros((bsz, unroll), np.float32),
      'reset': np.zeros(lane, np.int64),
      'key': np.full(lane, b'', dtype=object),
      'segment_index': np.full(lane, -1, np.int64),
      'sequence_length': np.zeros(lane, np.int64),
      'batch_index': np.array([batch_index], np.int64),
  }


def assemble_batch(batch_index: int, segments: Iterable[Segment],
                   config: LayoutConfig, num_features: int,
                   label_dtype: np.dtype) -> Dict[str, np.ndarray]:
  """Lays the segments of one batch into their lanes; other lanes are padding.

  Returns:
    A dict with ``features`` float32[B, T, F], ``labels`` [B, T], ``mask``
    float32[B, T], ``label_weight`` float32[B, T], ``reset`` int64[B], ``key``
    object[B] (bytes), ``segment_index`` int64[B], ``sequence_length``
    int64[B] and ``batch_index`` int64[1]. In ``dense`` mode the four
    ``LANE_KEYS`` are per step, [B, T]: ``reset`` 1 on a sequence's first
    step, ``key`` the step's sequence (``b''`` on padding),
    ``segment_index`` the step's 0-based position in its sequence (-1 on
    padding; ``segment_index * T + j`` in the other modes) and
    ``sequence_length`` its sequence's length (0 on padding).
  """
  batch = empty_batch(batch_index, config, num_features, label_dtype)
  dense = config.mode == DENSE
  used = np.zeros((config.batch_size, config.num_unroll), bool)
  for seg in segments:
    if seg.batch_index != batch_index:
      raise LayoutError(f'segment of {seg.key!r} for batch {seg.batch_index} '
                        f'given to batch {batch_index}')
    i, lo = seg.lane, seg.offset
    hi = lo + len(seg.mask)
    if hi > config.num_unroll or used[i, lo:hi].any():
      raise LayoutError(f'two segments in lane {i} of batch {batch_index} '
                        f'(second: {seg.key!r})')
    used[i, lo:hi] = True
    batch['features'][i, lo:hi] = seg.features
    batch['labels'][i, lo:hi] = seg.labels
    batch['mask'][i, lo:hi] = seg.mask
    batch['label_weight'][i, lo:hi] = seg.label_weight
    key = seg.key.encode('utf-8')
    if dense:
      batch['reset'][i, lo] = seg.reset
      batch['key'][i, lo:hi] = key
      batch['segment_index'][i, lo:hi] = seg.first_step + np.arange(hi - lo)
      batch['sequence_length'][i, lo:hi] = seg.sequence_length
    else:
      used[i] = True  # One segment per lane.
      batch['reset'][i] = seg.reset
      batch['key'][i] = key
      batch['segment_index'][i] = seg.segment_index
      batch['sequence_length'][i] = seg.sequence_length
  return batch


def layout_in_memory(sequences: List[SequenceArrays],
                     config: LayoutConfig) -> Tuple[LanePlan,
                                                    List[Dict[str, np.ndarray]]]:
  """Single-process reference: the whole layout built in memory.

  Used by the tests and benchmarks as the ground truth the Beam transform must
  reproduce, and handy for small data. Needs every sequence in memory.

  Args:
    sequences: whole sequences with unique keys.
    config: the layout configuration.

  Returns:
    ``(plan, batches)`` with ``batches[b]`` the dict ``assemble_batch`` gives.
  """
  if not sequences:
    raise LayoutError('no sequences to lay out')
  nfeat = sequences[0].features.shape[1]
  label_dtype = sequences[0].labels.dtype
  plan = plan_lanes(((s.key, s.length) for s in sequences), config, nfeat)
  by_key: Mapping[str, SequenceArrays] = {s.key: s for s in sequences}
  per_batch: List[List[Segment]] = [[] for _ in range(plan.num_batches)]
  for key, (lane, start) in plan.placements():
    for seg in cut_segments(by_key[key], lane, start, config):
      per_batch[seg.batch_index].append(seg)
  batches = [
      assemble_batch(b, segs, config, nfeat, label_dtype)
      for b, segs in enumerate(per_batch)
  ]
  return plan, batches
