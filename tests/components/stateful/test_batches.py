"""``batches``: label scoring weights, the validation carve's keys, the
carve's weights out of the loss and ``lanes_to_sequences``."""

import numpy as np
import pytest
import tensorflow as tf

from components.sequence_batcher import layout as sb_layout
from components.stateful import batches
from components.stateful_trainer import settings
from tests.components.sequence_batcher import helpers as sb_helpers
from tests.components.stateful_trainer import helpers

T = 4


def _batch():
  # Lane 0: a 6-step sequence, segment 1 (steps 5..6 real, 2 padded);
  # lane 1: a 3-step sequence, segment 0; lane 2: padding lane.
  return {
      'mask': tf.constant([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]],
                          tf.float32),
      'label_weight': tf.constant([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]],
                                  tf.float32),
      'segment_index': tf.constant([1, 0, -1], tf.int64),
      'sequence_length': tf.constant([6, 3, 0], tf.int64),
  }


def test_label_weights_last_step_is_the_batchers():
  b = _batch()
  np.testing.assert_array_equal(
      batches.label_weights(b, batches.LAST_STEP, T), b['label_weight'])


def test_label_weights_every_step_is_the_mask():
  b = _batch()
  np.testing.assert_array_equal(
      batches.label_weights(b, batches.EVERY_STEP, T), b['mask'])


def test_label_weights_weighted_grows_to_one_at_the_last_step():
  got = batches.label_weights(_batch(), batches.WEIGHTED, T).numpy()
  want = np.array([[(5 / 6) ** 2, 1.0, 0, 0],
                   [(1 / 3) ** 2, (2 / 3) ** 2, 1.0, 0],
                   [0, 0, 0, 0]])
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_label_weights_rejects_unknown_scoring():
  with pytest.raises(batches.BatchError, match='label scoring'):
    batches.label_weights(_batch(), 'middle', T)


def test_validation_carve_is_deterministic_and_disjoint():
  keys = tf.constant([f'seq_{i:04d}' for i in range(2000)])
  first = batches.is_validation_key(keys, 0.2).numpy()
  again = batches.is_validation_key(keys, 0.2).numpy()
  np.testing.assert_array_equal(first, again)
  assert 0.15 < first.mean() < 0.25
  assert not batches.is_validation_key(keys, 0.0).numpy().any()
  # A larger fraction only adds keys (the carve is nested).
  more = batches.is_validation_key(keys, 0.3).numpy()
  assert (more | ~first).all()


def test_dataset_moves_validation_weights_out_of_the_loss(tmp_path):
  splits = {'train': helpers.random_sequences([5, 9, 3, 7, 11, 6, 4, 8], 2,
                                              seed=3, num_classes=2)}
  root = helpers.write_batches(str(tmp_path / 'b'), splits, batch_size=3,
                               num_unroll=T, feature_names=['a', 'b'])
  source = batches.BatchSource.open(root, 'train')
  plain = list(source.dataset(keys=None).as_numpy_iterator())
  carved = list(source.dataset(keys=None, validation_fraction=0.5)
                .as_numpy_iterator())
  in_valid, in_train = set(), set()
  for p, c in zip(plain, carved):
    np.testing.assert_array_equal(p['label_weight'],
                                  c['label_weight'] + c['valid_weight'])
    assert not (c['label_weight'] * c['valid_weight']).any()
    for lane in range(3):
      key = p['key'][lane].decode()
      if c['valid_weight'][lane].any():
        in_valid.add(key)
      if c['label_weight'][lane].any():
        in_train.add(key)
  assert in_valid and in_train and not in_valid & in_train


def _lane_batches():
  """Two lanes, T=2: lane 0 runs a (3 steps) then b (1 step); lane 1 runs
  c (4 steps)."""
  def batch(keys, seg, length, mask):
    return {'key': np.array(keys, object), 'segment_index': np.array(seg),
            'sequence_length': np.array(length), 'mask': np.array(mask, float),
            'labels': np.array(mask) * 7}
  return [
      batch([b'a', b'c'], [0, 0], [3, 4], [[1, 1], [1, 1]]),
      batch([b'a', b'c'], [1, 1], [3, 4], [[1, 0], [1, 1]]),
      batch([b'b', b''], [0, -1], [1, 0], [[1, 0], [0, 0]]),
  ]


def test_lanes_to_sequences_streams_whole_sequences_in_completion_order():
  pairs = [(b, np.arange(4, dtype=np.float32).reshape(2, 2, 1) + 10 * i)
           for i, b in enumerate(_lane_batches())]
  got = list(batches.lanes_to_sequences(pairs, 2, fields=('labels',)))
  assert [r.key for r in got] == ['a', 'c', 'b']
  np.testing.assert_array_equal(got[0].outputs[:, 0], [0, 1, 10])
  np.testing.assert_array_equal(got[1].outputs[:, 0], [2, 3, 12, 13])
  np.testing.assert_array_equal(got[2].outputs[:, 0], [20])
  assert [r.length for r in got] == [3, 4, 1]
  np.testing.assert_array_equal(got[1].arrays['labels'], [7, 7, 7, 7])


def test_lanes_to_sequences_names_a_sequence_that_never_ends():
  pairs = [(b, np.zeros((2, 2, 1), np.float32)) for b in _lane_batches()[:1]]
  with pytest.raises(batches.BatchError, match=r"\['a', 'c'\]"):
    list(batches.lanes_to_sequences(pairs, 2, fields=()))


def test_lanes_to_sequences_rejects_segments_out_of_order():
  first, second, _ = _lane_batches()
  pairs = [(second, np.zeros((2, 2, 1), np.float32)),
           (first, np.zeros((2, 2, 1), np.float32))]
  with pytest.raises(batches.BatchError, match="step 2 of sequence 'a'"):
    list(batches.lanes_to_sequences(pairs, 2, fields=()))


@pytest.mark.parametrize('mode', sb_layout.MODES)
def test_lanes_to_sequences_puts_every_layout_back_together(mode):
  """The batches' own features as outputs: every sequence comes back whole,
  whatever the mode (dense: several sequences in one lane of a batch)."""
  data = sb_helpers.make_data([9, 2, 5, 6, 3, 1, 12, 4], sb_layout.PER_STEP)
  config = sb_layout.LayoutConfig(batch_size=3, num_unroll=4, mode=mode,
                                  label_kind=sb_layout.PER_STEP)
  _, laid = sb_helpers.reference(data, config)
  pairs = [(b, b['features']) for b in laid]
  got = {r.key: r for r in batches.lanes_to_sequences(
      pairs, 4, fields=('labels', 'label_weight'))}
  assert sorted(got) == sorted(s.key for s in data)
  for s in data:
    np.testing.assert_array_equal(got[s.key].outputs, s.features)
    np.testing.assert_array_equal(got[s.key].arrays['labels'], s.labels)
    assert got[s.key].arrays['label_weight'].sum() == s.length
  if mode == sb_layout.DENSE:
    pieces = [p for b in laid for p in batches.lane_pieces(b, 4)]
    assert len(pieces) > len(laid) * 3  # Lanes hold several sequences.
    shuffled = [pairs[1], pairs[0]] + pairs[2:]
    with pytest.raises(batches.BatchError, match='out of order|ends after'):
      list(batches.lanes_to_sequences(shuffled, 4, fields=()))


def test_settings_declare_the_same_label_scorings():
  # settings.py repeats the names and the threshold to stay free of
  # TensorFlow.
  assert settings.LABEL_SCORINGS == batches.LABEL_SCORINGS
  assert settings.WEIGHTED_MIN_SEGMENTS == batches.WEIGHTED_MIN_SEGMENTS
