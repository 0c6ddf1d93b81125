"""Stateful layers and the state protocol: chunked == whole, per-lane reset,
checkpoint/resume, serving state in and out, and rejection of layers that mix
time steps without declaring state."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components.stateful.layers import convolution as sl
from components.stateful.layers import pools
from components.stateful.layers import lru
from components.stateful import model_spec as ms
from components.stateful import model_io
from components.stateful.state import resets
from components.stateful.layers import scans
from components.stateful.state import explicit as explicit_state
from components.stateful.state import protocol as state

B, F = 3, 2


def _conv(stateful, name='conv'):
  return sl.CausalConv1D(4, 3, dilation_rate=2, stateful=stateful,
                         kernel_initializer=sl.CenteredNormal(3),
                         bias_initializer='ones', name=name)


LAYERS = {
    'conv': lambda stateful: [_conv(stateful)],
    'conv_k1': lambda stateful: [sl.CausalConv1D(
        3, 1, stateful=stateful, kernel_initializer=sl.CenteredNormal(1))],
    'lags': lambda stateful: [sl.CausalConv1D(
        4 * F, 4, use_bias=False, kernel_initializer=sl.LagKernel(),
        stateful=stateful)],
    'pool_mean_max_ppv': lambda stateful: [pools.RunningPool(
        ('mean', 'max', 'ppv'), stateful=stateful)],
    'pool_head_mean': lambda stateful: [pools.RunningPool(
        ('head_mean',), head_steps=5, stateful=stateful)],
    'conv_then_pool': lambda stateful: [_conv(stateful), pools.RunningPool(
        ('ppv', 'max'), stateful=stateful, name='pool')],
    'decaying_pool': lambda stateful: [pools.DecayingPool(
        ('mean', 'ppv'), half_lives=(2.0, 9.0), stateful=stateful)],
    'conv_then_decaying_pool': lambda stateful: [
        _conv(stateful), pools.DecayingPool(('ppv',), half_lives=(4.0,),
                                         stateful=stateful,
                                         name='decaying')],
    'lru': lambda stateful: [lru.LinearRecurrence(
        6, seed=1, stateful=stateful)],
    'lru_then_pool': lambda stateful: [lru.LinearRecurrence(
        5, r_min=0.5, max_phase=0.5, seed=2, stateful=stateful),
                                       pools.RunningPool(('mean', 'max'),
                                                      stateful=stateful)],
}


# Recurrent layers go through the same per-step reset tests (``dense``).
RNN_LAYERS = {
    'lstm': lambda stateful: [keras.layers.LSTM(
        5, return_sequences=True, stateful=stateful)],
    'gru': lambda stateful: [keras.layers.GRU(
        4, return_sequences=True, stateful=stateful)],
    'simple_rnn_then_conv': lambda stateful: [
        keras.layers.SimpleRNN(3, return_sequences=True, stateful=stateful),
        _conv(stateful, name='conv_after_rnn')],
    'stacked_cells': lambda stateful: [keras.layers.RNN(
        [keras.layers.LSTMCell(3), keras.layers.GRUCell(2)],
        return_sequences=True, stateful=stateful)],
}


def _model(kind, stateful, batch=None):
  inputs = keras.Input(shape=(None, F), batch_size=batch)
  x = inputs
  for layer in {**LAYERS, **RNN_LAYERS}[kind](stateful):
    x = layer(x)
  return keras.Model(inputs, x)


def _pair(kind):
  """A stateful model (B lanes) and its non-stateful twin, same weights."""
  model = _model(kind, True, B)
  twin = _model(kind, False)
  twin.set_weights(model.get_weights())
  for layer, twin_layer in zip(model.layers, twin.layers):
    if (isinstance(layer, (pools.RunningPool, pools.DecayingPool)) and
        layer.threshold is not None):
      layer.threshold.assign(np.linspace(-0.5, 0.5, layer.threshold.shape[0]))
      twin_layer.threshold.assign(layer.threshold)
  return model, twin


def _chunks(length, rng):
  cuts, at = [], 0
  while at < length:
    step = int(rng.integers(1, 9))
    cuts.append((at, min(length, at + step)))
    at += step
  return cuts


@pytest.mark.parametrize('kind', sorted(LAYERS))
@pytest.mark.parametrize('seed', [0, 1])
def test_chunked_equals_whole(kind, seed):
  rng = np.random.default_rng(seed)
  model, twin = _pair(kind)
  x = rng.normal(size=(B, 40, F)).astype(np.float32) * 3
  whole = twin(x).numpy()
  state.zero_all(model)
  got = np.concatenate([model(x[:, a:b]).numpy()
                        for a, b in _chunks(40, rng)], axis=1)
  np.testing.assert_allclose(got, whole, atol=1e-5)
  # The same through explicit state in and out (the ``step`` signature).
  states = [tf.zeros([B] + s.as_list())
            for s in explicit_state.serving_state_shapes(twin)]
  outs = []
  for a, b in _chunks(40, rng):
    out, states = explicit_state.run_with_states(twin, x[:, a:b], states)
    outs.append(out.numpy())
  np.testing.assert_allclose(np.concatenate(outs, axis=1), whole, atol=1e-5)


@pytest.mark.parametrize('kind', sorted(LAYERS))
def test_reset_lane_equals_fresh_model_and_spares_neighbours(kind):
  rng = np.random.default_rng(5)
  model, twin = _pair(kind)
  first = rng.normal(size=(B, 7, F)).astype(np.float32)
  second = rng.normal(size=(B, 6, F)).astype(np.float32)
  state.zero_all(model)
  model(first)
  state.reset_lanes(model, np.array([0, 1, 0]))
  out = model(second).numpy()
  # Lane 1 restarted: equals a fresh run of ``second`` alone.
  np.testing.assert_allclose(out[1], twin(second[1:2]).numpy()[0], atol=1e-5)
  # Lanes 0 and 2 continued: equal the whole ``first + second``.
  both = twin(np.concatenate([first, second], axis=1)).numpy()[:, 7:]
  np.testing.assert_allclose(out[[0, 2]], both[[0, 2]], atol=1e-5)


def _lane_streams(rng, num_unroll):
  """B lanes of back-to-back sequences (lengths 1..13), as ``dense``
  batches lay them: features [B, n * T, F], reset [B, n * T] (1 on each
  sequence's first step; the lane tails are padding) and, per lane, the
  (start, length) of its sequences."""
  lanes = []
  for _ in range(B):
    spans, at = [], 0
    while at < 3 * num_unroll:
      n = int(rng.integers(1, 14))
      spans.append((at, n))
      at += n
    lanes.append(spans)
  total = max(a + n for spans in lanes for a, n in spans[-1:])
  total = -(-total // num_unroll) * num_unroll
  x = rng.normal(size=(B, total, F)).astype(np.float32) * 2
  reset = np.zeros((B, total), np.int64)
  for lane, spans in enumerate(lanes):
    for a, n in spans:
      reset[lane, a] = 1
    end = spans[-1][0] + spans[-1][1]
    x[lane, end:] = 0.0
  return x, reset, lanes


@pytest.mark.parametrize('kind', sorted(LAYERS) + sorted(RNN_LAYERS))
@pytest.mark.parametrize('num_unroll', [1, 6])
def test_step_resets_equal_each_sequence_alone(kind, num_unroll):
  """Dense batches: several sequences per lane per segment, state reset
  at each one's first step, equal each sequence run alone from zeros."""
  rng = np.random.default_rng(num_unroll)
  model, twin = _pair(kind)
  x, reset, lanes = _lane_streams(rng, num_unroll)
  _check_streams(model, twin, x, reset, lanes, num_unroll, rtol=1e-7)


@pytest.mark.parametrize('kind', ['pool_mean_max_ppv', 'pool_head_mean'])
def test_step_resets_keep_the_digits_of_a_short_sequence(kind):
  """Large values (a level of 1000): a sequence's running sums after a
  reset are summed directly, not as the difference of two chunk sums,
  which would lose its digits to the sequence before it."""
  rng = np.random.default_rng(7)
  model, twin = _pair(kind)
  x, reset, lanes = _lane_streams(rng, 16)
  x = x + 1000.0 * (np.abs(x).sum(axis=-1, keepdims=True) > 0)
  _check_streams(model, twin, x.astype(np.float32), reset, lanes, 16,
                 rtol=2e-7)


def _check_streams(model, twin, x, reset, lanes, num_unroll, rtol):
  """The stateful model over lane streams in T-step chunks with per-step
  resets equals each sequence run alone through the twin."""
  state.zero_all(model)
  outs = []
  for a in range(0, x.shape[1], num_unroll):
    with resets.step_resets(model, reset[:, a:a + num_unroll]):
      outs.append(model(x[:, a:a + num_unroll]).numpy())
  got = np.concatenate(outs, axis=1)
  for lane, spans in enumerate(lanes):
    for a, n in spans:
      alone = twin(x[lane:lane + 1, a:a + n]).numpy()[0]
      np.testing.assert_allclose(got[lane, a:a + n], alone, atol=1e-5,
                                 rtol=rtol,
                                 err_msg=f'lane {lane} sequence at {a}')


def test_narrow_causal_conv_gives_the_same_bits_on_every_path():
  """Chunked, whole and dense (resets inside segments) give bit-identical
  convolutions of the same windows: a running proportion above a
  threshold downstream would count a last-bit difference as a flip."""
  rng = np.random.default_rng(11)
  model, twin = _pair('conv')
  x = (rng.normal(size=(B, 40, F)) * 3).astype(np.float32)
  whole = twin(x).numpy()
  state.zero_all(model)
  chunked = np.concatenate([model(x[:, a:b]).numpy()
                            for a, b in _chunks(40, rng)], axis=1)
  np.testing.assert_array_equal(chunked, whole)
  streams, reset, lanes = _lane_streams(rng, 8)
  state.zero_all(model)
  dense = np.concatenate([_dense_call(model, streams, reset, a, 8)
                          for a in range(0, streams.shape[1], 8)], axis=1)
  for lane, spans in enumerate(lanes):
    for a, n in spans:
      np.testing.assert_array_equal(
          dense[lane, a:a + n], twin(streams[lane:lane + 1, a:a + n])[0])


def _dense_call(model, x, reset, start, num_unroll):
  with resets.step_resets(model, reset[:, start:start + num_unroll]):
    return model(x[:, start:start + num_unroll]).numpy()


@pytest.mark.parametrize('kind', ['conv', 'lstm', 'lru'])
def test_step_resets_inside_tf_function_and_gradients(kind):
  """The resets work traced (as the trainer runs them) and cut the
  gradient: a step before a reset does not influence outputs after it."""
  model, _ = _pair(kind)
  x = tf.constant(np.random.default_rng(0).normal(size=(B, 8, F)),
                  tf.float32)
  reset = np.zeros((B, 8), np.int64)
  reset[:, 0] = 1
  reset[1, 5] = 1

  @tf.function(autograph=False)
  def run(features, flags):
    with tf.GradientTape() as tape:
      tape.watch(features)
      with resets.step_resets(model, flags):
        out = model(features)
      target = tf.reduce_sum(out[1, 5:])
    return out, tape.gradient(target, features)

  state.zero_all(model)
  _, grad = run(x, tf.constant(reset))
  assert not np.abs(grad.numpy()[1, :5]).any()
  assert np.abs(grad.numpy()[1, 5:]).any()
  assert not np.abs(grad.numpy()[[0, 2]]).any()


def test_step_resets_reject_a_layer_that_cannot_reset():

  class OldStyle(pools.RunningPool):

    def step(self, inputs, states):  # pylint: disable=arguments-differ
      return super().step(inputs, states)

  inputs = keras.Input(shape=(None, F), batch_size=B)
  model = keras.Model(inputs, OldStyle(stateful=True, name='old')(inputs))
  with pytest.raises(state.StatefulModelError,
                     match="layer 'old' .* cannot reset inside a segment"):
    with resets.step_resets(model, np.zeros((B, 4))):
      pass


@pytest.mark.parametrize('kind', ['conv', 'conv_then_pool', 'lru'])
def test_snapshot_restore_and_checkpoint_resume(kind, tmp_path):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(B, 24, F)).astype(np.float32)
  model, _ = _pair(kind)
  state.zero_all(model)
  model(x[:, :10])
  saved = state.snapshot(model)
  ckpt = tf.train.Checkpoint(states=state.state_variables(model))
  path = ckpt.save(str(tmp_path / 'ckpt'))
  expected = model(x[:, 10:]).numpy()
  state.restore(model, saved)
  np.testing.assert_allclose(model(x[:, 10:]).numpy(), expected, atol=1e-6)
  # A fresh model restored from the checkpoint continues identically.
  other, _ = _pair(kind)
  tf.train.Checkpoint(states=state.state_variables(other)).restore(path)
  np.testing.assert_allclose(other(x[:, 10:]).numpy(), expected, atol=1e-6)


