"""benchmarks/feature_pass.py: the NumPy reference computes the default conv
model's features (streamed chunk by chunk, with resets) and the section's
report (no timing run)."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from benchmarks import feature_pass as fp
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful.state import protocol as state
from components.stateful import steps as steps_lib

B, T, F = 3, 8, 2


def _model():
  hp = {'kernels_per_dilation': 4, 'max_dilation': 4}
  spec = ms.ModelSpec(batch_size=B, num_unroll=T, stateful=True,
                      feature_names=('a', 'b'), task='classification',
                      num_classes=2, hyperparameters=hp, seed=3)
  model = model_io.build_stateful(model_io.resolve_module(), spec)
  rng = np.random.default_rng(0)
  model.get_layer('input_scale').set_statistics(np.array([0.5, -1.0]),
                                                np.array([2.0, 0.5]))
  pool = model.get_layer('conv_pool')
  pool.threshold.assign(rng.normal(size=pool.threshold.shape) * 0.5)
  return model


def _batches(rng, count):
  """Packed batches: each lane's sequences start at a batch's first step."""
  return [{'features': rng.normal(size=(B, T, F)).astype(np.float32) * 3,
           'reset': (rng.random(B) < 0.4).astype(np.int64) if i else
                    np.ones(B, np.int64)} for i in range(count)]


def test_lane_streams_mark_each_sequence_start():
  batches = [{'features': np.zeros((2, 4, 1), np.float32),
              'reset': np.array([1, 1])},
             {'features': np.zeros((2, 4, 1), np.float32),
              'reset': np.array([0, 1])}]
  x, start = fp.lane_streams(batches)
  assert x.shape == (2, 8, 1)
  np.testing.assert_array_equal(start[0], [0] * 8)
  np.testing.assert_array_equal(start[1], [0] * 4 + [4] * 4)


def test_reference_is_the_models_streamed_features():
  model = _model()
  batches = _batches(np.random.default_rng(1), 6)
  probe = keras.Model(model.inputs, model.get_layer('features_all').output)
  state.zero_all(model)
  with steps_lib.exact_arithmetic():
    got = np.concatenate([steps_lib.run_model(
        probe, tf.constant(b['features']), tf.constant(b['reset']),
        training=False).numpy() for b in batches], axis=1)
  params = fp.model_params(model)
  x, start = fp.lane_streams(batches)
  ppv = params['thresholds'].shape[0]
  for lane in range(B):
    exact = fp.reference_features(params, x[lane], start[lane],
                                  exact_taps=True)
    assert exact.shape == got[lane].shape
    # The taps summed in the model's order: the PPVs bit for bit.
    np.testing.assert_array_equal(exact[:, :ppv], got[lane][:, :ppv])
    np.testing.assert_allclose(exact, got[lane], rtol=1e-5, atol=1e-6)
    fast = fp.reference_features(params, x[lane], start[lane])
    np.testing.assert_allclose(fast[:, ppv:], got[lane][:, ppv:],
                               rtol=1e-5, atol=1e-6)
  assert fp.reference_pass(params, batches) == got.shape[-1]
  per_step = fp.macs_per_step(params)
  assert per_step['conv_macs'] == sum(w.size for _, w in params['kernels'])


def _result(which, pair, scale):
  return {'which': which, 'pair': pair, 'batches': 10, 'real_steps': 2000.0,
          'slots': 2560.0, 'matmul_macs_per_s': 1e10,
          'per_step': {'conv_macs': 20250, 'pool_ops': 5400},
          'seconds': {'adapt': 4.0 * scale, 'feature_pass': 1.0 * scale,
                      'fine_tune_pass': 1.5 * scale, 'numpy_reference': 0.8},
          'agreement': {'width': 1835, 'conv_max_abs': 1e-6,
                        'conv_max_rel': 1e-6, 'exact_max_abs': 2e-7,
                        'exact_equal_share': 0.99,
                        'fast_ppv_mismatch_share': 1e-6}}


def test_report_gives_rates_ratios_and_verdicts():
  results = {
      'command': 'python -m benchmarks.feature_pass', 'notes': ['a note'],
      'code': {'commit': 'abcdef0123456', 'uncommitted': []},
      'baseline_code': {'root': '/tmp/old', 'commit': '0123456789'},
      'same_bits': {'adapted': True, 'fine_tuned': False},
      'run': {'date': 'today', 'seconds': 60.0, 'machine': 'm',
              'load_before': '1', 'load_after': '1', 'versions': 'v'},
      'runs': [_result('baseline', 0, 2.0), _result('current', 0, 1.0)]}
  text = fp.report(results)
  assert text.startswith(fp.TITLE)
  assert '**0.80x**' in text  # 0.8 s NumPy / 1.0 s feature pass.
  assert '**4.00x**' in text  # adapt over one feature pass: missed.
  assert '**missed**' in text
  assert '**2.00x** faster' in text
  assert 'adapted identical, fine_tuned **differ**' in text
  assert 'a note' in text
  r = fp.rates(_result('current', 0, 1.0))
  assert r['feature_pass'] == 2000.0
  assert r['bound'] == 2000.0 / (2560.0 * 20250 / 1e10)
