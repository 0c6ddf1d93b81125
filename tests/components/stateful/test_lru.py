"""The linear recurrent unit (``lru.LinearRecurrence``): the scan equals a
step-by-step loop, chunked equals whole at any chunking and lane count,
both reset kinds restart exactly, the eigenvalues stay inside the unit circle, the state checkpoints exactly,
and the default module's ``model='lru'`` streams and exports.

The protocol tests every stateful layer goes through (chunked == whole,
per-lane and per-step resets, gradients cut at a reset, snapshot and
checkpoint resume) run it from ``test_layers.LAYERS`` (kinds ``lru`` and
``lru_then_pool``)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components.stateful.models import default_model as dm
from components.stateful.layers import lru
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful.state import explicit as explicit_state
from components.stateful.state import protocol as state
from components.stateful_trainer import export
from tests.components.stateful import test_layers as tl

H = tl.F  # The layer's width: the test models' feature count.


def _layer(state_size=8, **kwargs):
  layer = lru.LinearRecurrence(state_size, seed=4, **kwargs)
  layer.build(tf.TensorShape([None, None, H]))
  return layer


def _weights(layer):
  return {v.name.split('/')[-1].split(':')[0]: v.numpy().astype(np.float64)
          for v in layer.weights}


def _reference(layer, x, h0=None, resets=None):
  """The recurrence cell by cell in float64 complex numbers, from the
  layer's float32 eigenvalues (``eigenvalues`` is checked against the
  weights' definition on its own: float32 rounding of a phase near 2 pi,
  compounded over 100 steps, is itself about 1e-5):
  ``(outputs [N, T, H], final state [N, S])``."""
  w = _weights(layer)
  re, im, gamma = (v.numpy().astype(np.float64) for v in layer.eigenvalues())
  lam = re + 1j * im
  b = w['B_re'] + 1j * w['B_im']
  c = w['C_re'] + 1j * w['C_im']
  n, length, _ = x.shape
  h = np.zeros((n, layer.state_size), complex) if h0 is None else h0
  out = np.zeros(x.shape)
  for t in range(length):
    if resets is not None:
      h = np.where(resets[:, t:t + 1] > 0, 0.0, h)
    h = lam * h + gamma * (x[:, t] @ b)
    out[:, t] = (h @ c).real + w['D'] * x[:, t]
  return out, h


def _complex(states):
  return states[0].numpy() + 1j * states[1].numpy()


@pytest.mark.parametrize('length', [1, 2, 3, 4, 5, 8, 9, 31, 64, 100])
def test_scan_equals_a_step_by_step_loop(length):
  rng = np.random.default_rng(length)
  layer = _layer()
  x = rng.normal(size=(3, length, H)).astype(np.float32)
  h0 = [tf.constant(rng.normal(size=(3, 8)), tf.float32) for _ in range(2)]
  out, new = layer.step(x, h0)
  want, h = _reference(layer, x, _complex(h0))
  np.testing.assert_allclose(out.numpy(), want, atol=1e-5)
  np.testing.assert_allclose(_complex(new), h, atol=1e-5)
  # With resets inside the chunk.
  resets = (rng.uniform(size=(3, length)) < 0.2).astype(np.float32)
  out, new = layer.step(x, h0, resets)
  want, h = _reference(layer, x, _complex(h0), resets)
  np.testing.assert_allclose(out.numpy(), want, atol=1e-5)
  np.testing.assert_allclose(_complex(new), h, atol=1e-5)


@pytest.mark.parametrize('length', [1, 2, 5, 16, 100])
@pytest.mark.parametrize('known', [True, False])
def test_scan_gradient_equals_the_derivative_of_the_doubling_passes(
    length, known):
  """``linear_scan``'s own gradient (the adjoint scan) = TensorFlow's
  derivative of the forward passes, at every input, with zeros in ``a``
  (resets) and a loss that reads every output; shapes known (training) or
  not (the serving twin)."""
  rng = np.random.default_rng(length)
  shape = (3, length, 4)
  a_re, a_im = (rng.uniform(-0.7, 0.7, size=shape) for _ in range(2))
  cut = rng.uniform(size=shape[:2]) < 0.2
  a_re[cut], a_im[cut] = 0.0, 0.0
  args = [tf.constant(v, tf.float32) for v in
          (a_re, a_im, rng.normal(size=shape), rng.normal(size=shape))]
  w_re, w_im = (tf.constant(rng.normal(size=shape), tf.float32)
                for _ in range(2))
  spec = [tf.TensorSpec(shape if known else [None, None, 4], tf.float32)] * 4

  def grads_of(scan):
    @tf.function(input_signature=spec, autograph=False)
    def fn(*xs):
      with tf.GradientTape() as tape:
        tape.watch(xs)
        h_re, h_im = scan(*xs)
        loss = tf.reduce_sum(h_re * w_re + tf.sin(h_im) * w_im)
      return tape.gradient(loss, xs)
    # At T = 1 the passes never read a: no gradient there, i.e. zero.
    return [np.zeros(shape) if g is None else g.numpy() for g in fn(*args)]

  got = grads_of(lru.linear_scan)
  want = grads_of(lru._doubling)  # pylint: disable=protected-access
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('length', [2, 5, 16, 100])
def test_scan_gradient_stops_at_a_reset(length):
  """A zero ``a`` at step r of lane 0 (a reset): a loss on that lane's
  steps from r on has no gradient at any input before r, in either part."""
  rng = np.random.default_rng(length)
  shape = (2, length, 3)
  a_re, a_im = (rng.uniform(-0.7, 0.7, size=shape) for _ in range(2))
  reset = length // 2
  a_re[0, reset], a_im[0, reset] = 0.0, 0.0
  args = [tf.constant(v, tf.float32) for v in
          (a_re, a_im, rng.normal(size=shape), rng.normal(size=shape))]

  @tf.function(autograph=False)
  def late(*xs):
    with tf.GradientTape() as tape:
      tape.watch(xs)
      h_re, h_im = lru.linear_scan(*xs)
      loss = tf.reduce_sum(h_re[0, reset:] + h_im[0, reset:])
    return tape.gradient(loss, xs)

  got = [g.numpy() for g in late(*args)]
  for g in got:
    assert not np.abs(g[0, :reset]).any()
  # The inputs from the reset on do get a gradient.
  assert np.abs(got[2][0, reset:]).all()


def _rates(rng, size):
  """A decay rate and phase per channel: long and short memories."""
  decay = np.exp(rng.uniform(np.log(1e-4), np.log(0.5), size=size))
  return (tf.constant(decay, tf.float32),
          tf.constant(rng.uniform(0.0, 2 * np.pi, size=size), tf.float32))


# From MIN_BLOCKS * BLOCK = 32 steps on, a known length is scanned in blocks
# (33: a partial last block; 257 and 1000: the blocks' carries in blocks).
@pytest.mark.parametrize('length', [1, 2, 3, 7, 31, 32, 33, 100, 257, 1000])
@pytest.mark.parametrize('known', [True, False])
def test_invariant_scan_equals_a_loop_and_the_general_scan(length, known):
  """``invariant_scan`` (one lambda per channel) = the recurrence step by
  step in float64 complex numbers, and = ``linear_scan`` given that lambda
  at every step; shapes known (training) or not (the serving twin)."""
  rng = np.random.default_rng(length)
  decay, phase = _rates(rng, 5)
  b = rng.normal(size=(3, length, 5)) + 1j * rng.normal(size=(3, length, 5))
  spec = tf.TensorSpec((3, length, 5) if known else [None, None, 5],
                       tf.float32)
  scan = tf.function(lambda b_re, b_im: lru.invariant_scan(
      decay, phase, b_re, b_im), input_signature=[spec, spec],
                     autograph=False)
  h_re, h_im = scan(tf.constant(b.real, tf.float32),
                    tf.constant(b.imag, tf.float32))
  lam = np.exp(-decay.numpy().astype(np.float64) + 1j * phase.numpy())
  h, want = np.zeros((3, 5), complex), []
  for t in range(length):
    h = lam * h + b[:, t]
    want.append(h)
  want = np.stack(want, axis=1)
  assert h_re.shape == want.shape
  np.testing.assert_allclose(h_re.numpy() + 1j * h_im.numpy(), want,
                             atol=max(2e-5, 1e-6 * np.abs(want).max()))
  a = np.broadcast_to(lam, b.shape)
  g_re, g_im = lru.linear_scan(
      *(tf.constant(v, tf.float32) for v in (a.real, a.imag, b.real,
                                              b.imag)))
  # linear_scan multiplies float32 lambdas together (about 3e-6 of the
  # state's scale at T = 100), invariant_scan rounds each power once.
  scale = 1e-5 * max(1.0, float(np.abs(want).max()))
  np.testing.assert_allclose(h_re.numpy(), g_re.numpy(), atol=scale)
  np.testing.assert_allclose(h_im.numpy(), g_im.numpy(), atol=scale)


@pytest.mark.parametrize('length', [1, 2, 5, 16, 32, 100, 257])
def test_invariant_scan_gradient_equals_the_derivative_of_its_passes(length):
  """``invariant_scan``'s own gradient (the adjoint scan with
  conj(lambda), and its sum for lambda taken to the decay and phase) =
  TensorFlow's derivative of the forward passes, at every input."""
  rng = np.random.default_rng(length)
  shape = (3, length, 4)
  decay, phase = _rates(rng, 4)
  b_re, b_im, w_re, w_im = (tf.constant(rng.normal(size=shape), tf.float32)
                            for _ in range(4))

  def grads_of(scan):
    args = [decay, phase, b_re, b_im]
    with tf.GradientTape() as tape:
      tape.watch(args)
      h_re, h_im = scan(*args)
      loss = tf.reduce_sum(h_re * w_re + tf.sin(h_im) * w_im)
    # At T = 1 the passes never read lambda: no gradient there, i.e. zero.
    return [np.zeros(a.shape) if g is None else g.numpy()
            for a, g in zip(args, tape.gradient(loss, args))]

  got = grads_of(lru.invariant_scan)
  want = grads_of(lru._invariant_passes)  # pylint: disable=protected-access
  for g, w in zip(got, want):
    scale = max(1.0, float(np.abs(w).max()))
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale)
  assert np.abs(got[2]).all()  # Every b_t reaches the loss.


