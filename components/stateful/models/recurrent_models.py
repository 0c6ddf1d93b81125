"""The default model module's recurrent models: ``model='lstm'`` / ``'gru'``
(stacked Keras RNN layers) and ``model='lru'`` (residual blocks of
``lru.LinearRecurrence``), and the seeded dropout they use. What each
builds, and its hyperparameters, is in ``default_model``'s docstring;
``default_model.build_model`` calls these."""

import math
from typing import List

import tensorflow as tf
import tf_keras as keras

from components.stateful.layers.base import PlainCall
from components.stateful.layers import lru


@keras.utils.register_keras_serializable(package='stateful_trainer')
class SeededDropout(PlainCall, keras.layers.Layer):
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


def _flag(value, name: str) -> bool:
  if not isinstance(value, bool):
    raise ValueError(f'{name} must be true or false, got {value!r}')
  return value


def build_rnn(spec, inputs, rnn_type: str) -> tf.Tensor:
  hp = spec.hyperparameters
  units = _units(hp.get('units', 32))
  dropout = float(hp.get('dropout', 0.0))
  head_units = hp.get('head_units')
  seed = int(spec.seed)
  layer_cls = keras.layers.LSTM if rnn_type == 'lstm' else keras.layers.GRU
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
  return keras.layers.Dense(
      spec.output_units,
      kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 503),
      name='head')(x)


def build_lru(spec, inputs) -> tf.Tensor:
  hp = spec.hyperparameters
  units = hp.get('units', 32)
  if isinstance(units, (list, tuple)) and len(units) == 1:
    units = units[0]
  if not isinstance(units, int) or isinstance(units, bool) or units < 1:
    raise ValueError("model='lru' takes units as one positive int (the "
                     f'width of every residual block), got {units!r}')
  blocks = int(hp.get('blocks', 2))
  if blocks < 1:
    raise ValueError(f'blocks must be >= 1, got {blocks}')
  dropout = float(hp.get('dropout', 0.0))
  seed = int(spec.seed)

  def dense(width, name, k, activation=None):
    return keras.layers.Dense(
        width, activation=activation, name=name,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + k))

  first_norm = _flag(hp.get('first_norm', False), 'first_norm')
  # Fan-in scaling: each encoded channel starts with unit variance for
  # standardised features, whatever their number (Glorot's fan average
  # would give one feature about a quarter of it).
  x = keras.layers.Dense(
      units, name='encoder',
      kernel_initializer=keras.initializers.VarianceScaling(
          1.0, 'fan_in', 'uniform', seed=seed + 601))(inputs)
  for i in range(blocks):
    if i == 0 and not first_norm:
      # The encoder's output, an affine map of standardised features, is on
      # a unit scale already; a layer norm over its channels would reduce a
      # single feature (a rank-1 encoding, zero bias at initialisation) to
      # its sign.
      y = x
    else:
      y = keras.layers.LayerNormalization(axis=-1, name=f'norm_{i}')(x)
    y = lru.LinearRecurrence(
        int(hp.get('state_size', 64)), r_min=float(hp.get('r_min', 0.9)),
        r_max=float(hp.get('r_max', 0.999)),
        max_phase=float(hp.get('max_phase', 2 * math.pi)),
        seed=seed * 1013 + i, stateful=spec.stateful, name=f'lru_{i}')(y)
    y = keras.layers.Activation('gelu', name=f'gelu_{i}')(y)
    y = keras.layers.Multiply(name=f'glu_{i}')([
        dense(units, f'glu_value_{i}', 611 + 2 * i)(y),
        dense(units, f'glu_gate_{i}', 612 + 2 * i, 'sigmoid')(y)])
    if dropout > 0.0:
      y = SeededDropout(dropout, seed=seed * 1009 + i,
                        name=f'dropout_{i}')(y)
    x = keras.layers.Add(name=f'residual_{i}')([x, y])
  if _flag(hp.get('zero_head', False), 'zero_head'):
    # The residual stream is not normalised, and a Glorot head on it starts
    # with logits of a few units (a loss above the class prior's); from
    # zero, training starts at the prior (or the mean label). Not the
    # default: measured over six sets it helped four and cost two
    # (BENCHMARKS.md section 6, run U).
    return keras.layers.Dense(spec.output_units, name='head',
                              kernel_initializer='zeros')(x)
  return dense(spec.output_units, 'head', 503)(x)
