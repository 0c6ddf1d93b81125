"""The validation carve laid out in batches of its own.

Which sequences are in the carve is ``batches.is_validation_key`` (a fixed
hash of the key), and ``BatchSource.dataset(validation_fraction=...)`` moves
their weights out of the training loss; this module owns what is read of
the carve apart from the split: ``count_validation_sequences`` (its size)
and ``carve_batches`` (``CarveBatches``: its sequences in compact batches of
the split's B and T, so a scoring pass reads only the carve).

Shapes: B lanes, T steps per segment, F features.
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from components.sequence_batcher import layout as sb_layout
from components.sequence_batcher import reader as sb_reader
from components.stateful import batches as batches_lib
from components.stateful.objective import Batch


def count_validation_sequences(source: batches_lib.BatchSource,
                               fraction: float) -> int:
  """The number of sequences of ``source`` in the validation carve of
  ``fraction`` (``batches.is_validation_key``; one pass over the batches'
  keys)."""
  keys = set()
  for batch in source.dataset(keys=('key',)).as_numpy_iterator():
    keys.update(np.asarray(batch['key']).ravel().tolist())
  keys.discard(b'')
  if not keys or fraction <= 0:
    return 0
  held = batches_lib.is_validation_key(tf.constant(sorted(keys)), fraction)
  return int(tf.reduce_sum(tf.cast(held, tf.int32)))


@dataclasses.dataclass(frozen=True)
class CarveBatches:
  """The validation carve's sequences laid out in batches of their own
  (``carve_batches``): a pass over them scores the carve as a pass over
  every batch of the split, weighted by ``valid_weight``, does. Held in
  memory as tensors (the carve's share of the split, about
  ``validation_fraction`` of its steps).

  Attributes:
    batches: in order, each with ``features`` float32[B, T, F], ``labels``
      [B, T], ``mask`` float32[B, T], ``label_weight`` float32[B, T] (the
      split's as written: every step here is the carve's) and ``reset``
      int64[B] (``dense``: int64[B, T]), as tensors.
    num_sequences: the carve's sequences.
    source_batches: the split's batches, all read to lay them out.
  """
  batches: Tuple[Batch, ...]
  num_sequences: int
  source_batches: int


def carve_batches(source: batches_lib.BatchSource,
                  fraction: float) -> CarveBatches:
  """Lays the validation carve of ``fraction``
  (``batches.is_validation_key``) of ``source`` out into compact batches of
  the same B and T: one pass over the split, once per run, so each scoring
  pass reads only the carve.

  Each carve sequence runs in one lane from a reset at its first step, its
  steps in order and as written (a ``packed``/``bucketed`` sequence as its
  whole segments, padding included, so it starts at a segment boundary; a
  ``dense`` one as its real steps, with a per-step reset where it starts),
  on the lane with the fewest steps so far. A stateful model's outputs on a
  sequence depend only on its own steps from its reset (the state
  protocol), so they are those of the split's batches, and the carve's
  loss and metrics the same up to the order of summation. Lanes past their
  last sequence are padding (mask and weights 0).

  Raises:
    batches.BatchError: a carve sequence's steps are out of order or
      incomplete in the split.
  """
  meta = source.meta
  bsz, unroll = int(meta['batch_size']), int(meta['num_unroll'])
  dense = meta['mode'] == sb_layout.DENSE
  label_dtype = np.int64 if meta['label_dtype'] == 'int64' else np.float32
  ds = sb_reader.read_batches(source.path, source.split).map(
      lambda b: {**{k: b[k] for k in ('features', 'labels', 'mask',
                                      'label_weight', 'key',
                                      'segment_index', 'sequence_length',
                                      'reset')},
                 'valid': batches_lib.is_validation_key(b['key'], fraction)})
  loads = [(0, lane) for lane in range(bsz)]  # A heap: (steps, lane).
  placed: Dict[str, list] = {}  # key -> [lane, offset, length, steps read]
  pieces = []  # (lane, position, features, labels, mask, label_weight)
  read = 0
  for batch in ds.prefetch(2).as_numpy_iterator():
    read += 1
    valid = batch['valid']
    if not valid.any():
      continue
    for piece in batches_lib.lane_pieces(batch, unroll):
      if not (valid[piece.lane, piece.lo] if dense else valid[piece.lane]):
        continue
      key = piece.key
      if piece.starts:
        if key in placed:
          raise batches_lib.BatchError(
              f'carve sequence {key!r} starts twice in split '
              f'{source.split!r}')
        need = piece.length if dense else (
            -(-piece.length // unroll) * unroll)
        load, lane = heapq.heappop(loads)
        heapq.heappush(loads, (load + need, lane))
        placed[key] = [lane, load, piece.length, 0]
      where = placed.get(key)
      if where is None or where[3] != piece.first_step:
        raise batches_lib.BatchError(
            f'step {piece.first_step} of carve sequence {key!r} in split '
            f'{source.split!r} is out of order')
      lane, offset = where[0], where[1]
      # Packed/bucketed: the whole segment (one sequence per lane).
      lo, hi = (piece.lo, piece.hi) if dense else (0, unroll)
      pieces.append((lane, offset + piece.first_step,
                     *(batch[f][piece.lane, lo:hi].copy()
                       for f in ('features', 'labels', 'mask',
                                 'label_weight'))))
      where[3] += piece.hi - piece.lo
  short = sorted(k for k, w in placed.items() if w[3] != w[2])
  if short:
    raise batches_lib.BatchError(f'carve sequences {short[:5]} of split '
                                 f'{source.split!r} never reach their last '
                                 'step')
  num = -(-max(load for load, _ in loads) // unroll)
  steps = num * unroll
  stream = {
      'features': np.zeros((bsz, steps, int(meta['num_features'])),
                           np.float32),
      'labels': np.zeros((bsz, steps), label_dtype),
      'mask': np.zeros((bsz, steps), np.float32),
      'label_weight': np.zeros((bsz, steps), np.float32),
      'reset': np.zeros((bsz, steps), np.int64),
  }
  for lane, pos, *arrays in pieces:
    for f, values in zip(('features', 'labels', 'mask', 'label_weight'),
                         arrays):
      stream[f][lane, pos:pos + len(values)] = values
  for lane, offset, _, _ in placed.values():
    stream['reset'][lane, offset] = 1
  # [B, num * T, ...] -> num batches of [B, T, ...].
  cut = {f: np.swapaxes(v.reshape((bsz, num, unroll) + v.shape[2:]), 0, 1)
         for f, v in stream.items()}
  if not dense:
    cut['reset'] = cut['reset'][:, :, 0]  # Sequences start on a segment.
  laid = tuple({f: tf.constant(cut[f][n]) for f in batches_lib.STEP_KEYS}
               for n in range(num))
  return CarveBatches(batches=laid, num_sequences=len(placed),
                      source_batches=read)