def test_eigenvalues_follow_the_parameterisation():
  layer = _layer(64)
  w = _weights(layer)
  want = np.exp(-np.exp(w['nu_log']) + 1j * np.exp(w['theta_log']))
  re, im, gamma = (v.numpy() for v in layer.eigenvalues())
  np.testing.assert_allclose(re + 1j * im, want, atol=1e-6)
  np.testing.assert_allclose(gamma, np.sqrt(1 - np.abs(want) ** 2),
                             rtol=1e-5)


def test_scan_of_unknown_length_in_a_graph():
  """The serving twin's shapes: lanes and length unknown when traced."""
  rng = np.random.default_rng(0)
  scan = tf.function(lru.linear_scan, input_signature=[
      tf.TensorSpec([None, None, 4], tf.float32)] * 4)
  a = rng.uniform(-0.7, 0.7, size=(2, 2, 23, 4)).astype(np.float32)
  b = rng.normal(size=(2, 2, 23, 4)).astype(np.float32)
  h_re, h_im = scan(a[0], a[1], b[0], b[1])
  aa = a[0] + 1j * a[1]
  bb = b[0] + 1j * b[1]
  h, want = np.zeros((2, 4), complex), []
  for t in range(23):
    h = aa[:, t] * h + bb[:, t]
    want.append(h)
  want = np.stack(want, axis=1)
  np.testing.assert_allclose(h_re.numpy(), want.real, atol=1e-5)
  np.testing.assert_allclose(h_im.numpy(), want.imag, atol=1e-5)


