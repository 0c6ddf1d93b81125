"""The state protocol: the one module that finds and touches per-lane state.

A **stateful layer** is any layer that declares per-lane state (variables
whose first dimension is the lane, B): Keras RNN layers built with
``stateful=True`` (LSTM, GRU, SimpleRNN, RNN(cell), stacked cells) and the
project's ``layers.base.StatefulLayer`` subclasses (causal convolution, running
pools, the linear recurrence ``lru.LinearRecurrence``). An all-zero state
means "a sequence starts here" for every one of them. Everything that
handles state goes through this module:

* ``stateful_layers(model)`` — every stateful layer, nested models
  included, in a fixed order (the model's layer-tracking order);
  ``stateful_rnn_layers`` / ``recurrent_layers`` — the RNN ones.
* ``state_variables(model)`` — their state variables, flat, e.g.
  ``[lstm_1.h, lstm_1.c, conv_d4.buffer, pool.count, pool.sum, ...]``;
  each ``float32[B, ...]``. This is also the order of the ``state_<i>``
  tensors of the exported ``step`` signature and of checkpoints.
* ``reset_lanes(model, reset)`` — zero the state rows of lanes whose reset
  flag is 1; other lanes keep theirs (``zero_rows``: the same on explicit
  state tensors). ``zero_all(model)`` — every row.
* per-step resets (``dense`` batches) are ``resets.py``,
  built on ``all_layers`` / ``carries_state`` of this module.
* ``snapshot(model)`` / ``restore(model, snap)`` — around evaluation.
* ``serving_state_layers`` / ``serving_state_shapes`` / ``run_with_states``
  (in ``explicit.py``; old paths: ``compat.py``) — the non-stateful
  serving twin run from explicit states in, returning the states out (the
  ``step`` signature; under ``tf.distribute`` every replica's training
  step, ``components.stateful.distribution.replicas``).
* ``check_stateful_model`` / ``check_serving_model`` — clear errors
  (``StatefulModelError``), including for layers that mix time steps but
  declare no state (``Conv1D``, pooling over time, attention): they would
  silently lose their context at every segment boundary.

All functions work eagerly and inside ``tf.function``.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from components.stateful.layers.base import StatefulLayer


class StatefulModelError(ValueError):
  """A model cannot be trained or served statefully as built."""


def _check_keras2(model) -> None:
  if not isinstance(model, keras.Model):
    kind = f'{type(model).__module__}.{type(model).__qualname__}'
    hint = ''
    if type(model).__module__.startswith('keras'):
      hint = (' It looks like a Keras 3 model: this project uses Keras 2; '
              'build it with `import tf_keras as keras` (or set '
              'TF_USE_LEGACY_KERAS=1 before TensorFlow is imported).')
    raise StatefulModelError(
        f'build_model must return a tf_keras (Keras 2) Model, got {kind}.'
        + hint)


def all_layers(model: keras.Model) -> List[keras.layers.Layer]:
  """Every sub-layer (recursively), deduplicated, in tracking order."""
  # pylint: disable=protected-access
  return list(model._flatten_layers(include_self=False, recursive=True))


def recurrent_layers(model: keras.Model) -> List[keras.layers.RNN]:
  """Every Keras RNN layer in ``model`` (LSTM, GRU, SimpleRNN, RNN(cell)...).

  Layers wrapped in ``Bidirectional`` are included (``check_*`` rejects
  them).
  """
  return [l for l in all_layers(model) if isinstance(l, keras.layers.RNN)]


def stateful_rnn_layers(model: keras.Model) -> List[keras.layers.RNN]:
  """The recurrent layers built with ``stateful=True``, in a fixed order."""
  return [l for l in recurrent_layers(model) if l.stateful]


def carries_state(layer) -> bool:
  return isinstance(layer, (keras.layers.RNN, StatefulLayer))


def stateful_layers(model: keras.Model) -> List[keras.layers.Layer]:
  """Every stateful layer (RNN or ``StatefulLayer``, ``stateful=True``), in
  the model's layer-tracking order."""
  return [l for l in all_layers(model) if carries_state(l) and l.stateful]


