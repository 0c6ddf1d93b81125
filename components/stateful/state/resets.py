"""Per-step resets: every stateful layer restarts at any step of a chunk.

Used for ``dense`` batches, where a lane's next sequence starts inside a
segment (docs/design.md, "The state protocol"). ``step_resets(model,
reset)`` is a context: while it is active, every stateful layer of
``model`` starts a fresh sequence at the steps where ``reset[n, t] == 1``.
Keras RNN layers run their own cell through a wrapper that zeroes the
state rows of the lanes resetting at that step; ``StatefulLayer`` steps
receive the resets. The layers are found through ``protocol``, the
module that owns per-lane state.
"""

from __future__ import annotations

import contextlib
import inspect

import tensorflow as tf
import tf_keras as keras

from components.stateful.state import protocol as state
from components.stateful.layers.base import StatefulLayer


def _rnn_call_with_resets(layer: keras.layers.RNN, resets: tf.Tensor):
  """A ``call`` for ``layer`` that runs its cell step by step and zeroes the
  state rows of the lanes whose ``resets[:, t]`` is 1 before step t.

  The generic Keras RNN loop (``backend.rnn``) over the layer's own cell:
  the same weights and maths as the layer's fused kernel, but no fused
  (cuDNN) path, which cannot reset inside a sequence.
  """
  cell = layer.cell
  cells = list(getattr(cell, 'cells', [])) + [cell]
  takes_training = 'training' in inspect.signature(cell.call).parameters

  def call(inputs, mask=None, training=None, initial_state=None):
    kwargs = {'training': training} if takes_training else {}

    def step(step_inputs, states):
      x, reset = step_inputs  # [N, C], [N, 1]
      keep = 1.0 - reset
      states = tf.nest.map_structure(lambda s: s * tf.cast(keep, s.dtype),
                                     states)
      output, new_states = cell(x, states, **kwargs)
      if not tf.nest.is_nested(new_states):
        new_states = [new_states]
      return output, new_states

    for c in cells:
      if hasattr(c, 'reset_dropout_mask'):
        c.reset_dropout_mask()
        c.reset_recurrent_dropout_mask()
    if initial_state is None:
      initial_state = (list(layer.states) if layer.stateful else
                       layer.get_initial_state(inputs))
    if mask is not None:
      mask = tf.nest.flatten(mask)[0]
    last, outputs, states = keras.backend.rnn(
        step, (inputs, tf.cast(resets, inputs.dtype)[..., None]),
        list(initial_state), mask=mask, input_length=inputs.shape[1],
        zero_output_for_mask=layer.zero_output_for_mask,
        return_all_outputs=layer.return_sequences)
    if layer.stateful:
      for var, value in zip(tf.nest.flatten(layer.states),
                            tf.nest.flatten(states)):
        var.assign(tf.cast(value, var.dtype))
    output = outputs if layer.return_sequences else last
    if layer.return_state:
      return [output] + list(tf.nest.flatten(states))
    return output

  return call


@contextlib.contextmanager
def step_resets(model: keras.Model, reset):
  """Per-step resets for the calls of ``model`` inside the context.

  Every stateful layer (RNN or ``StatefulLayer``) starts a fresh sequence
  at the steps where ``reset`` is 1, in the lanes where it is: the state
  used by that step is zero, exactly as a ``reset_lanes`` before a call
  that starts there. Used for ``dense`` batches, where a lane's next
  sequence starts inside a segment.

  Args:
    model: a model with stateful layers.
    reset: int or float [B, T], 1 on a sequence's first step; T the
      length of the features given to the model.

  Raises:
    StatefulModelError: a ``StatefulLayer`` whose ``step`` takes no
      ``resets``.
  """
  resets = tf.cast(tf.convert_to_tensor(reset), tf.float32)
  layers = [l for l in state.all_layers(model) if state.carries_state(l)]
  for layer in layers:
    if isinstance(layer, StatefulLayer):
      if 'resets' not in inspect.signature(layer.step).parameters:
        raise state.StatefulModelError(
            f'layer {layer.name!r} ({type(layer).__name__}) cannot reset '
            'inside a segment: its step() takes no resets argument, so it '
            'cannot train on dense batches (use packed or bucketed mode, or '
            'add step(inputs, states, resets=None))')
  try:
    for layer in layers:
      if isinstance(layer, StatefulLayer):
        object.__setattr__(layer, '_step_resets', resets)
      else:
        object.__setattr__(layer, 'call',
                           _rnn_call_with_resets(layer, resets))
    yield
  finally:
    for layer in layers:
      if isinstance(layer, StatefulLayer):
        object.__setattr__(layer, '_step_resets', None)
      elif 'call' in vars(layer):
        object.__delattr__(layer, 'call')
