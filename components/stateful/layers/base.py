"""Stateful layers beyond RNNs, and element-wise helpers for the default model.

Owns ``StatefulLayer``, the base of every non-recurrent layer that mixes time
steps, and the layers built on it. The contract (docs/design.md, "The state
protocol"):

* A stateful layer is causal: its output at step t depends on steps <= t of
  the same sequence only.
* It declares its per-lane state: ``state_shapes()`` (per lane, without the
  lane dimension) and a pure ``step(inputs, states) -> (outputs, states)``
  that processes a whole chunk ``float32[N, T', C]`` vectorised.
* An all-zero state means "the sequence starts here": zeroing a lane's rows
  (a reset) is exactly starting a fresh sequence in that lane.
* It honours a reset at any step (``dense`` batches, where a lane's next
  sequence starts inside a segment): ``step(inputs, states, resets)`` with
  ``resets`` float32[N, T'] (1 on a sequence's first step) restarts at
  those steps, exactly as if a fresh call started there. ``resets=None``
  means no reset inside the chunk.
* With ``stateful=True`` (training and chunked evaluation; fixed lane count
  B) the state lives in variables ``float32[B, ...]`` that
  ``components.stateful.state`` finds, resets, snapshots and checkpoints.
  With ``stateful=False`` (the serving twin) each call starts from zeros, or
  from states handed in by ``explicit_state.run_with_states`` (the ``step``
  signature), which also collects the states after the call.

Fed chunk by chunk with carried state, a stateful layer gives exactly the
outputs it gives on the whole sequence (up to float rounding of running
sums); the tests hold every layer here to that.

Layers:

* ``CausalConv1D`` — a (dilated) causal convolution that carries its last
  ``(kernel_size - 1) * dilation_rate`` inputs and convolves
  ``[carried ; chunk]`` tap by tap; with resets, taps that reach back
  across a reset read zeros.
* ``RunningPool`` and ``DecayingPool`` — in ``pools.py`` (old paths:
  ``compat.py``): statistics over a sequence's whole history, and decaying ones
  over its recent past.
* ``SignedLog`` and ``Standardize`` — per-step, per-channel maps (no time
  mixing, no state): ``sign(x) log(1 + |x|)`` and ``(x - center) / scale``
  with non-trainable, data-fitted center and scale.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful.scans import last_reset

_PACKAGE = 'components.stateful'
# CausalConv1D sums over at most this many input channels element-wise
# (bit-identical on every path); wider inputs use a matrix product.
EXACT_CHANNELS = 16


class PlainCall:
  """Mixin: Keras does not run this layer's ``call`` through AutoGraph.

  Keras converts a subclassed layer's ``call`` (and everything it calls)
  with AutoGraph each time the layer is called symbolically, e.g. whenever
  a model is built. A layer whose ``call`` (and ``step``) has no
  tensor-dependent Python control flow does not need it; the project's own
  layers are such layers (AutoGraph took about 1 s of building the default
  model in every process that builds it). A user's ``StatefulLayer``
  keeps AutoGraph unless it mixes this in.
  """

  def _should_use_autograph(self):  # tf_keras's hook (base_layer.py).
    return False


class StatefulLayer(keras.layers.Layer):
  """Base of the project's stateful (time-mixing, causal) layers.

  Subclasses implement ``state_shapes`` and ``step``; see the module
  docstring. The state variables are deliberately not Keras weights: the
  stateful model and its non-stateful serving twin then have the same
  weights in the same order, and the state is checkpointed by the trainer
  through ``state.state_variables``.
  """

  def __init__(self, stateful: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.stateful = bool(stateful)
    # Plain attributes, not tracked by Keras (see the class docstring).
    object.__setattr__(self, '_state_vars', None)
    object.__setattr__(self, '_external_states', None)
    object.__setattr__(self, '_captured_states', None)
    object.__setattr__(self, '_step_resets', None)

  # -- To implement --------------------------------------------------------

  def state_shapes(self) -> List[tf.TensorShape]:
    """Per-lane state shapes (without the lane dimension); after build."""
    raise NotImplementedError

  def step(self, inputs: tf.Tensor, states: Sequence[tf.Tensor],
           resets: Optional[tf.Tensor] = None
          ) -> Tuple[tf.Tensor, List[tf.Tensor]]:
    """``(outputs for the chunk, states after its last step)``; pure.

    ``resets``: None, or float32[N, T'] with 1 where a sequence starts
    (the state is zero just before that step).
    """
    raise NotImplementedError

  # -- The protocol --------------------------------------------------------

  def build(self, input_shape):
    super().build(input_shape)
    if self.stateful:
      batch = tf.TensorShape(input_shape)[0]
      if batch is None:
        raise ValueError(
            f'stateful layer {self.name!r} needs a known batch size (the lane '
            'count B): build the input with keras.Input(batch_size=B, ...)')
      self._create_state_variables(int(batch))

  def _create_state_variables(self, batch: int) -> None:
    with tf.init_scope():
      variables = [
          tf.Variable(tf.zeros([batch] + shape.as_list()), trainable=False,
                      name=f'{self.name}_state_{i}')
          for i, shape in enumerate(self.state_shapes())]
    object.__setattr__(self, '_state_vars', variables)

  @property
  def states(self) -> List[tf.Variable]:
    """The state variables ``float32[B, ...]`` (stateful layers only)."""
    if not self.stateful:
      return []
    if self._state_vars is None:
      raise ValueError(f'layer {self.name!r} is not built yet')
    return list(self._state_vars)

  def reset_states(self) -> None:
    for var in self.states:
      var.assign(tf.zeros_like(var))

  def zero_states(self, batch: tf.Tensor) -> List[tf.Tensor]:
    """Fresh (all-zero) states for ``batch`` lanes."""
    return [tf.zeros(tf.concat([[batch], tf.constant(s.as_list(), tf.int32)],
                               0)) for s in self.state_shapes()]

  def call(self, inputs):
    inputs = tf.convert_to_tensor(inputs)
    # Per-step resets, set by ``resets.step_resets`` (dense batches only, so
    # a subclass written before them still runs the other modes).
    extra = () if self._step_resets is None else (self._step_resets,)
    if self.stateful:
      outputs, new_states = self.step(
          inputs, [v.read_value() for v in self._state_vars], *extra)
      for var, value in zip(self._state_vars, new_states):
        var.assign(value)
      return outputs
    if self._external_states is not None:
      states = list(self._external_states)
    else:
      states = self.zero_states(tf.shape(inputs)[0])
    outputs, new_states = self.step(inputs, states, *extra)
    if self._captured_states is not None:
      self._captured_states[:] = list(new_states)
    return outputs

  def get_config(self):
    return {**super().get_config(), 'stateful': self.stateful}


@keras.utils.register_keras_serializable(package=_PACKAGE)
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
    # channel by channel, so the same window gives the same bits whatever
    # the chunk's shape (a matrix product may round differently per shape,
    # and a running proportion above a threshold counts such a flip).
    # The kernel's rows and each tap's channels come out of one op each
    # (unstack, split), not one slice per (tap, channel): the same products
    # in the same order, from a graph a few times smaller to build and trace.
    exact = self._channels <= EXACT_CHANNELS
    if exact:
      rows = tf.unstack(tf.reshape(
          self.kernel, [self.kernel_size * self._channels, self.filters]))
    out = 0.0
    for j in range(self.kernel_size):
      lag = (self.kernel_size - 1 - j) * self.dilation_rate
      tap = full[:, r - lag:r - lag + length]  # [N, T', C]
      if since is not None:
        tap = tap * tf.cast(since >= lag, tap.dtype)[..., None]
      if exact:
        parts = (tf.split(tap, self._channels, axis=-1)
                 if self._channels > 1 else [tap])
        for c, part in enumerate(parts):  # part: [N, T', 1]
          out += part * rows[j * self._channels + c]
      else:
        out += tf.tensordot(tap, self.kernel[j], axes=[[2], [0]])
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


@keras.utils.register_keras_serializable(package=_PACKAGE)
class SignedLog(PlainCall, keras.layers.Layer):
  """``sign(x) * log(1 + |x|)``, per step and channel (no time mixing)."""

  def call(self, inputs):
    return tf.sign(inputs) * tf.math.log1p(tf.abs(inputs))


@keras.utils.register_keras_serializable(package=_PACKAGE)
class Standardize(PlainCall, keras.layers.Layer):
  """``(x - center) / scale`` per channel (``inverse``: ``x * scale +
  center``); both non-trainable, set by ``set_statistics`` (the default
  model's ``adapt``). Starts as identity."""

  def __init__(self, inverse: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.inverse = bool(inverse)

  def build(self, input_shape):
    channels = int(tf.TensorShape(input_shape)[-1])
    self.center = self.add_weight(name='center', shape=(channels,),
                                  trainable=False, initializer='zeros')
    self.scale = self.add_weight(name='scale', shape=(channels,),
                                 trainable=False, initializer='ones')
    super().build(input_shape)

  def set_statistics(self, center: np.ndarray, scale: np.ndarray) -> None:
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    self.center.assign(np.asarray(center, np.float32))
    self.scale.assign(np.asarray(scale, np.float32))

  def call(self, inputs):
    if self.inverse:
      return inputs * self.scale + self.center
    return (inputs - self.center) / self.scale

  def get_config(self):
    return {**super().get_config(), 'inverse': self.inverse}


@keras.utils.register_keras_serializable(package=_PACKAGE)
class LabelUnits(PlainCall, keras.layers.Layer):
  """``y = x * spread + center``: standardised outputs back in label units
  (fixed numbers from the spec, not weights, so a model and its serving twin
  keep the same weights)."""

  def __init__(self, center: float, spread: float, **kwargs):
    super().__init__(**kwargs)
    self.center = float(center)
    self.spread = float(spread)

  def call(self, inputs):
    return inputs * self.spread + self.center

  def get_config(self):
    return {**super().get_config(), 'center': self.center,
            'spread': self.spread}


@keras.utils.register_keras_serializable(package=_PACKAGE)
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


@keras.utils.register_keras_serializable(package=_PACKAGE)
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