def _inbound(layer) -> List[keras.layers.Layer]:
  out = []
  for node in getattr(layer, '_inbound_nodes', []):
    inbound = node.inbound_layers
    out.extend(inbound if isinstance(inbound, (list, tuple)) else [inbound])
  return out


def trainable_behind_state(model: keras.Model) -> List[str]:
  """The trainable layers whose weights shape a carried state: stateful
  layers with trainable weights, and trainable layers upstream of a
  stateful one (in ``model``'s layer graph; a nested model counts as one
  layer, by what it holds). Under truncated BPTT a loss on a sequence's
  last step reaches their weights only through its last segment."""
  def holds_state(layer):
    return (carries_state(layer) and layer.stateful) or (
        isinstance(layer, keras.Model) and bool(stateful_layers(layer)))

  def trainable(layer):
    return bool(layer.trainable_weights)

  names, seen = [], set()
  stack = []
  for layer in model.layers:
    if holds_state(layer):
      if trainable(layer) and (carries_state(layer) or any(
          trainable(l) for l in stateful_layers(layer))):
        names.append(layer.name)
      stack.extend(_inbound(layer))
  while stack:
    layer = stack.pop()
    if id(layer) in seen:
      continue
    seen.add(id(layer))
    if trainable(layer) and layer.name not in names:
      names.append(layer.name)
    stack.extend(_inbound(layer))
  return names


def _layer_state_variables(layer) -> List[tf.Variable]:
  if isinstance(layer, StatefulLayer):
    return layer.states
  states = tf.nest.flatten(layer.states)
  if any(s is None for s in states):
    layer.reset_states()  # Creates them (needs a known batch size).
    states = tf.nest.flatten(layer.states)
  return states


def state_variables(model: keras.Model) -> List[tf.Variable]:
  """All state variables of the stateful layers, flat, in fixed order.

  Returns:
    ``[v_0, v_1, ...]``, each ``float32[B, ...]``; per layer in
    ``stateful_layers`` order, then in the layer's state order (LSTM:
    ``h``, ``c``; stacked cells: cell by cell; ``StatefulLayer``: its
    ``state_shapes()`` order).
  """
  out = []
  for layer in stateful_layers(model):
    out.extend(_layer_state_variables(layer))
  return out


def _keep_mask(reset: tf.Tensor, like: tf.Variable) -> tf.Tensor:
  """bool[B, 1, ...]: True where the lane keeps its state."""
  reset = tf.convert_to_tensor(reset)
  keep = tf.math.equal(reset, tf.zeros_like(reset))
  return tf.reshape(keep, [-1] + [1] * (like.shape.rank - 1))


def reset_lanes(model: keras.Model, reset) -> None:
  """Zeroes the state rows of lanes with ``reset == 1`` in every layer.

  Args:
    model: a model with stateful RNN layers of batch size B.
    reset: int or bool [B]; 1/True where a new sequence starts in the lane.
  """
  variables = state_variables(model)
  for var, value in zip(variables, zero_rows(
      [v.read_value() for v in variables], reset)):
    var.assign(value)


def zero_rows(values: Sequence[tf.Tensor], reset) -> List[tf.Tensor]:
  """The functional form of ``reset_lanes``: ``values`` (explicit states,
  each float32[N, ...]) with the rows of lanes whose ``reset`` [N] is 1
  zeroed."""
  return [tf.where(_keep_mask(reset, v), v, tf.zeros_like(v))
          for v in values]


def zero_all(model: keras.Model) -> None:
  """Zeroes every state row of every stateful layer."""
  for var in state_variables(model):
    var.assign(tf.zeros_like(var))


def snapshot(model: keras.Model) -> List[tf.Tensor]:
  """A copy of every state variable's value (``state_variables`` order)."""
  return [tf.identity(var.read_value()) for var in state_variables(model)]


