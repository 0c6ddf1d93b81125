"""The validation carve laid out in batches of its own (``carve``)."""

import numpy as np
import pytest
import tensorflow as tf

from components.sequence_batcher import layout as sb_layout
from components.stateful import batches
from components.stateful import carve as carve_lib
from tests.components.stateful_trainer import helpers

T = 4


# Many sequences on few lanes: each lane runs several back to back, so
# carve sequences start in the middle of a lane (after others' steps).
CARVE_LENGTHS = [1, 2, 3, 4, 5, 7, 8, 9, 11, 13, 17, 23, 3, 4, 6, 2, 1, 12,
                 16, 5, 9, 10, 4, 7]


def _carve_source(tmp_path, mode, label_kind=sb_layout.PER_SEQUENCE):
  """Sequences whose first feature names them and their step (1000 i +
  t + 1: never 0, so padding shows)."""
  seqs = helpers.random_sequences(CARVE_LENGTHS, 2, seed=5,
                                  per_step_labels=True)
  for i, s in enumerate(seqs):
    s.features[:, 0] = 1000 * i + np.arange(1, s.length + 1)
  root = helpers.write_batches(str(tmp_path / mode), {'train': seqs},
                               batch_size=3, num_unroll=T, mode=mode,
                               label_kind=label_kind)
  return seqs, batches.BatchSource.open(root, 'train')


def _carve_lanes(carve, dense):
  """The sequences of the carve's batches, lane by lane: ``[(lane, first
  batch, features [n, F], labels [n], mask [n], label_weight [n])]``, each
  from its reset to the next (or the lane's end), padding dropped."""
  got = []
  laid = [{k: v.numpy() for k, v in b.items()} for b in carve.batches]
  for lane in range(3):
    stream = {k: np.concatenate([b[k][lane] for b in laid])
              for k in ('features', 'labels', 'mask', 'label_weight')}
    if dense:
      starts = np.concatenate([b['reset'][lane] for b in laid])
    else:  # A reset starts the lane's segment.
      starts = np.zeros(len(laid) * T, np.int64)
      starts[::T] = [b['reset'][lane] for b in laid]
    first = np.flatnonzero(starts)
    assert not stream['mask'][:first[0] if len(first) else None].any(), (
        'steps before the lane\'s first reset')
    for lo, hi in zip(first, list(first[1:]) + [len(starts)]):
      real = stream['mask'][lo:hi] > 0
      n = int(real.sum())
      assert real[:n].all(), 'a gap inside a carve sequence'
      got.append((lane, lo // T, *(stream[k][lo:lo + n] for k in (
          'features', 'labels', 'mask', 'label_weight'))))
  return got


@pytest.mark.parametrize('mode', sb_layout.MODES)
def test_carve_batches_hold_each_carve_sequence_once_in_one_lane(tmp_path,
                                                                 mode):
  """Every carve sequence, and nothing else, in one lane from a reset, its
  steps in order and as written (labels, label weights), in fewer batches
  of the same shape than the split."""
  seqs, source = _carve_source(tmp_path, mode)
  fraction = 0.4
  held = batches.is_validation_key(
      tf.constant([s.key for s in seqs]), fraction).numpy()
  carved = [s for s, h in zip(seqs, held) if h]
  assert 4 <= len(carved) < len(seqs)
  # Some carve sequence starts mid-lane in the split: after other steps.
  starts_mid = False
  for batch in source.dataset(keys=None).as_numpy_iterator():
    for piece in batches.lane_pieces(batch, T):
      if piece.starts and (piece.lo > 0 or batch['batch_index'] > 0):
        starts_mid |= bool(batches.is_validation_key(
            tf.constant([piece.key]), fraction).numpy()[0])
  assert starts_mid
  written = {}  # key -> label_weight as the batcher wrote it.
  for batch in source.dataset(keys=None).as_numpy_iterator():
    for piece in batches.lane_pieces(batch, T):
      written.setdefault(piece.key, []).append(
          batch['label_weight'][piece.lane, piece.lo:piece.hi])

  carve = carve_lib.carve_batches(source, fraction)
  assert carve.num_sequences == len(carved)
  assert carve.source_batches == source.num_batches
  assert 0 < len(carve.batches) < source.num_batches
  for b in carve.batches:
    assert b['features'].shape == (3, T, 2)
    assert b['reset'].shape == ((3, T) if mode == sb_layout.DENSE else (3,))
    assert b['labels'].dtype == tf.int64
  got = _carve_lanes(carve, mode == sb_layout.DENSE)
  by_id = {int(g[2][0, 0]) // 1000: g for g in got}
  assert len(got) == len(by_id) == len(carved)
  for s in carved:
    i = int(s.key[1:])
    _, _, feats, labels, mask, weight = by_id[i]
    np.testing.assert_array_equal(feats, s.features, err_msg=s.key)
    np.testing.assert_array_equal(labels, s.labels, err_msg=s.key)
    assert mask.sum() == s.length
    np.testing.assert_array_equal(weight, np.concatenate(written[s.key]))
  # Lanes are balanced: none ends more than the longest carve sequence
  # after another.
  longest = -(-max(s.length for s in carved) // T)
  assert len(carve.batches) <= -(-sum(-(-s.length // T) for s in carved)
                                 // 3) + longest


def test_carve_batches_of_per_step_labels_keep_every_weight(tmp_path):
  seqs, source = _carve_source(tmp_path, sb_layout.PACKED,
                               sb_layout.PER_STEP)
  carve = carve_lib.carve_batches(source, 0.4)
  total = sum(float(tf.reduce_sum(b['label_weight'])) for b in carve.batches)
  held = batches.is_validation_key(
      tf.constant([s.key for s in seqs]), 0.4).numpy()
  assert total == sum(s.length for s, h in zip(seqs, held) if h)


def test_carve_batches_of_no_carve_are_empty(tmp_path):
  _, source = _carve_source(tmp_path, sb_layout.PACKED)
  carve = carve_lib.carve_batches(source, 0.0)
  assert carve.batches == () and carve.num_sequences == 0
