"""The default model module: a stacked LSTM or GRU with a per-step head.

Used when the StatefulTrainer is given no ``module_file``; also an example
of the module contract (see ``model_spec.py``). It imports only TensorFlow
and ``tf_keras``, so the copy the trainer stores next to the weights
(``<model>/stateful/module.py``) loads on its own.

Hyperparameters (``spec.hyperparameters``; all optional):

* ``rnn_type``: ``'lstm'`` (default) or ``'gru'``.
* ``units``: an int or a list of ints, one per stacked layer (default 32).
* ``dropout``: dropout rate applied between stacked recurrent layers
  (default 0.0). It is seeded and keeps its draw counter in a model variable,
  so a resumed run draws exactly the masks an uninterrupted run would.
* ``head_units``: optional hidden Dense layer (ReLU) before the output layer.

The output is per step, float32[B, T, K]: ``num_classes`` logits for
classification, ``output_size`` values for regression. For ``per_sequence``
labels the trainer scores only each sequence's last real step and the serving
signature returns the prediction at ``lengths - 1``; for ``per_step`` labels
every real step counts and is returned.
"""

from typing import List

import tensorflow as tf
import tf_keras as keras

RNN_TYPES = ('lstm', 'gru')


@keras.utils.register_keras_serializable(package='stateful_trainer')
class SeededDropout(keras.layers.Layer):
  """Dropout with stateless, counter-based masks.

  Mask ``n`` (the n-th training call) is drawn from
  ``stateless_uniform(seed=[seed, n])``; ``n`` lives in a non-trainable
  int64 weight, so it is saved in checkpoints and weights.
  """

  def __init__(self, rate: float, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= float(rate) < 1.0:
      raise ValueError(f'dropout rate must be in [0, 1), got {rate}')
    self.rate = float(rate)
    self.seed = int(seed)

  def build(self, input_shape):
    self.counter = self.add_weight(
        name='counter', shape=(), dtype=tf.int64,
        initializer=keras.initializers.Zeros(), trainable=False)
    super().build(input_shape)

  def _dropped(self, inputs):
    seed = tf.stack([tf.constant(self.seed, tf.int64),
                     self.counter.read_value()])
    keep = tf.random.stateless_uniform(tf.shape(inputs), seed=seed) >= (
        self.rate)
    self.counter.assign_add(1)
    return tf.where(keep, inputs / (1.0 - self.rate), tf.zeros_like(inputs))

  def call(self, inputs, training=None):
    if self.rate == 0.0 or training is None or training is False:
      return inputs
    if training is True:
      return self._dropped(inputs)
    return tf.cond(tf.cast(training, tf.bool), lambda: self._dropped(inputs),
                   lambda: tf.identity(inputs))

  def get_config(self):
    return {**super().get_config(), 'rate': self.rate, 'seed': self.seed}


def _units(value) -> List[int]:
  units = [value] if isinstance(value, int) else list(value)
  if not units or any(not isinstance(u, int) or u < 1 for u in units):
    raise ValueError(f'units must be a positive int or a list of them, got '
                     f'{value!r}')
  return units


def build_model(spec) -> keras.Model:
  """Stacked LSTM/GRU -> Dense head, per step. See the module docstring.

  Args:
    spec: a ``ModelSpec``.

  Returns:
    A Keras 2 model ``features float32[B, T, F] -> float32[B, T, K]``.
  """
  hp = spec.hyperparameters
  rnn_type = str(hp.get('rnn_type', 'lstm')).lower()
  if rnn_type not in RNN_TYPES:
    raise ValueError(f'rnn_type must be one of {RNN_TYPES}, got {rnn_type!r}')
  units = _units(hp.get('units', 32))
  dropout = float(hp.get('dropout', 0.0))
  head_units = hp.get('head_units')
  seed = int(spec.seed)
  layer_cls = keras.layers.LSTM if rnn_type == 'lstm' else keras.layers.GRU

  inputs = keras.Input(shape=(spec.num_unroll, spec.num_features),
                       batch_size=spec.batch_size, name='features')
  x = inputs
  for i, size in enumerate(units):
    if i > 0 and dropout > 0.0:
      x = SeededDropout(dropout, seed=seed * 1009 + i,
                        name=f'dropout_{i}')(x)
    x = layer_cls(
        size, return_sequences=True, stateful=spec.stateful,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 7 * i),
        recurrent_initializer=keras.initializers.Orthogonal(
            seed=seed + 7 * i + 1),
        name=f'{rnn_type}_{i}')(x)
  if head_units:
    x = keras.layers.Dense(
        int(head_units), activation='relu',
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 501),
        name='hidden')(x)
  outputs = keras.layers.Dense(
      spec.output_units,
      kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 503),
      name='head')(x)
  return keras.Model(inputs, outputs, name=f'stacked_{rnn_type}')
