"""RNN state helpers for stateful Keras 2 (``tf_keras``) models.

Public and stable: the StatefulEvaluator imports these.

* ``recurrent_layers(model)`` / ``stateful_rnn_layers(model)`` — every
  (stateful) recurrent layer, nested models and stacked cells included, in a
  fixed order (the model's layer-tracking order).
* ``state_variables(model)`` — the flat list of state variables of those
  layers, e.g. ``[lstm_1.h, lstm_1.c, gru.h]``; each is ``float32[B, ...]``
  (batch first). This order is also the order of the ``state_<i>`` tensors of
  the exported ``step`` signature.
* ``reset_lanes(model, reset)`` — zero the state rows of lanes whose reset
  flag is 1, in every state variable; other lanes keep theirs.
* ``zero_all(model)`` — zero every state row.
* ``snapshot(model)`` / ``restore(model, snap)`` — copy out / put back all
  state (used around evaluation so that it does not disturb training).
* ``check_stateful_model(model, ...)`` / ``check_serving_model(model, ...)``
  — validation with clear errors (``StatefulModelError``).

All functions work eagerly and inside ``tf.function``.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import tensorflow as tf
import tf_keras as keras


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


def _all_layers(model: keras.Model) -> List[keras.layers.Layer]:
  """Every sub-layer (recursively), deduplicated, in tracking order."""
  # pylint: disable=protected-access
  return list(model._flatten_layers(include_self=False, recursive=True))


def recurrent_layers(model: keras.Model) -> List[keras.layers.RNN]:
  """Every Keras RNN layer in ``model`` (LSTM, GRU, SimpleRNN, RNN(cell)...).

  Layers wrapped in ``Bidirectional`` are included (``check_*`` rejects
  them).
  """
  return [l for l in _all_layers(model) if isinstance(l, keras.layers.RNN)]


def stateful_rnn_layers(model: keras.Model) -> List[keras.layers.RNN]:
  """The recurrent layers built with ``stateful=True``, in a fixed order."""
  return [l for l in recurrent_layers(model) if l.stateful]


def _layer_state_variables(layer: keras.layers.RNN) -> List[tf.Variable]:
  states = tf.nest.flatten(layer.states)
  if any(s is None for s in states):
    layer.reset_states()  # Creates them (needs a known batch size).
    states = tf.nest.flatten(layer.states)
  return states


def state_variables(model: keras.Model) -> List[tf.Variable]:
  """All state variables of the stateful RNN layers, flat, in fixed order.

  Returns:
    ``[v_0, v_1, ...]``, each ``float32[B, ...]``; per layer in
    ``stateful_rnn_layers`` order, then in the cell's state order (LSTM:
    ``h``, ``c``; stacked cells: cell by cell).
  """
  out = []
  for layer in stateful_rnn_layers(model):
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
  for var in state_variables(model):
    keep = _keep_mask(reset, var)
    var.assign(tf.where(keep, var, tf.zeros_like(var)))


def zero_all(model: keras.Model) -> None:
  """Zeroes every state row of every stateful RNN layer."""
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


def _check_causal(model: keras.Model) -> List[keras.layers.RNN]:
  for layer in _all_layers(model):
    if isinstance(layer, keras.layers.Bidirectional):
      raise StatefulModelError(
          f'layer {layer.name!r} is Bidirectional: its backward direction '
          'reads the future of the segment and its state cannot be carried '
          'to the next batch. Use causal (forward) recurrent layers only.')
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
  return rnns


def _single_io(model: keras.Model):
  if len(model.inputs) != 1 or len(model.outputs) != 1:
    raise StatefulModelError(
        f'the model must have exactly one input (features [B, T, F]) and one '
        f'output ([B, T, K]); it has {len(model.inputs)} inputs and '
        f'{len(model.outputs)} outputs')
  return model.inputs[0].shape, model.outputs[0].shape


def check_stateful_model(model, *, batch_size: int,
                         num_unroll: Optional[int], num_features: int,
                         output_units: int) -> List[keras.layers.RNN]:
  """Raises ``StatefulModelError`` unless ``model`` can be trained statefully.

  Checks: a tf_keras functional/Sequential model with one input
  ``[batch_size, num_unroll or None, num_features]`` and one per-step output
  ``[batch_size, T, output_units]``; at least one stateful recurrent layer;
  every recurrent layer stateful, causal and with state batch ``batch_size``.

  Returns:
    ``stateful_rnn_layers(model)``.
  """
  _check_keras2(model)
  rnns = _check_causal(model)
  if not rnns:
    raise StatefulModelError(
        'the model has no recurrent layer: build it with at least one '
        'stateful Keras RNN layer (LSTM, GRU, SimpleRNN or RNN(cell)) with '
        'stateful=True')
  not_stateful = [l.name for l in rnns if not l.stateful]
  if len(not_stateful) == len(rnns):
    raise StatefulModelError(
        'the model has no stateful recurrent layer: build its RNN layers '
        f'with stateful=True when spec.stateful is True (got '
        f'{not_stateful})')
  if not_stateful:
    raise StatefulModelError(
        f'recurrent layers {not_stateful} are not stateful: their state '
        'would be dropped at every batch boundary. Build every RNN layer with '
        'stateful=spec.stateful.')
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
  for layer in rnns:
    for var in _layer_state_variables(layer):
      if var.shape[0] != batch_size:
        raise StatefulModelError(
            f'recurrent layer {layer.name!r} keeps state for {var.shape[0]} '
            f'lanes; the batches have batch_size {batch_size}')
  return rnns


def check_serving_model(model, *, num_features: int,
                        output_units: int) -> List[keras.layers.RNN]:
  """Raises ``StatefulModelError`` unless ``model`` is a valid serving twin.

  The twin must take ``[None, None, num_features]`` (any batch, any length),
  output ``[None, None, output_units]`` and have only non-stateful, causal
  recurrent layers.

  Returns:
    ``recurrent_layers(model)``.
  """
  _check_keras2(model)
  rnns = _check_causal(model)
  stateful = [l.name for l in rnns if l.stateful]
  if stateful:
    raise StatefulModelError(
        f'the serving twin (spec.stateful=False) has stateful layers '
        f'{stateful}: build RNN layers with stateful=spec.stateful')
  if not rnns:
    raise StatefulModelError('the serving twin has no recurrent layer')
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
  return rnns
