"""Reading a SequenceBatches split for a stateful model, and back to sequences.

Owns ``BatchSource`` (one split: its metadata and its batches in order, or
with whole ``bucketed`` groups permuted per epoch), the training label
weights (``label_weights``, ``recurrent_scoring``), which keys are in the
validation carve (``is_validation_key``; ``BatchSource.dataset`` moves their
weights out of the loss), the label statistics (as the batcher recorded
them) and checks, and ``lanes_to_sequences`` (over ``lane_pieces``): the
one function that turns per-lane outputs back into per-sequence results.
The carve's sequences laid out in batches of their own: ``carve.py``.

Shapes: B lanes, T steps per segment, F features, K outputs per step.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from components.sequence_batcher import layout as sb_layout
from components.sequence_batcher import reader as sb_reader
from components.sequence_batcher import statistics as sb_statistics
from components.stateful import model_spec as ms

_LOG = logging.getLogger(__name__)


class BatchError(ValueError):
  """A split cannot be read the way it was asked for."""


# Where a per-sequence label is scored in training (evaluation and serving
# always read the last real step):
LAST_STEP = 'last_step'    # the batcher's label_weight: the last real step
EVERY_STEP = 'every_step'  # every real step, weight 1 (target replication)
WEIGHTED = 'weighted'      # every real step, weight (t / L) ** 2
LABEL_SCORINGS = (LAST_STEP, EVERY_STEP, WEIGHTED)

# Validation sequences: those whose key hashes below this share of buckets.
_VALID_BUCKETS = 1000


def label_weights(batch: Mapping[str, tf.Tensor], scoring: str,
                  num_unroll: int) -> tf.Tensor:
  """Training weights float32[B, T] of a ``per_sequence`` batch.

  ``last_step``: ``label_weight`` as written; ``every_step``: ``mask``;
  ``weighted``: ``mask * (t / L) ** 2`` with t the 1-based step of the
  sequence (``segment_index * T + j + 1``; ``dense``: ``segment_index + 1``)
  and L its length.
  """
  if scoring == LAST_STEP:
    return batch['label_weight']
  if scoring == EVERY_STEP:
    return batch['mask']
  if scoring != WEIGHTED:
    raise BatchError(f'label scoring must be one of {LABEL_SCORINGS}, got '
                     f'{scoring!r}')
  seg = tf.cast(batch['segment_index'], tf.float32)
  length = tf.maximum(tf.cast(batch['sequence_length'], tf.float32), 1.0)
  if seg.shape.rank == 2:  # dense: the step's position, per step.
    return batch['mask'] * tf.square((seg + 1.0) / length)
  pos = seg[:, None] * num_unroll + tf.range(1, num_unroll + 1,
                                             dtype=tf.float32)
  return batch['mask'] * tf.square(pos / length[:, None])


# A recurrent model's per-sequence label is scored ``weighted`` when the
# typical training sequence spans at least this many segments, else on its
# last step (``recurrent_scoring``).
WEIGHTED_MIN_SEGMENTS = 4


def recurrent_scoring(spec: ms.ModelSpec) -> Tuple[str, str]:
  """(scoring, why) for a model whose trainable weights shape its carried
  state (an RNN, the LRU): ``weighted`` when the typical training sequence
  (``spec.typical_length``, unknown: assumed long) spans at least
  ``WEIGHTED_MIN_SEGMENTS`` segments of ``spec.num_unroll`` steps, where a
  last-step loss would train the weights that write the state through the
  last segment only; else ``last_step``, the label where it is known
  (scoring a short sequence's early steps, which cannot tell the class yet,
  cost the plain LSTM 0.005 to 0.035 of accuracy on JapaneseVowels and
  ItalyPowerDemand, 2 and 3 segments, with the trainer's defaults, and 0.26
  on ItalyPowerDemand with Keras' optimiser: BENCHMARKS section 6)."""
  typical, unroll = spec.typical_length, spec.num_unroll
  if not typical or not unroll:
    return WEIGHTED, 'sequence length unknown'
  segments = -(-int(typical) // int(unroll))
  if segments >= WEIGHTED_MIN_SEGMENTS:
    return WEIGHTED, (f'the typical sequence ({typical} steps) spans '
                      f'{segments} segments of {unroll}, at least '
                      f'{WEIGHTED_MIN_SEGMENTS}')
  return LAST_STEP, (f'the typical sequence ({typical} steps) spans '
                     f'{segments} segment{"s" if segments > 1 else ""} of '
                     f'{unroll}, fewer than {WEIGHTED_MIN_SEGMENTS}')


def is_validation_key(keys: tf.Tensor, fraction: float) -> tf.Tensor:
  """bool[...]: the keys that belong to the validation carve.

  A fixed hash of the key (FarmHash), so a sequence is in exactly one of the
  carve and the rest, on every run and machine.
  """
  buckets = tf.strings.to_hash_bucket_fast(keys, _VALID_BUCKETS)
  return buckets < int(round(fraction * _VALID_BUCKETS))


STEP_KEYS = ('features', 'labels', 'mask', 'label_weight', 'reset')


def count_mismatch(train: 'BatchSource', read: int) -> str:
  """The error text when a split's files do not hold its batch count."""
  sdir, meta = sb_reader.load_metadata(train.path, train.split)
  files = [f'{sdir}/{name}' for name in meta.get('files', [])]
  return (f'split {train.split!r} of {train.path}: {sdir}/metadata.json says '
          f'{train.num_batches} batches, but its TFRecord files hold '
          f'{read} '
          f'(files: {", ".join(files)}). The files are truncated or do '
          'not belong to this metadata: write the batches again.')


class LabelError(ValueError):
  """The batches' labels do not fit the task."""


def group_order(seed: int, epoch: int, num_groups: int) -> np.ndarray:
  """The seeded permutation of bucketed groups for one epoch."""
  return np.random.default_rng([int(seed), int(epoch)]).permutation(
      int(num_groups))


@dataclasses.dataclass(frozen=True)
class BatchSource:
  """One split of a SequenceBatcher output.

  Attributes:
    path: the SequenceBatches URI.
    split: the split name.
    meta: the split's metadata (``load_metadata``).
  """
  path: str
  split: str
  meta: Mapping[str, Any]

  @classmethod
  def open(cls, path: str, split: str) -> 'BatchSource':
    _, meta = sb_reader.load_metadata(path, split)
    return cls(path=path, split=split, meta=meta)

  @property
  def num_batches(self) -> int:
    return int(self.meta['num_batches'])

  @property
  def num_groups(self) -> int:
    return len(self.meta.get('groups') or [])

  def _training_weights(self, ds: tf.data.Dataset, scoring: str,
                        fraction: float) -> tf.data.Dataset:
    """Applies the label scoring and moves validation keys' weights to
    ``valid_weight`` (their ``label_weight`` becomes 0)."""
    per_sequence = self.meta.get('label_kind') == ms.PER_SEQUENCE
    if scoring != LAST_STEP and not per_sequence:
      scoring = LAST_STEP  # Per-step labels are scored on every step.
    if scoring == LAST_STEP and not fraction:
      return ds
    num_unroll = int(self.meta['num_unroll'])

    def apply(batch):
      batch = dict(batch)
      train_w = label_weights(batch, scoring, num_unroll)
      if fraction > 0:
        valid = tf.cast(is_validation_key(batch['key'], fraction),
                        tf.float32)
        if valid.shape.rank == 1:  # Per lane; dense batches: per step.
          valid = valid[:, None]
        batch['valid_weight'] = batch['label_weight'] * valid
        train_w = train_w * (1.0 - valid)
      batch['label_weight'] = train_w
      return batch

    return ds.map(apply)

  def dataset(self, *, epoch: int = 0, start: int = 0,
              shuffle_groups: bool = False, seed: int = 0,
              keys: Optional[Tuple[str, ...]] = STEP_KEYS,
              label_scoring: str = LAST_STEP,
              validation_fraction: float = 0.0,
              prefetch: bool = True) -> tf.data.Dataset:
    """Batches of one epoch, in order, from batch ``start`` on.

    With ``shuffle_groups`` (bucketed mode only) whole groups come in the
    order ``group_order(seed, epoch, num_groups)``. ``prefetch``: two
    batches read ahead.
    """
    order = None
    if shuffle_groups:
      if self.meta['mode'] != sb_layout.BUCKETED:
        raise BatchError(
            'shuffle_groups needs bucketed batches (whole groups start and '
            f'end together); split {self.split!r} is {self.meta["mode"]!r}')
      order = group_order(seed, epoch, self.num_groups).tolist()
    ds = sb_reader.read_batches(self.path, self.split, group_order=order)
    ds = self._training_weights(ds, label_scoring, validation_fraction)
    if keys is not None:
      if validation_fraction > 0:
        keys = tuple(keys) + ('valid_weight',)
      ds = ds.map(lambda b: {k: b[k] for k in keys})
    if start:
      ds = ds.skip(start)
    return ds.prefetch(2) if prefetch else ds


def label_statistics(source: BatchSource) -> Dict[str, Any]:
  """Statistics of the labelled steps (``label_weight > 0``) of a split.

  The SequenceBatcher tallies them as it writes the batches and records them
  in the split's ``metadata.json`` (``labels``: ``statistics.LabelTally``);
  they are read from there. Batches written before it recorded them (no
  ``labels`` in the metadata) are scanned once (``scan_labels``).

  Returns:
    ``count``, ``min``, ``max``, ``mean``, ``std``, ``integral`` (all
    labelled values are whole numbers) and ``class_counts`` (labelled steps
    per label value, for integer labels in [0, 65536); else None).
  """
  recorded = source.meta.get(sb_statistics.LABELS_KEY)
  if recorded is not None:
    return sb_statistics.label_statistics(recorded)
  _LOG.info('split %r of %s: no label statistics recorded (batches of an '
            'older SequenceBatcher): scanning its labels', source.split,
            source.path)
  return scan_labels(source)


def scan_labels(source: BatchSource) -> Dict[str, Any]:
  """``label_statistics`` by one pass over the split's batches, tallied as
  the batcher tallies them when it writes them."""
  tally = sb_statistics.LabelTally()
  ds = source.dataset(keys=('labels', 'label_weight'))
  for batch in ds.as_numpy_iterator():
    tally.add_batch(batch['labels'], batch['label_weight'])
  return sb_statistics.label_statistics(tally.result())


def check_labels(spec: ms.ModelSpec, label_dtype: str,
                 stats: Mapping[str, Any]) -> None:
  """Raises ``LabelError`` when the labels do not fit ``spec``'s task."""
  if stats['count'] == 0:
    raise LabelError('the split has no labelled step (label_weight is 0 '
                     'everywhere)')
  if spec.task == ms.CLASSIFICATION:
    if label_dtype != 'int64':
      raise LabelError(
          f'classification needs integer class labels; the batches have '
          f'{label_dtype} labels (min {stats["min"]}, max {stats["max"]}). '
          "Use task='regression' or write integer labels.")
    if stats['min'] < 0 or stats['max'] >= spec.num_classes:
      raise LabelError(
          f'class labels must be in [0, {spec.num_classes}); the batches have '
          f'labels in [{stats["min"]:g}, {stats["max"]:g}]')
  else:
    if spec.output_size != 1:
      raise LabelError(
          f'regression with output_size={spec.output_size} needs vector '
          'labels, but the batches carry one scalar label per step: use '
          'output_size=1')
    if not (np.isfinite(stats['min']) and np.isfinite(stats['max'])):
      raise LabelError('regression labels contain NaN or infinity')


def infer_num_classes(stats: Mapping[str, Any]) -> int:
  """``max(label) + 1`` (at least 2) of integer labels."""
  return max(2, int(stats['max']) + 1)


@dataclasses.dataclass
class SequenceResult:
  """One sequence put back together from its lane.

  Attributes:
    key: the sequence key.
    outputs: float32[L, K], the model's outputs on the sequence's real steps.
    arrays: the requested batch fields on those steps, e.g. ``labels`` [L],
      ``label_weight`` [L], ``features`` [L, F].
  """
  key: str
  outputs: np.ndarray
  arrays: Dict[str, np.ndarray]

  @property
  def length(self) -> int:
    return int(self.outputs.shape[0])


def _text(key) -> str:
  return key.decode('utf-8') if isinstance(key, bytes) else str(key)


@dataclasses.dataclass(frozen=True)
class Piece:
  """The real steps ``[lo, hi)`` of one lane of one batch that belong to one
  sequence (a packed/bucketed segment, or a run of a ``dense`` lane).

  Attributes:
    lane: the lane.
    lo, hi: the steps of the batch it covers.
    key: the sequence key.
    length: L, the sequence's length.
    first_step: the position in the sequence of step ``lo``.
  """
  lane: int
  lo: int
  hi: int
  key: str
  length: int
  first_step: int

  @property
  def starts(self) -> bool:
    """The sequence starts here (its state was reset at step ``lo``)."""
    return self.first_step == 0

  @property
  def ends(self) -> bool:
    """The sequence's last step is in this piece."""
    return self.first_step + self.hi - self.lo >= self.length


def lane_pieces(batch: Mapping[str, np.ndarray],
                num_unroll: int) -> Iterator[Piece]:
  """The pieces of one batch (numpy ``key``, ``segment_index``,
  ``sequence_length``; ``reset`` for ``dense``), lane by lane, in step
  order. Padding is in no piece."""
  seg = np.asarray(batch['segment_index'])
  if seg.ndim == 1:
    for lane in np.flatnonzero(seg >= 0):
      length = int(batch['sequence_length'][lane])
      first = int(seg[lane]) * num_unroll
      yield Piece(lane=int(lane), lo=0, hi=min(num_unroll, length - first),
                  key=_text(batch['key'][lane]), length=length,
                  first_step=first)
    return
  keys, reset = batch['key'], batch['reset']
  for lane in np.flatnonzero((seg >= 0).any(axis=1)):
    steps = np.flatnonzero(seg[lane] >= 0)
    # A new piece where a sequence starts, its key changes or after a gap.
    cuts = [int(j) for i, j in enumerate(steps)
            if i == 0 or reset[lane, j] or steps[i - 1] != j - 1 or
            keys[lane, j] != keys[lane, j - 1]]
    for lo, hi in zip(cuts, cuts[1:] + [int(steps[-1]) + 1]):
      yield Piece(lane=int(lane), lo=lo, hi=hi, key=_text(keys[lane, lo]),
                  length=int(batch['sequence_length'][lane, lo]),
                  first_step=int(seg[lane, lo]))


def lanes_to_sequences(
    pairs: Iterable[Tuple[Mapping[str, np.ndarray], np.ndarray]],
    num_unroll: int, *, fields: Tuple[str, ...] = ('labels', 'label_weight')
) -> Iterator[SequenceResult]:
  """Turns per-lane outputs back into per-sequence results, streaming.

  Args:
    pairs: ``(batch, outputs float32[B, T, K])`` in lane order, e.g. from
      ``steps.predict_batches``; a batch holds numpy ``key``,
      ``segment_index``, ``sequence_length`` (and ``reset`` for ``dense``
      batches) and ``fields``.
    num_unroll: T.
    fields: per-step batch fields to return with each sequence.

  Yields:
    A ``SequenceResult`` as soon as a sequence's last step is read; only
    the sequences still running in some lane are held in memory.

  Raises:
    BatchError: a piece out of order, a lane that switches sequence
      mid-way, or a sequence whose last step never comes (naming it).
  """
  running: Dict[int, Dict[str, Any]] = {}
  for batch, outputs in pairs:
    for piece in lane_pieces(batch, num_unroll):
      lane, key = piece.lane, piece.key
      part = running.get(lane)
      if piece.starts:
        if part is not None:
          raise BatchError(f'sequence {part["key"]!r} in lane {lane} ends '
                           f'after step {part["next"] - 1}, before its last '
                           f'step; {key!r} starts there')
        part = running[lane] = {'key': key, 'next': 0, 'outputs': [],
                                **{f: [] for f in fields}}
      if part is None or part['key'] != key or (
          part['next'] != piece.first_step):
        raise BatchError(f'step {piece.first_step} of sequence {key!r} in '
                         f'lane {lane} is out of order')
      sl = slice(piece.lo, piece.hi)
      part['outputs'].append(outputs[lane, sl])
      for f in fields:
        part[f].append(np.asarray(batch[f][lane])[sl])
      part['next'] += piece.hi - piece.lo
      if piece.ends:
        del running[lane]
        out = np.concatenate(part['outputs'])
        if out.shape[0] != piece.length:
          raise BatchError(f'sequence {key!r} has {out.shape[0]} real steps '
                           f'in its segments; its length is {piece.length}')
        yield SequenceResult(key=key, outputs=out, arrays={
            f: np.concatenate(part[f]) for f in fields})
  if running:
    keys = sorted(p['key'] for p in running.values())
    raise BatchError(f'sequences {keys[:5]} never reach their last segment '
                     '(the batches end first)')