@pytest.mark.parametrize('lanes', [1, 4, 9])
@pytest.mark.parametrize('seed', [0, 1])
def test_chunked_equals_whole_at_random_chunks_and_lane_counts(lanes, seed):
  rng = np.random.default_rng(10 * lanes + seed)
  model = tl._model('lru', True, lanes)
  twin = tl._model('lru', False)
  twin.set_weights(model.get_weights())
  x = (rng.normal(size=(lanes, 150, H)) * 3).astype(np.float32)
  whole = twin(x).numpy()
  cuts = np.sort(rng.choice(np.arange(1, 150), size=int(rng.integers(3, 12)),
                            replace=False))
  spans = list(zip([0, *cuts], [*cuts, 150]))
  state.zero_all(model)
  got = np.concatenate([model(x[:, a:b]).numpy() for a, b in spans], axis=1)
  np.testing.assert_allclose(got, whole, atol=1e-5)
  states = [tf.zeros([lanes] + s.as_list())
            for s in explicit_state.serving_state_shapes(twin)]
  outs = []
  for a, b in spans:
    out, states = explicit_state.run_with_states(twin, x[:, a:b], states)
    outs.append(out.numpy())
  np.testing.assert_allclose(np.concatenate(outs, axis=1), whole, atol=1e-5)