def test_state_variables_are_not_weights():
  model, twin = _pair('conv_then_pool')
  assert len(model.weights) == len(twin.weights)
  assert len(state.state_variables(model)) == 1 + 3
  assert state.state_variables(twin) == []
  assert [s.as_list() for s in explicit_state.serving_state_shapes(twin)] == [
      [4, F], [1], [4], [4]]


def test_running_pool_fresh_max_ignores_carried_value():
  pool = pools.RunningPool(('max',), stateful=False)
  x = tf.constant([[[-5.0], [-7.0]]])
  out, new = pool.step(x, [tf.zeros([1, 1]), tf.zeros([1, 1])])
  np.testing.assert_allclose(out.numpy()[0, :, 0], [-5.0, -5.0])
  np.testing.assert_allclose(new[1].numpy(), [[-5.0]])


def test_cumulative_max_dynamic_length():
  x = np.random.default_rng(0).normal(size=(2, 37, 3)).astype(np.float32)
  fn = tf.function(scans.cumulative_max, input_signature=[
      tf.TensorSpec([None, None, 3], tf.float32)])
  np.testing.assert_array_equal(fn(x).numpy(), np.maximum.accumulate(x, 1))


@pytest.mark.parametrize('make', [
    lambda: keras.layers.Conv1D(4, 3, padding='causal'),
    lambda: keras.layers.Conv1D(4, 3, padding='same'),
    lambda: keras.layers.AveragePooling1D(2, padding='same'),
    lambda: keras.layers.MaxPooling1D(2, padding='same'),
], ids=['conv_causal', 'conv_same', 'avg_pool', 'max_pool'])
def test_time_mixing_layer_without_state_is_rejected(make):
  inputs = keras.Input(batch_shape=(B, 8, F))
  x = pools.RunningPool(('mean',), stateful=True)(inputs)
  x = make()(x)
  model = keras.Model(inputs, keras.layers.Dense(2)(x))
  with pytest.raises(state.StatefulModelError, match='mixes time steps'):
    state.check_stateful_model(model, batch_size=B, num_unroll=8,
                               num_features=F, output_units=2)