def restore(model: keras.Model, values: Sequence[tf.Tensor]) -> None:
  """Puts back a ``snapshot``."""
  variables = state_variables(model)
  if len(variables) != len(values):
    raise StatefulModelError(f'snapshot has {len(values)} states, the model '
                             f'{len(variables)}')
  for var, value in zip(variables, values):
    var.assign(value)


# Keras layers that mix time steps but declare no per-lane state: inside a
# stateful model each would restart at every segment boundary.
_TIME_MIXING = tuple(c for c in (
    getattr(keras.layers, name, None) for name in (
        'Conv1D', 'Conv1DTranspose', 'SeparableConv1D', 'DepthwiseConv1D',
        'LocallyConnected1D', 'MaxPooling1D', 'AveragePooling1D',
        'GlobalMaxPooling1D', 'GlobalAveragePooling1D', 'Attention',
        'AdditiveAttention', 'MultiHeadAttention', 'Cropping1D',
        'ZeroPadding1D', 'UpSampling1D')) if c is not None)


def _check_causal(model: keras.Model) -> List[keras.layers.Layer]:
  """Rejects layers that cannot carry state forward; returns the layers
  that carry state (RNN or ``StatefulLayer``, stateful or not)."""
  for layer in all_layers(model):
    if isinstance(layer, keras.layers.Bidirectional):
      raise StatefulModelError(
          f'layer {layer.name!r} is Bidirectional: its backward direction '
          'reads the future of the segment and its state cannot be carried '
          'to the next batch. Use causal (forward) recurrent layers only.')
    if isinstance(layer, _TIME_MIXING):
      raise StatefulModelError(
          f'layer {layer.name!r} ({type(layer).__name__}) mixes time steps '
          'but declares no per-lane state: in a stateful model it would lose '
          'its context at every segment boundary. Use a stateful layer '
          '(components.stateful.layers: CausalConv1D, RunningPool, or a '
          'StatefulLayer subclass) or a stateful RNN.')
  rnns = recurrent_layers(model)
  for layer in rnns:
    if layer.go_backwards:
      raise StatefulModelError(
          f'recurrent layer {layer.name!r} has go_backwards=True: it runs '
          'backwards in time, so its state cannot be carried forward to the '
          'next segment.')
    if getattr(layer, 'time_major', False):
      raise StatefulModelError(
          f'recurrent layer {layer.name!r} is time_major; batches are '
          '[B, T, F] (batch major)')
  return [l for l in all_layers(model) if carries_state(l)]


def _single_io(model: keras.Model):
  if len(model.inputs) != 1 or len(model.outputs) != 1:
    raise StatefulModelError(
        f'the model must have exactly one input (features [B, T, F]) and one '
        f'output ([B, T, K]); it has {len(model.inputs)} inputs and '
        f'{len(model.outputs)} outputs')
  return model.inputs[0].shape, model.outputs[0].shape