@pytest.mark.parametrize('lanes', [2, 5])
def test_lane_reset_mid_stream_equals_a_fresh_run(lanes):
  rng = np.random.default_rng(lanes)
  model = tl._model('lru', True, lanes)
  twin = tl._model('lru', False)
  twin.set_weights(model.get_weights())
  x = rng.normal(size=(lanes, 60, H)).astype(np.float32)
  state.zero_all(model)
  model(x[:, :25])
  before = [v.numpy() for v in state.state_variables(model)]
  flags = np.zeros(lanes, np.int64)
  flags[-1] = 1
  state.reset_lanes(model, flags)
  for var, old in zip(state.state_variables(model), before):
    assert not var.numpy()[-1].any()
    np.testing.assert_array_equal(var.numpy()[:-1], old[:-1])
  out = np.concatenate([model(x[:, 25:40]).numpy(),
                        model(x[:, 40:]).numpy()], axis=1)
  np.testing.assert_allclose(out[-1], twin(x[-1:, 25:]).numpy()[0],
                             atol=1e-5)
  np.testing.assert_allclose(out[:-1], twin(x[:-1]).numpy()[:, 25:],
                             atol=1e-5)


def test_step_reset_inside_a_chunk_equals_a_fresh_run():
  """From a non-zero carried state: a reset at step k gives, from k on,
  the outputs and final state of a fresh run of steps k.. alone."""
  rng = np.random.default_rng(3)
  layer = _layer()
  x = rng.normal(size=(2, 30, H)).astype(np.float32)
  h0 = [tf.constant(rng.normal(size=(2, 8)) * 5, tf.float32)
        for _ in range(2)]
  for k in (0, 1, 7, 16, 29):
    resets = np.zeros((2, 30), np.float32)
    resets[:, k] = 1.0
    out, new = layer.step(x, h0, resets)
    fresh, fresh_state = layer.step(x[:, k:], layer.zero_states(2))
    np.testing.assert_allclose(out.numpy()[:, k:], fresh.numpy(), atol=1e-5)
    for got, want in zip(new, fresh_state):
      np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    # Before the reset: the carried state's continuation (the run without
    # resets takes invariant_scan, this one linear_scan: equal to rounding).
    cont, _ = layer.step(x, h0)
    np.testing.assert_allclose(out.numpy()[:, :k], cont.numpy()[:, :k],
                               atol=1e-5)


def test_initial_eigenvalues_lie_on_the_ring():
  layer = _layer(512, r_min=0.4, r_max=0.8, max_phase=0.3)
  re, im, gamma = (v.numpy().astype(np.float64) for v in layer.eigenvalues())
  modulus, phase = np.hypot(re, im), np.arctan2(im, re)
  assert modulus.min() >= 0.4 - 1e-6 and modulus.max() <= 0.8 + 1e-6
  # Uniform in area: |lambda|^2 is uniform on [0.16, 0.64].
  assert abs(np.mean(modulus ** 2) - 0.4) < 0.03
  assert phase.min() > 0.0 and phase.max() <= 0.3 + 1e-6
  np.testing.assert_allclose(gamma, np.sqrt(1 - modulus ** 2), atol=1e-5)


