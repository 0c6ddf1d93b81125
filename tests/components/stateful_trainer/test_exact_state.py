"""Exact state test: state carried lane by lane, reset exactly where needed.

A linear SimpleRNN with identity weights outputs the running sum of its
inputs since its state was last zeroed. Run through the trainer's step
logic (``predict_step``: ``reset_lanes`` then the stateful forward pass;
in ``dense`` batches the per-step resets of ``resets.step_resets``)
over a layout with many sequences, resets in the middle of the epoch and
sequences spanning many batches, it must reproduce ``numpy.cumsum`` of every
sequence, in every lane and at every step.
"""

import numpy as np
import pytest

from components.stateful.state import protocol as state
from components.stateful import batches as batches_lib
from tests.components.stateful_trainer import helpers

B, T, F = 3, 4, 2

# Many sequences (far more than B lanes: packed lanes run several back to
# back, so resets happen mid-epoch), lengths around and far above T.
LENGTHS = [1, 2, 3, 4, 5, 7, 8, 9, 11, 13, 17, 23, 29, 31, 41, 3, 4, 6, 2, 1,
           12, 16, 5, 9]


def _layout(tmp_path, mode, stacked=False):
  seqs = helpers.random_sequences(LENGTHS, F, seed=3)
  root = helpers.write_batches(str(tmp_path / mode), {'train': seqs},
                               batch_size=B, num_unroll=T, mode=mode)
  source = batches_lib.BatchSource.open(root, 'train')
  model = helpers.cumsum_model(B, T, F, stacked=stacked)
  return seqs, source, model


def _expected(seq, stacked):
  out = np.cumsum(seq.features.astype(np.float64), axis=0)
  return np.cumsum(out, axis=0) if stacked else out


@pytest.mark.parametrize('mode', ['packed', 'bucketed', 'dense'])
@pytest.mark.parametrize('stacked', [False, True])
def test_running_sum_per_sequence(tmp_path, mode, stacked):
  seqs, source, model = _layout(tmp_path, mode, stacked)
  meta = source.meta
  # The layout really exercises the state: several batches per sequence and
  # sequences starting in the middle of the epoch.
  assert meta['num_batches'] >= 10
  starts = []
  for batch in source.dataset(keys=('reset',)).as_numpy_iterator():
    starts.append(batch['reset'])
  starts = np.array(starts)
  assert starts[1:].sum() > 0, 'no reset after the first batch'
  if mode == 'dense':
    # Sequences start inside segments, not only at their first step.
    assert starts[:, :, 1:].sum() > 0
  assert len(state.stateful_rnn_layers(model)) == (2 if stacked else 1)

  got = helpers.outputs_by_sequence(model, source)
  assert sorted(got) == sorted(s.key for s in seqs)
  for seq in seqs:
    np.testing.assert_allclose(got[seq.key], _expected(seq, stacked),
                               rtol=1e-5, atol=1e-4, err_msg=seq.key)


def test_bucketed_groups_in_permuted_order(tmp_path):
  """Whole groups read in a seeded per-epoch order still give exact sums."""
  seqs, source, model = _layout(tmp_path, 'bucketed', stacked=True)
  assert source.num_groups >= 4
  orders = {tuple(batches_lib.group_order(7, e, source.num_groups))
            for e in range(4)}
  assert len(orders) > 1  # The order changes between epochs.
  for epoch in (0, 1):
    got = helpers.outputs_by_sequence(model, source, shuffle_groups=True,
                                      seed=7, epoch=epoch)
    for seq in seqs:
      np.testing.assert_allclose(got[seq.key], _expected(seq, True),
                                 rtol=1e-5, atol=1e-4)


def test_without_carried_state_the_sums_break(tmp_path):
  """The control: the ablation (zero every batch) loses the running sum on
  every sequence longer than one segment, and only there."""
  seqs, source, model = _layout(tmp_path, 'packed')
  got = helpers.outputs_by_sequence(model, source, reset_all=True)
  for seq in seqs:
    expected = _expected(seq, False)
    if seq.length <= T:
      np.testing.assert_allclose(got[seq.key], expected, rtol=1e-5,
                                 atol=1e-4)
    else:
      # From the second segment on, the sum restarts at zero.
      tail = np.cumsum(seq.features[T:2 * T].astype(np.float64), axis=0)
      np.testing.assert_allclose(got[seq.key][T:2 * T], tail, rtol=1e-5,
                                 atol=1e-4)
      assert not np.allclose(got[seq.key], expected, atol=1e-3)


def test_reset_lanes_touches_only_flagged_rows_in_every_layer():
  """LSTM (h, c), GRU and a stacked-cells RNN: flagged rows zero, others
  untouched, in every state variable."""
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  inputs = keras.Input(shape=(T, F), batch_size=4)
  x = keras.layers.LSTM(3, return_sequences=True, stateful=True)(inputs)
  x = keras.layers.GRU(2, return_sequences=True, stateful=True)(x)
  x = keras.layers.RNN(
      keras.layers.StackedRNNCells([keras.layers.SimpleRNNCell(2),
                                    keras.layers.LSTMCell(3)]),
      return_sequences=True, stateful=True)(x)
  model = keras.Model(inputs, x)
  variables = state.state_variables(model)
  # LSTM h, c; GRU h; stacked: SimpleRNN h, LSTM h, c.
  assert [tuple(v.shape) for v in variables] == [(4, 3), (4, 3), (4, 2),
                                                 (4, 2), (4, 3), (4, 3)]
  rng = np.random.default_rng(0)
  before = [rng.normal(size=v.shape).astype(np.float32) for v in variables]
  for v, value in zip(variables, before):
    v.assign(value)
  snap = state.snapshot(model)
  state.reset_lanes(model, np.array([0, 1, 0, 1], np.int64))
  for v, value in zip(variables, before):
    np.testing.assert_array_equal(v.numpy()[[0, 2]], value[[0, 2]])
    np.testing.assert_array_equal(v.numpy()[[1, 3]], 0.0)
  state.zero_all(model)
  assert all(not v.numpy().any() for v in variables)
  state.restore(model, snap)
  for v, value in zip(variables, before):
    np.testing.assert_array_equal(v.numpy(), value)
