"""Explicit state in and out: the serving twin run from given states.

The functional half of the state protocol (``protocol.py`` holds the rest):
``serving_state_layers`` / ``serving_state_shapes`` name the twin's
state-carrying layers and their per-stream state shapes, in the order of
``state.state_variables`` of the stateful model, and ``run_with_states``
runs the twin from explicit states, returning the states out (the ``step``
signature; under ``tf.distribute`` every replica's training step,
``components.stateful.distribution.replicas``). Old paths: ``compat.py``.
"""

from __future__ import annotations

import contextlib
from typing import Dict, List, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from components.stateful.layers.base import StatefulLayer
from components.stateful.state.protocol import all_layers
from components.stateful.state.protocol import carries_state
from components.stateful.state.protocol import StatefulModelError


def serving_state_layers(model: keras.Model) -> List[keras.layers.Layer]:
  """The twin's state-carrying layers, in the order the stateful model's
  ``stateful_layers`` has them (same architecture, same tracking order)."""
  return [l for l in all_layers(model) if carries_state(l)]


def _layer_state_shapes(layer) -> List[tf.TensorShape]:
  if isinstance(layer, StatefulLayer):
    return list(layer.state_shapes())
  return [tf.TensorShape(s) for s in tf.nest.flatten(layer.cell.state_size)]


def serving_state_shapes(model: keras.Model) -> List[tf.TensorShape]:
  """Per-stream shapes of ``state_0 ..`` (without the stream dimension)."""
  return [s for l in serving_state_layers(model)
          for s in _layer_state_shapes(l)]


@contextlib.contextmanager
def _explicit_states(layers: Sequence[keras.layers.Layer],
                     initial: Sequence[Sequence[tf.Tensor]],
                     captured: Dict[int, List[tf.Tensor]]):
  """Makes each non-stateful layer start from ``initial[i]`` and record
  its final state in ``captured[i]`` while the context is active.

  RNN layers: their own ``call`` runs unchanged (fused kernels, masking,
  dropout flags); only its ``initial_state`` argument and ``return_state``
  are set. ``StatefulLayer``: its external-state hooks.
  """
  # A ``call`` already set on the instance (``resets.step_resets``: per-step
  # resets) runs inside this one and is put back afterwards.
  inner_calls = {}
  for index, (layer, init) in enumerate(zip(layers, initial)):
    if isinstance(layer, StatefulLayer):
      captured[index] = []
      object.__setattr__(layer, '_external_states', list(init))
      object.__setattr__(layer, '_captured_states', captured[index])
      continue
    inner = vars(layer).get('call')
    inner_calls[index] = inner
    if inner is None:
      inner = lambda *a, _layer=layer, **k: type(_layer).call(_layer, *a, **k)

    def call(inputs, *args, _layer=layer, _init=init, _index=index,
             _inner=inner, **kwargs):
      kwargs['initial_state'] = list(_init)
      returns_state = _layer.return_state
      _layer.return_state = True
      try:
        result = _inner(inputs, *args, **kwargs)
      finally:
        _layer.return_state = returns_state
      captured[_index] = list(result[1:])
      return result if returns_state else result[0]

    object.__setattr__(layer, 'call', call)
  try:
    yield
  finally:
    for index, layer in enumerate(layers):
      if isinstance(layer, StatefulLayer):
        object.__setattr__(layer, '_external_states', None)
        object.__setattr__(layer, '_captured_states', None)
      elif inner_calls.get(index) is not None:
        object.__setattr__(layer, 'call', inner_calls[index])
      elif 'call' in vars(layer):
        object.__delattr__(layer, 'call')


def run_with_states(model: keras.Model, features: tf.Tensor,
                    states: Sequence[tf.Tensor], training: bool = False
                   ) -> Tuple[tf.Tensor, List[tf.Tensor]]:
  """Runs a non-stateful model from explicit states.

  The functional form of carried state: the ``step`` signature, and
  training under ``tf.distribute`` (``components.stateful.distribution.replicas``),
  where each replica's lanes carry their state as tensors. Inside a
  ``resets.step_resets`` context the per-step resets apply too.

  Args:
    model: a serving twin (``check_serving_model`` passed).
    features: float32[N, T', F].
    states: ``state_0 ..`` as in the ``step`` signature, each
      float32[N, ...].
    training: passed to the model.

  Returns:
    ``(outputs float32[N, T', K], [final state_0, ...])``.
  """
  layers = serving_state_layers(model)
  per_layer_shapes = [_layer_state_shapes(l) for l in layers]
  total = sum(len(s) for s in per_layer_shapes)
  if len(states) != total:
    raise ValueError(f'{len(states)} states given, the model has {total}')
  per_layer, i = [], 0
  for shapes in per_layer_shapes:
    per_layer.append(list(states[i:i + len(shapes)]))
    i += len(shapes)
  captured: Dict[int, List[tf.Tensor]] = {}
  with _explicit_states(layers, per_layer, captured):
    outputs = model(features, training=training)
  missing = [l.name for j, l in enumerate(layers)
             if len(captured.get(j, [])) != len(per_layer_shapes[j])]
  if missing:
    raise StatefulModelError(
        f'stateful layers {missing} were not called by the model')
  return outputs, [s for j in range(len(layers)) for s in captured[j]]