def test_eigenvalues_stay_inside_the_unit_circle_whatever_the_weights():
  layer = _layer(12)
  layer.nu_log.assign([-1e30, -1e4, -200.0, -40.0, -17.0, -14.0, -5.0, 0.0,
                       5.0, 100.0, 1e4, 1e30])
  layer.theta_log.assign([1e30, -1e30, 1e4, 200.0, 88.0, 10.0, 0.0, -5.0,
                          -100.0, 3.0, -1e4, 50.0])
  re, im, gamma = (v.numpy() for v in layer.eigenvalues())
  assert np.isfinite(re).all() and np.isfinite(im).all()
  assert (re.astype(np.float64) ** 2 + im.astype(np.float64) ** 2 < 1).all()
  assert ((gamma > 0) & (gamma <= 1)).all()
  # A long constant input keeps the state finite and bounded.
  x = np.ones((1, 4000, H), np.float32)
  out, new = layer.step(x, layer.zero_states(1))
  assert np.isfinite(out.numpy()).all()
  assert np.isfinite(new[0].numpy()).all() and np.isfinite(
      new[1].numpy()).all()
  # Random weights of any scale, and one gradient step with a huge rate.
  rng = np.random.default_rng(0)
  for w in layer.trainable_weights:
    w.assign(rng.normal(size=w.shape) * 10.0 ** rng.uniform(-3, 3, w.shape))
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer.step(x[:, :50], layer.zero_states(1))[0])
  for w, g in zip(layer.trainable_weights,
                  tape.gradient(loss, layer.trainable_weights)):
    w.assign_add(-1e6 * tf.clip_by_norm(g, 1.0))
  re, im, _ = (v.numpy().astype(np.float64) for v in layer.eigenvalues())
  assert (re ** 2 + im ** 2 < 1).all()


def test_every_weight_gets_a_finite_gradient_when_traced():
  model, _ = tl._pair('lru')
  x = tf.constant(np.random.default_rng(8).normal(size=(tl.B, 16, H)),
                  tf.float32)

  @tf.function(autograph=False)
  def grads(features):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.square(model(features)))
    return tape.gradient(loss, model.trainable_weights)

  state.zero_all(model)
  got = grads(x)
  assert len(got) == 7
  for weight, grad in zip(model.trainable_weights, got):
    assert grad is not None, weight.name
    assert np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).any(), (
        weight.name)


def test_state_checkpoint_and_restore_are_exact(tmp_path):
  rng = np.random.default_rng(6)
  x = rng.normal(size=(tl.B, 50, H)).astype(np.float32)
  model, _ = tl._pair('lru')
  state.zero_all(model)
  model(x[:, :23])
  saved = [v.numpy() for v in state.state_variables(model)]
  assert all(np.abs(s).sum() > 0 for s in saved)
  path = tf.train.Checkpoint(states=state.state_variables(model)).save(
      str(tmp_path / 'state'))
  model.save_weights(str(tmp_path / 'weights'))
  expected = model(x[:, 23:]).numpy()
  # A model rebuilt from its config, with the saved weights and state.
  other = keras.Model.from_config(model.get_config())
  other.load_weights(str(tmp_path / 'weights'))
  tf.train.Checkpoint(states=state.state_variables(other)).restore(path)
  for var, value in zip(state.state_variables(other), saved):
    np.testing.assert_array_equal(var.numpy(), value)
  np.testing.assert_array_equal(other(x[:, 23:]).numpy(), expected)


def test_config_round_trip():
  layer = lru.LinearRecurrence(7, r_min=0.2, r_max=0.7, max_phase=1.5,
                               seed=9, stateful=True, name='rec')
  copy = lru.LinearRecurrence.from_config(layer.get_config())
  assert (copy.state_size, copy.r_min, copy.r_max, copy.max_phase,
          copy.seed, copy.stateful, copy.name) == (
              7, 0.2, 0.7, 1.5, 9, True, 'rec')
  config = keras.layers.serialize(layer)
  assert type(keras.layers.deserialize(config)) is lru.LinearRecurrence
  with pytest.raises(ValueError, match='inside the unit circle'):
    lru.LinearRecurrence(4, r_min=0.5, r_max=1.0)


