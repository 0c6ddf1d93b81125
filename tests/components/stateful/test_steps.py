"""The train step applies no update on a batch without labelled steps."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful.layers import pools
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful import objective as objective_lib
from components.stateful.state import protocol as state
from components.stateful import steps

B, T, F = 2, 3, 2


def _batch(weight):
  rng = np.random.default_rng(0)
  return {'features': tf.constant(rng.normal(size=(B, T, F)), tf.float32),
          'labels': tf.zeros((B, T), tf.int64),
          'mask': tf.ones((B, T)), 'label_weight': tf.constant(weight),
          'reset': tf.ones((B,), tf.int64)}


def test_a_batch_without_labels_moves_no_weight():
  inputs = keras.Input(batch_shape=(B, T, F))
  x = pools.RunningPool(('mean',), stateful=True)(inputs)
  model = keras.Model(inputs, keras.layers.Dense(2)(x))
  spec = ms.ModelSpec(batch_size=B, num_unroll=T, stateful=True,
                      feature_names=('a', 'b'), num_classes=2)
  objective = objective_lib.make_objective(spec)
  optimizer = keras.optimizers.Adam(0.1)
  optimizer.build(model.trainable_variables)
  metrics = objective.new_metrics()
  labelled = np.zeros((B, T), np.float32)
  labelled[:, -1] = 1.0
  steps.train_step(model, optimizer, objective, metrics, _batch(labelled))
  before = [w.numpy() for w in model.trainable_weights]
  # Adam's momentum would move the weights on a zero gradient.
  steps.train_step(model, optimizer, objective, metrics,
                   _batch(np.zeros((B, T), np.float32)))
  for a, b in zip(before, model.trainable_weights):
    np.testing.assert_array_equal(a, b.numpy())
  assert int(optimizer.iterations) == 1


def test_exact_arithmetic_is_scoped_and_nests():
  def arithmetic():
    return tf.config.optimizer.get_experimental_options().get(
        'arithmetic_optimization', True)
  assert arithmetic()
  with steps.exact_arithmetic():
    with steps.exact_arithmetic():
      assert not arithmetic()
    assert not arithmetic()
  assert arithmetic()


def test_compiled_predict_gives_the_eager_bits_of_the_default_conv_model():
  """The step functions' prediction (compiled, B lanes, in chunks) gives
  the default model's convolutions bit for bit as each lane's sequence run
  eagerly alone: with grappler's arithmetic rewrite they differ by ~4e-6,
  which flips PPV counts at their thresholds."""
  b, t, chunks = 8, 16, 4
  spec = ms.ModelSpec(batch_size=b, num_unroll=t, stateful=True,
                      feature_names=('a', 'b', 'c'), task='classification',
                      num_classes=3, hyperparameters={}, seed=3,
                      typical_length=chunks * t)
  module = model_io.resolve_module()

  def conv_outputs(lanes):
    model = model_io.build_stateful(module, spec.replace(batch_size=lanes))
    return model, keras.Model(model.inputs,
                              model.get_layer('conv_outputs').output)

  model, sub = conv_outputs(b)
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(b, chunks * t, 3)) * 2).astype(np.float32)
  reset = np.zeros((b, chunks * t), np.int64)
  reset[:, 0] = 1
  fns = steps.compile_steps(sub, None, None)
  fns.zero_all()
  got = np.concatenate([
      fns.predict(tf.constant(x[:, a:a + t]),
                  tf.constant(reset[:, a:a + t])).numpy()
      for a in range(0, chunks * t, t)], axis=1)
  one, one_sub = conv_outputs(1)
  one.set_weights(model.get_weights())
  for lane in range(b):
    state.zero_all(one)
    alone = np.concatenate([one_sub(x[lane:lane + 1, a:a + t]).numpy()
                            for a in range(0, chunks * t, t)], axis=1)
    np.testing.assert_array_equal(got[lane], alone[0], err_msg=f'lane {lane}')
  assert tf.config.optimizer.get_experimental_options().get(
      'arithmetic_optimization', True)  # Restored after each prediction.
