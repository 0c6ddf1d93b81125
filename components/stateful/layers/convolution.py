"""Causal convolution: ``CausalConv1D`` and its kernel initialisers.

* ``CausalConv1D`` — a (dilated) causal convolution, a ``StatefulLayer``
  (``base``) that carries its last ``(kernel_size - 1) * dilation_rate``
  inputs and convolves ``[carried ; chunk]`` tap by tap; with resets, taps
  that reach back across a reset read zeros.
* ``CenteredNormal`` — seeded random kernels with zero mean over the taps
  (ROCKET's); ``LagKernel`` — the kernel whose outputs are the last k
  inputs of every channel.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful.layers.base import PACKAGE
from components.stateful.layers.base import PlainCall
from components.stateful.layers.base import StatefulLayer
from components.stateful.layers.scans import last_reset

# CausalConv1D sums over at most this many input channels element-wise
# (bit-identical on every path); wider inputs use a matrix product.
EXACT_CHANNELS = 16


@keras.utils.register_keras_serializable(package=PACKAGE)
class CausalConv1D(PlainCall, StatefulLayer):
  """A causal, dilated 1-D convolution that streams exactly.

  Output at step t: ``sum_j kernel[j] . x[t - (k - 1 - j) * d] + bias`` over
  the sequence's own steps (steps before its start are zeros). State: the
  last ``(k - 1) * d`` inputs, ``float32[(k - 1) * d, C_in]``.

  Args:
    filters: output channels.
    kernel_size: taps k.
    dilation_rate: d.
    use_bias, activation, kernel_initializer, bias_initializer: as Keras'
      ``Conv1D``.
    stateful: see ``StatefulLayer``.
  """

  def __init__(self, filters: int, kernel_size: int, dilation_rate: int = 1,
               use_bias: bool = True, activation=None,
               kernel_initializer='glorot_uniform',
               bias_initializer='zeros', stateful: bool = False, **kwargs):
    super().__init__(stateful=stateful, **kwargs)
    if int(filters) < 1 or int(kernel_size) < 1 or int(dilation_rate) < 1:
      raise ValueError('filters, kernel_size and dilation_rate must be >= 1, '
                       f'got {filters}, {kernel_size}, {dilation_rate}')
    self.filters = int(filters)
    self.kernel_size = int(kernel_size)
    self.dilation_rate = int(dilation_rate)
    self.use_bias = bool(use_bias)
    self.activation = keras.activations.get(activation)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.bias_initializer = keras.initializers.get(bias_initializer)

  @property
  def receptive_field(self) -> int:
    """Past inputs the output at a step reads: ``(k - 1) * d``."""
    return (self.kernel_size - 1) * self.dilation_rate

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    self._channels = int(input_shape[-1])
    self.kernel = self.add_weight(
        name='kernel', shape=(self.kernel_size, self._channels, self.filters),
        initializer=self.kernel_initializer)
    self.bias = (self.add_weight(name='bias', shape=(self.filters,),
                                 initializer=self.bias_initializer)
                 if self.use_bias else None)
    super().build(input_shape)

  def state_shapes(self):
    return [tf.TensorShape([self.receptive_field, self._channels])]

  def step(self, inputs, states, resets=None):
    (carried,) = states
    full = tf.concat([carried, inputs], axis=1)  # [N, R + T', C]
    r, length = self.receptive_field, tf.shape(inputs)[1]
    new = full[:, tf.shape(full)[1] - r:] if r else full[:, :0]
    since = None
    if resets is not None:
      last = last_reset(resets)  # [N, T']
      # Steps since the sequence started (0 on its first step); "long ago"
      # (R) when it started before the chunk.
      since = tf.where(last >= 0, tf.range(length)[None, :] - last,
                       tf.fill(tf.shape(last), r))
      if r:
        # ``new`` holds full positions T' .. T' + R - 1; the last sequence
        # starts at full position R + last[:, -1]: what came before belongs
        # to an ended sequence (none: keep everything).
        start = tf.where(last[:, -1] >= 0, r + last[:, -1], -1)
        keep = (length + tf.range(r))[None, :] >= start[:, None]
        new = new * tf.cast(keep, new.dtype)[..., None]
    # Tap by tap, in the same order on every path (chunked, whole, with or
    # without resets): a tap that reads across a reset reads zeros, exactly
    # as one that reads before a sequence's first step. With few input
    # channels (the default model's) the products are summed element-wise,
    # tap-major then channel, one add at a time from zero, so the same
    # window gives the same bits whatever the chunk's shape (a matrix
    # product may round differently per shape, and a running proportion
    # above a threshold counts such a flip). Every product of the chunk
    # comes out of one batched outer product (a matrix product of inner
    # size 1: each product is one float32 rounding, however computed; a
    # product of -0 read as +0 is the same in a sum that starts at +0), laid
    # out [tap * channel, N * T', filters] so that each summand is a
    # contiguous slice: the same sums as one broadcast multiply and one add
    # per (tap, channel), with a few times fewer ops.
    lags = [(self.kernel_size - 1 - j) * self.dilation_rate
            for j in range(self.kernel_size)]
    taps = tf.stack([full[:, r - lag:r - lag + length] for lag in lags])
    if since is not None:  # taps: [k, N, T', C].
      reach = tf.constant(lags, tf.int32)[:, None, None]
      taps = taps * tf.cast(since[None] >= reach, taps.dtype)[..., None]
    if self._channels <= EXACT_CHANNELS:
      batch = tf.shape(inputs)[0]
      columns = tf.reshape(tf.transpose(taps, [0, 3, 1, 2]),
                           [self.kernel_size * self._channels, -1, 1])
      products = tf.unstack(tf.linalg.matmul(columns, tf.reshape(
          self.kernel, [self.kernel_size * self._channels, 1, self.filters])))
      out = tf.zeros_like(products[0])
      for product in products:
        out = out + product
      out = tf.reshape(out, [batch, length, self.filters])
    else:
      out = 0.0
      for j in range(self.kernel_size):
        out += tf.tensordot(taps[j], self.kernel[j], axes=[[2], [0]])
    if self.bias is not None:
      out = out + self.bias
    return self.activation(out), [new]

  def compute_output_shape(self, input_shape):
    return tf.TensorShape(input_shape)[:-1].concatenate([self.filters])

  def get_config(self):
    return {**super().get_config(), 'filters': self.filters,
            'kernel_size': self.kernel_size,
            'dilation_rate': self.dilation_rate, 'use_bias': self.use_bias,
            'activation': keras.activations.serialize(self.activation),
            'kernel_initializer': keras.initializers.serialize(
                self.kernel_initializer),
            'bias_initializer': keras.initializers.serialize(
                self.bias_initializer)}


@keras.utils.register_keras_serializable(package=PACKAGE)
class CenteredNormal(keras.initializers.Initializer):
  """Seeded normal kernels ``[k, C_in, C_out]`` with zero mean over the taps
  of each (input, output) pair, as ROCKET draws its random kernels."""

  def __init__(self, seed: int = 0):
    self.seed = int(seed)

  def __call__(self, shape, dtype=None, **kwargs):
    values = np.random.default_rng(self.seed).normal(size=shape)
    values -= values.mean(axis=0, keepdims=True)
    return tf.constant(values, dtype or tf.float32)

  def get_config(self):
    return {'seed': self.seed}


@keras.utils.register_keras_serializable(package=PACKAGE)
class LagKernel(keras.initializers.Initializer):
  """Kernel ``[k, C, k * C]`` of a causal convolution whose output at step t
  is the last k inputs ``x[t - k + 1 .. t]`` of every channel (lag-major)."""

  def __call__(self, shape, dtype=None, **kwargs):
    k, c, out = shape
    if out != k * c:
      raise ValueError(f'LagKernel needs filters = kernel_size * channels, '
                       f'got {shape}')
    values = np.zeros(shape)
    for lag in range(k):
      for ch in range(c):
        values[k - 1 - lag, ch, lag * c + ch] = 1.0
    return tf.constant(values, dtype or tf.float32)