def test_attention_without_state_is_rejected():
  inputs = keras.Input(batch_shape=(B, 8, F))
  x = pools.RunningPool(('mean',), stateful=True)(inputs)
  x = keras.layers.MultiHeadAttention(1, 4)(x, x)
  model = keras.Model(inputs, keras.layers.Dense(2)(x))
  with pytest.raises(state.StatefulModelError, match='MultiHeadAttention'):
    state.check_stateful_model(model, batch_size=B, num_unroll=8,
                               num_features=F, output_units=2)


def test_non_stateful_stateful_layer_in_stateful_model_is_rejected():
  inputs = keras.Input(batch_shape=(B, 8, F))
  x = _conv(True)(inputs)
  x = pools.RunningPool(('mean',), stateful=False, name='loose')(x)
  model = keras.Model(inputs, keras.layers.Dense(2)(x))
  with pytest.raises(state.StatefulModelError, match='loose'):
    state.check_stateful_model(model, batch_size=B, num_unroll=8,
                               num_features=F, output_units=2)


def test_stateful_layer_needs_a_batch_size():
  with pytest.raises(ValueError, match='known batch size'):
    _model('conv', True, batch=None)


def _spec(stateful, **hp):
  return ms.ModelSpec(batch_size=B if stateful else None,
                      num_unroll=8 if stateful else None, stateful=stateful,
                      feature_names=('a', 'b'), task='classification',
                      num_classes=3, hyperparameters=hp)