def check_stateful_model(model, *, batch_size: int,
                         num_unroll: Optional[int], num_features: int,
                         output_units: int) -> List[keras.layers.Layer]:
  """Raises ``StatefulModelError`` unless ``model`` can be trained statefully.

  Checks: a tf_keras functional/Sequential model with one input
  ``[batch_size, num_unroll or None, num_features]`` and one per-step output
  ``[batch_size, T, output_units]``; at least one stateful layer; every
  state-carrying layer stateful, causal and with state batch
  ``batch_size``; no layer that mixes time steps without declaring state.

  Returns:
    ``stateful_layers(model)``.
  """
  _check_keras2(model)
  carriers = _check_causal(model)
  if not carriers:
    raise StatefulModelError(
        'the model has no recurrent layer or other stateful layer: build it '
        'with at least one stateful Keras RNN layer (LSTM, GRU, SimpleRNN or '
        'RNN(cell)) with stateful=True, or a components.stateful.layers '
        'layer (CausalConv1D, RunningPool) with stateful=True')
  not_stateful = [l.name for l in carriers if not l.stateful]
  if len(not_stateful) == len(carriers):
    raise StatefulModelError(
        'the model has no stateful recurrent layer or other stateful layer: '
        'build its RNN and stateful layers with stateful=True when '
        f'spec.stateful is True (got {not_stateful})')
  if not_stateful:
    raise StatefulModelError(
        f'layers {not_stateful} are not stateful: their state would be '
        'dropped at every batch boundary. Build every RNN and stateful layer '
        'with stateful=spec.stateful.')
  try:
    in_shape, out_shape = _single_io(model)
  except AttributeError:
    raise StatefulModelError(
        'the model must be a functional or Sequential Keras model with a '
        'known input shape (use keras.Input(batch_shape=(spec.batch_size, '
        'spec.num_unroll, spec.num_features)))') from None
  if in_shape.rank != 3:
    raise StatefulModelError(f'model input must be [B, T, F], got {in_shape}')
  if in_shape[0] != batch_size:
    raise StatefulModelError(
        f'model batch size {in_shape[0]} does not match the batches\' '
        f'batch_size {batch_size}: build the input with '
        'batch_shape=(spec.batch_size, spec.num_unroll, spec.num_features)')
  if in_shape[1] is not None and in_shape[1] != num_unroll:
    raise StatefulModelError(
        f'model input has {in_shape[1]} time steps; the batches have '
        f'num_unroll={num_unroll}')
  if in_shape[2] != num_features:
    raise StatefulModelError(
        f'model input has {in_shape[2]} features; the batches have '
        f'{num_features}')
  if out_shape.rank != 3:
    raise StatefulModelError(
        f'model output must be per step, [B, T, K]; got {out_shape}. Keep '
        'return_sequences=True on the last recurrent layer (per-sequence '
        'labels are scored on the last real step of each sequence).')
  if out_shape[0] != batch_size or out_shape[2] != output_units:
    raise StatefulModelError(
        f'model output shape {out_shape} does not match '
        f'[{batch_size}, T, {output_units}] (K = num_classes for '
        'classification, output_size for regression)')
  for layer in carriers:
    for var in _layer_state_variables(layer):
      if var.shape[0] != batch_size:
        raise StatefulModelError(
            f'layer {layer.name!r} keeps state for {var.shape[0]} lanes; the '
            f'batches have batch_size {batch_size}')
  return carriers


def check_serving_model(model, *, num_features: int,
                        output_units: int) -> List[keras.layers.Layer]:
  """Raises ``StatefulModelError`` unless ``model`` is a valid serving twin.

  The twin must take ``[None, None, num_features]`` (any batch, any length),
  output ``[None, None, output_units]`` and have only non-stateful, causal
  state-carrying layers.

  Returns:
    ``serving_state_layers(model)``.
  """
  _check_keras2(model)
  carriers = _check_causal(model)
  stateful = [l.name for l in carriers if l.stateful]
  if stateful:
    raise StatefulModelError(
        f'the serving twin (spec.stateful=False) has stateful layers '
        f'{stateful}: build RNN and stateful layers with '
        'stateful=spec.stateful')
  if not carriers:
    raise StatefulModelError('the serving twin has no recurrent layer or '
                             'other stateful layer')
  in_shape, out_shape = _single_io(model)
  if in_shape.rank != 3 or in_shape[0] is not None or in_shape[1] is not None:
    raise StatefulModelError(
        f'the serving twin must take [None, None, F] (any batch and length); '
        f'its input is {in_shape}. Use spec.batch_size and spec.num_unroll '
        '(both None for the twin) in the input shape.')
  if in_shape[2] != num_features or out_shape.rank != 3 or (
      out_shape[2] != output_units):
    raise StatefulModelError(
        f'the serving twin maps {in_shape} -> {out_shape}; expected '
        f'[N, L, {num_features}] -> [N, L, {output_units}]')
  return carriers

