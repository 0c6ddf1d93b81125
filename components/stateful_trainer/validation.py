"""Scoring the validation carve: one pass over its own batches, no update.

``CarveScorer`` holds a run's carve laid out once per fraction
(``carve.carve_batches``) and its evaluation step compiled once per model,
shared by the run's ``fit`` calls (the carve run and the refit);
``_validate_only`` is the pass (state zeroed before and after).
``training.fit`` scores the carve through it.

Shapes: B lanes, T steps per segment.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Dict, List, Optional, Tuple

import tf_keras as keras

from components.stateful import carve as carve_lib
from components.stateful.batches import BatchSource
from components.stateful.distribution import replicas
from components.stateful.objective import metric_results
from components.stateful.objective import Objective
from components.stateful.objective import reset_metrics
from components.stateful.steps import StepFunctions

# The loop's logger: the carve's passes are the training loop's.
_LOG = logging.getLogger('components.stateful_trainer.training')


def _validate_only(model: keras.Model, objective: Objective,
                   carve: carve_lib.CarveBatches, valid_metrics,
                   lanes: Optional[replicas.ReplicaLanes] = None,
                   steps: Optional[StepFunctions] = None
                  ) -> Dict[str, float]:
  """The validation carve's metrics of the current weights: one pass over
  the carve's own batches (``carve.carve_batches``), no update (state
  zeroed before and after).

  ``steps``: step functions compiled for ``valid_metrics`` by an earlier
  call (``replicas.compile_for``); compiled here when None.
  """
  if steps is None:
    steps = replicas.compile_for(model, None, objective,
                                 eval_metrics=valid_metrics, lanes=lanes)
  reset_metrics(valid_metrics)
  steps.zero_all()
  for batch in carve.batches:
    steps.eval(batch)
  steps.zero_all()
  results = metric_results(valid_metrics)
  reset_metrics(valid_metrics)
  return results


class CarveScorer:
  """The validation carve's scoring passes of one run (``_validate_only``),
  shared by its ``fit`` calls (the carve run and the refit: ``run.fitter``).

  The carve's batches are laid out once per fraction, on first use
  (``carve.carve_batches``), and the evaluation step compiled once per
  model. In one process, a model with the weights' shapes of the first
  one scored (the refit's, built from the same module and spec) is scored
  through the first one's compiled step: its weights are copied in for
  the pass and the first model's put back after it, so the run traces the
  step once. Under a strategy each ``fit`` scores its own serving twin,
  compiled for it (``lanes``).

  Args:
    train: the train split.
    objective: the run's loss and metrics.
  """

  def __init__(self, train: BatchSource, objective: Objective):
    self.train = train
    self.objective = objective
    self.layouts: Dict[float, carve_lib.CarveBatches] = {}
    # (model, its metrics, its compiled steps), the first one first.
    self._compiled: List[Tuple[keras.Model, list, StepFunctions]] = []

  def batches(self, fraction: float) -> carve_lib.CarveBatches:
    """The carve of ``fraction``, laid out on the first call."""
    if fraction not in self.layouts:
      started = time.perf_counter()
      self.layouts[fraction] = carve = carve_lib.carve_batches(
          self.train, fraction)
      _LOG.info('validation carve (%g of the keys): %d sequences laid out '
                'in %d batches of their own (the split has %d) [%.1fs]',
                fraction, carve.num_sequences, len(carve.batches),
                carve.source_batches, time.perf_counter() - started)
    return self.layouts[fraction]

  def score(self, model: keras.Model, fraction: float,
            lanes: Optional[replicas.ReplicaLanes] = None
           ) -> Dict[str, float]:
    """The carve's metrics of ``model``'s weights (one pass, no update)."""
    carve = self.batches(fraction)
    for known, metrics, steps in self._compiled:
      if known is model:
        return _validate_only(model, self.objective, carve, metrics, lanes,
                              steps)
    if lanes is None and self._compiled and _same_shapes(
        self._compiled[0][0], model):
      known, metrics, steps = self._compiled[0]
      own = known.get_weights()
      known.set_weights(model.get_weights())
      try:
        return _validate_only(known, self.objective, carve, metrics, None,
                              steps)
      finally:
        known.set_weights(own)
    with (lanes.strategy.scope() if lanes else contextlib.nullcontext()):
      metrics = self.objective.new_metrics()
    steps = replicas.compile_for(model, None, self.objective,
                                 eval_metrics=metrics, lanes=lanes)
    self._compiled.append((model, metrics, steps))
    return _validate_only(model, self.objective, carve, metrics, lanes,
                          steps)


def _same_shapes(a: keras.Model, b: keras.Model) -> bool:
  """Whether ``b``'s weights fit ``a`` (same class, count, shapes, dtypes)."""
  return type(a) is type(b) and [
      (tuple(w.shape), w.dtype) for w in a.weights] == [
          (tuple(w.shape), w.dtype) for w in b.weights]