def _spec(stateful, **hp):
  return ms.ModelSpec(
      batch_size=tl.B if stateful else None,
      num_unroll=8 if stateful else None, stateful=stateful,
      feature_names=('a', 'b'), task='classification', num_classes=3,
      hyperparameters={'model': 'lru', 'units': 6, 'state_size': 5,
                       'blocks': 2, **hp}, seed=2)


def test_default_model_lru_streams_exactly():
  module = model_io.resolve_module()
  model = model_io.build_stateful(module, _spec(True))
  twin = model_io.build_serving(module, _spec(False), weights_from=model)
  state.check_stateful_model(model, batch_size=tl.B, num_unroll=8,
                             num_features=H, output_units=3)
  state.check_serving_model(twin, num_features=H, output_units=3)
  assert {type(l).__name__ for l in state.stateful_layers(model)} == {
      'LinearRecurrence'}
  assert dm.default_epochs(_spec(True)) is None
  assert dm.label_scoring(_spec(True)) == 'weighted'  # Length unknown.
  assert dm.label_scoring(_spec(True).replace(typical_length=32)) == (
      'weighted')  # 4 segments of 8.
  assert dm.label_scoring(_spec(True).replace(typical_length=24)) == (
      'last_step')  # 3 segments.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(tl.B, 40, H)).astype(np.float32)
  whole = twin(x).numpy()
  state.zero_all(model)
  got = np.concatenate([model(x[:, i:i + 8]).numpy()
                        for i in range(0, 40, 8)], axis=1)
  np.testing.assert_allclose(got, whole, atol=1e-5)
  streams, reset, lanes = tl._lane_streams(rng, 8)
  tl._check_streams(model, twin, streams, reset, lanes, 8, rtol=1e-6)
  with pytest.raises(ValueError, match='one positive int'):
    model_io.build_stateful(module, _spec(True, units=[4, 3]))


def test_default_model_lru_exports_a_step_signature_that_streams(tmp_path):
  module = model_io.resolve_module()
  model = model_io.build_stateful(module, _spec(True))
  spec = _spec(False)
  twin = model_io.build_serving(module, spec, weights_from=model)
  export.export_serving_model(str(tmp_path / 'serving'), twin, spec)
  loaded = tf.saved_model.load(str(tmp_path / 'serving'))
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 19, H)).astype(np.float32)
  whole = loaded.signatures['serving_transformed'](
      features=tf.constant(x), lengths=tf.constant([19, 19], tf.int64))
  step = loaded.signatures['step']
  states = loaded.signatures['initial_state'](
      batch_size=tf.constant(2, tf.int64))
  assert len(states) == 2 * 2  # Two blocks, real and imaginary parts.
  reset = tf.constant([1, 1], tf.int64)
  logits = []
  for a, b in [(0, 5), (5, 6), (6, 19)]:
    result = step(features=tf.constant(x[:, a:b]), reset=reset,
                  **{k: v for k, v in states.items()})
    reset = tf.constant([0, 0], tf.int64)
    states = {k: v for k, v in result.items() if k.startswith('state_')}
    logits.append(result['logits'].numpy())
  np.testing.assert_allclose(np.concatenate(logits, axis=1)[:, -1],
                             whole['logits'].numpy(), atol=1e-5)
  np.testing.assert_allclose(np.concatenate(logits, axis=1),
                             twin(x).numpy(), atol=1e-5)



def test_a_training_step_through_a_long_segment():
  """T = 1,460 (11 doubling passes of known length, as in a training
  batch): the compiled train step of the default module's LRU model runs
  and has a gradient. (The trainer on ACSF1 at this T failed with the
  passes in a while loop: AlreadyExistsError in TensorFlow's AddN rewrite
  inside loops; this smaller model did not show it.)"""
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  from components.stateful import model_io  # pylint: disable=g-import-not-at-top
  from components.stateful import model_spec as ms  # pylint: disable=g-import-not-at-top
  from components.stateful import objective as objective_lib  # pylint: disable=g-import-not-at-top
  from components.stateful import steps  # pylint: disable=g-import-not-at-top
  length = 1460
  spec = ms.ModelSpec(batch_size=2, num_unroll=length, stateful=True,
                      feature_names=('a',), num_classes=2,
                      hyperparameters={'model': 'lru'})
  module = model_io.resolve_module()
  model = model_io.build_stateful(module, spec)
  objective = objective_lib.make_objective(spec, module)
  optimizer = keras.optimizers.Adam(1e-3)
  optimizer.build(model.trainable_variables)
  fns = steps.compile_steps(model, optimizer, objective,
                            objective.new_metrics(), objective.new_metrics())
  rng = np.random.default_rng(0)
  out = fns.train({
      'features': tf.constant(rng.normal(size=(2, length, 1)), tf.float32),
      'labels': tf.zeros((2, length), tf.int64),
      'mask': tf.ones((2, length)), 'label_weight': tf.ones((2, length)),
      'reset': tf.ones((2,), tf.int64)})
  assert np.isfinite(float(out['loss'])) and float(out['grad_norm']) > 0


