"""The passes of the default conv model's ``adapt`` (``conv_adapt.py``)
over the batches: one traced function of the stateful model (``runner``),
run over the batches in lane order (``stream``), and the steps a batch's
weights select (``weighted_steps``, ``all_weight``).
"""

from typing import Any, Iterable, Iterator, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful import steps as steps_lib
from components.stateful.state import protocol as state


def runner(model: keras.Model, outputs: Sequence[tf.Tensor]):
  """``run(features, reset) -> [outputs]`` of the stateful ``model`` on
  one batch, compiled (traced on its first call): one function for both
  passes, which read different ``outputs`` of it."""
  probe = keras.Model(model.inputs, list(outputs))

  @tf.function(autograph=False)
  def run(features, reset):
    return steps_lib.run_model(probe, features, reset, training=False)

  return run


def stream(model: keras.Model, run, batches: Iterable[Mapping[str, Any]]
          ) -> Iterator[Tuple[Mapping[str, Any], Sequence[tf.Tensor]]]:
  """Runs the stateful ``model`` over ``batches`` in lane order (every
  batch: the state must follow every step) and yields each batch with
  ``run``'s outputs for it (``runner``; tensors, ``[B, T, C]`` each); all
  state is zeroed before and after."""
  state.zero_all(model)
  try:
    for batch in batches:
      yield batch, run(tf.constant(batch['features']),
                       tf.constant(batch['reset']))
  finally:
    state.zero_all(model)


def weighted_steps(weight) -> np.ndarray:
  """Positions (in ``[B * T]``, lane order) of the steps ``weight`` [B, T]
  weights."""
  return np.flatnonzero(np.asarray(weight) > 0)


def all_weight(batch: Mapping[str, Any]) -> np.ndarray:
  """Every labelled step's weight: the carve's (``carve_weight``, zero
  outside it) and the others' (``label_weight``, zero in it); their sum is
  the split's own label weight, exactly."""
  return np.asarray(batch['label_weight']) + np.asarray(batch['carve_weight'])