def test_default_model_streams_exactly():
  module = model_io.resolve_module()
  hp = {'kernels_per_dilation': 4, 'max_dilation': 8, 'lags': 3}
  model = model_io.build_stateful(module, _spec(True, **hp))
  rng = np.random.default_rng(0)
  for w in model.trainable_weights:
    w.assign(rng.normal(size=w.shape) * 0.1)
  model.get_layer('conv_pool').threshold.assign(
      rng.normal(size=model.get_layer('conv_pool').threshold.shape))
  twin = model_io.build_serving(module, _spec(False, **hp),
                                weights_from=model)
  x = rng.normal(size=(B, 40, F)).astype(np.float32)
  whole = twin(x).numpy()
  state.zero_all(model)
  got = np.concatenate([model(x[:, i:i + 8]).numpy()
                        for i in range(0, 40, 8)], axis=1)
  np.testing.assert_allclose(got, whole, atol=1e-5)
  kinds = {type(l).__name__ for l in state.stateful_layers(model)}
  assert kinds == {'CausalConv1D', 'RunningPool'}
  # Dense lanes: several sequences per segment, each equal to its run alone.
  x, reset, lanes = _lane_streams(rng, 8)
  _check_streams(model, twin, 3.0 * x + 5.0, reset, lanes, 8, rtol=1e-6)


