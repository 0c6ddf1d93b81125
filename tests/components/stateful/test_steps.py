"""The train step applies no update on a batch without labelled steps."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful import layers as sl
from components.stateful import model_spec as ms
from components.stateful import objective as objective_lib
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
  x = sl.RunningPool(('mean',), stateful=True)(inputs)
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
