"""Step set-up: a model's compiled steps (``steps.compile_steps``) with the
optimizer its hyperparameters name and its module's objective, as the
trainer builds them."""

from __future__ import annotations

from typing import Mapping, Optional


def compiled_steps(model, spec, module,
                   hyperparameters: Optional[Mapping] = None, *,
                   total_steps: Optional[int] = None, build: bool = False,
                   eval_metrics: bool = False):
  """``compile_steps(model, optimizer, objective, train metrics[, eval
  metrics])``: the optimizer from ``hyperparameters`` (default: the
  spec's), built on the model's variables first when ``build``."""
  from components.stateful import objective as objective_lib  # pylint: disable=g-import-not-at-top
  from components.stateful import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import optimizers  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import settings  # pylint: disable=g-import-not-at-top
  config = settings.OptimizerConfig.from_hyperparameters(
      spec.hyperparameters if hyperparameters is None else hyperparameters)
  optimizer = (optimizers.make_optimizer(config) if total_steps is None else
               optimizers.make_optimizer(config, total_steps=total_steps))
  if build:
    optimizer.build(model.trainable_variables)
  objective = objective_lib.make_objective(spec, module)
  metrics = [objective.new_metrics()] + (
      [objective.new_metrics()] if eval_metrics else [])
  return steps_lib.compile_steps(model, optimizer, objective, *metrics)


def trainer_fit(model, spec, module, train, *, epochs: int, seed: int,
                after_step=None):
  """``training.fit`` as the trainer runs it (the spec's optimizer, the
  module's objective), no eval split or validation carve, no logging."""
  from components.stateful import objective as objective_lib  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import optimizers  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import settings  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import training  # pylint: disable=g-import-not-at-top
  return training.fit(
      model, optimizer=optimizers.make_optimizer(
          settings.OptimizerConfig.from_hyperparameters(
              spec.hyperparameters)),
      objective=objective_lib.make_objective(spec, module), train=train,
      eval_source=None, after_step=after_step,
      config=settings.TrainConfig(epochs=epochs, seed=seed,
                                  log_every_n_steps=0,
                                  validation_fraction=0.0))