def _adapted_outputs(features):
  """The default conv model adapted to ``features`` [N, L, F] (as batches of
  one segment each), then run whole through its serving twin."""
  module = model_io.resolve_module()
  hp = {'kernels_per_dilation': 4, 'max_dilation': 4, 'lags': 2}
  n, length, _ = features.shape
  spec = ms.ModelSpec(batch_size=n, num_unroll=length, stateful=True,
                      feature_names=('a', 'b'), task='classification',
                      num_classes=3, hyperparameters=hp, seed=4)
  model = model_io.build_stateful(module, spec)
  weight = np.zeros((n, length), np.float32)
  weight[:, -1] = 1.0
  batch = {'features': features, 'reset': np.ones(n, np.int64),
           'mask': np.ones((n, length), np.float32), 'label_weight': weight,
           'labels': np.zeros((n, length), np.int64)}
  module.adapt(model, spec, iter([batch]))
  twin = model_io.build_serving(module, spec.serving(), weights_from=model)
  probe = keras.Model(twin.inputs, twin.get_layer('features_all').output)
  return probe(features).numpy()


def test_default_model_is_invariant_to_affine_feature_scaling():
  """CSV rows z-scored by Transform and raw SequenceExamples must give the
  same model: the fitted robust input scale undoes any per-feature affine
  map (a > 0) done upstream."""
  rng = np.random.default_rng(9)
  x = (rng.normal(size=(4, 30, F)) * [0.001, 40.0]).astype(np.float32)
  scaled = (x * np.array([3.0, 0.01]) + np.array([5.0, -2.0])).astype(
      np.float32)
  np.testing.assert_allclose(_adapted_outputs(scaled), _adapted_outputs(x),
                             atol=1e-3, rtol=1e-3)


def test_head_mean_is_the_mean_of_the_first_steps():
  pool = pools.RunningPool(('head_mean',), head_steps=3)
  x = np.arange(1.0, 7.0, dtype=np.float32).reshape(1, 6, 1)
  out = pool(x).numpy()[0, :, 0]
  np.testing.assert_allclose(out, [1.0, 1.5, 2.0, 2.0, 2.0, 2.0])


def test_decaying_pool_equals_a_step_by_step_reference():
  """The scanned output equals the recurrence S_t = a S_{t-1} + v_t,
  W_t = a W_{t-1} + 1 run one step at a time, and it forgets: long after a
  change of level, the short half-life's mean is the new level."""
  rng = np.random.default_rng(2)
  x = np.concatenate([rng.normal(5.0, 0.1, size=(1, 60, 1)),
                      rng.normal(-5.0, 0.1, size=(1, 60, 1))],
                     axis=1).astype(np.float32)
  layer = pools.DecayingPool(('mean', 'ppv'), half_lives=(3.0, 50.0))
  out = layer(x).numpy()[0]  # [T, 4]: (h=3: mean, ppv), (h=50: mean, ppv).
  for j, h in enumerate((3.0, 50.0)):
    a = 0.5 ** (1 / h)
    s = np.zeros(2)
    w = 0.0
    for t in range(x.shape[1]):
      v = np.array([x[0, t, 0], float(x[0, t, 0] > 0)])
      s, w = a * s + v, a * w + 1
      np.testing.assert_allclose(out[t, 2 * j:2 * j + 2], s / w, rtol=1e-4,
                                 atol=1e-5)
  assert out[-1, 0] == pytest.approx(-5.0, abs=0.2)  # h=3: the new level.
  assert out[-1, 1] == pytest.approx(0.0, abs=1e-3)
  assert out[-1, 2] > -4.0  # h=50 still remembers the first level.
  mixed = pools.RunningPool(('mean',))(x).numpy()[0, -1, 0]
  assert mixed == pytest.approx(0.0, abs=0.2)  # Whole history: the mixture.