def _first_recurrence_input(first_norm, values):
  """What the default module's first LRU block reads for a one-feature
  input of constant ``values`` (one step per lane), at initialisation."""
  hp = {'model': 'lru', 'units': 8} if first_norm is None else {
      'model': 'lru', 'units': 8, 'first_norm': first_norm}
  spec = ms.ModelSpec(batch_size=None, num_unroll=None, stateful=False,
                      feature_names=('a',), num_classes=2,
                      hyperparameters=hp, seed=3)
  model = model_io.build_serving(model_io.resolve_module(), spec)
  probe = keras.Model(model.inputs, model.get_layer('lru_0').input)
  x = np.asarray(values, np.float32).reshape(-1, 1, 1)
  return probe(x).numpy()[:, 0]


def test_the_first_lru_block_reads_a_single_feature_magnitude():
  """With one feature the encoder's output is rank 1 with a zero bias at
  initialisation, so a layer norm over its channels gives the same vector
  for every positive value (the sign alone): the first block reads the
  encoder's output itself by default (``first_norm``, false)."""
  values = [0.5, 1.0, 3.0, -1.0]
  got = _first_recurrence_input(None, values)
  np.testing.assert_allclose(got[2], 3.0 * got[1], rtol=1e-5)
  np.testing.assert_allclose(got[3], -got[1], rtol=1e-5)
  assert np.abs(got[1]).max() > 0
  normed = _first_recurrence_input(True, values)
  # 0.5, 1 and 3 within the layer norm's epsilon (1e-3) of one vector.
  np.testing.assert_allclose(normed[0], normed[2], rtol=2e-2)
  np.testing.assert_allclose(normed[1], normed[2], rtol=5e-3)
  np.testing.assert_allclose(normed[3], -normed[1], rtol=1e-5)
  with pytest.raises(ValueError, match='first_norm must be true or false'):
    _first_recurrence_input('yes', values)


def _initial_logits(hp, seed=3):
  spec = ms.ModelSpec(batch_size=None, num_unroll=None, stateful=False,
                      feature_names=('a', 'b'), num_classes=3,
                      hyperparameters={'model': 'lru', 'units': 8, **hp},
                      seed=seed)
  model = model_io.build_serving(model_io.resolve_module(), spec)
  x = np.random.default_rng(seed).normal(size=(4, 6, 2)).astype(np.float32)
  return model(x).numpy()


def test_zero_head_starts_the_lru_at_the_class_prior():
  """With ``zero_head`` every initial logit is 0 (the first loss is the
  class prior's, log(3) here); by default the Glorot head gives logits away
  from it."""
  np.testing.assert_array_equal(_initial_logits({'zero_head': True}), 0.0)
  assert np.abs(_initial_logits({})).max() > 0.1
  with pytest.raises(ValueError, match='zero_head must be true or false'):
    _initial_logits({'zero_head': 1})


def test_the_default_module_logs_why_it_scores_the_label_so(caplog):
  """The trainer's log names the hook; the hook says why (segments)."""
  with caplog.at_level('INFO', logger='components.stateful.models.default_model'):
    assert dm.label_scoring(_spec(True).replace(typical_length=24)) == (
        'last_step')
  assert ('lru model: per-sequence labels scored last_step: the typical '
          'sequence (24 steps) spans 3 segments of 8, fewer than 4'
          in caplog.text)
