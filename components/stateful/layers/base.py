"""The base of the project's stateful layers: ``StatefulLayer``, and the
``PlainCall`` mixin.

``StatefulLayer`` is the base of every non-recurrent layer that mixes time
steps. The contract (docs/design.md, "The state protocol"):

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
  ``components.stateful.state.protocol`` finds, resets, snapshots and
  checkpoints. With ``stateful=False`` (the serving twin) each call starts
  from zeros, or from states handed in by ``state.explicit.run_with_states``
  (the ``step`` signature), which also collects the states after the call.

Fed chunk by chunk with carried state, a stateful layer gives exactly the
outputs it gives on the whole sequence (up to float rounding of running
sums); the tests hold every layer of this package to that. The layers, one
file per family: ``convolution``, ``pools``, ``lru`` (with its ``scans``),
and ``elementwise`` (no time mixing, no state).

``PACKAGE`` is the name every layer of the project is registered under with
``keras.utils.register_keras_serializable`` (``components.stateful>Name``):
kept as it was before the layers had files of their own, so saved models
deserialise.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

# The registration package of the project's Keras objects (see above).
PACKAGE = 'components.stateful'


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
