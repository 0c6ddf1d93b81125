"""Step set-up as the trainer does it: a model's compiled steps, its fit
(``training.fit``) and a whole trainer run (``trainer_run.run``) on a
benchmark's batches."""

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


def trainer_args(batches: str, work: str, train: Optional[Mapping] = None,
                 **kwargs):
  """``TrainerArgs`` on ``batches``' train split (no eval split): the model
  in ``work/model`` (SavedModel in ``Format-Serving`` below it), the run's
  files in ``work/run``; ``train``: ``TrainConfig`` fields (no step logs
  unless given); ``kwargs``: more ``TrainerArgs`` fields."""
  from components.stateful_trainer import run as trainer_run  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import settings  # pylint: disable=g-import-not-at-top
  return trainer_run.TrainerArgs(
      batches_uri=batches, model_uri=f'{work}/model',
      serving_model_dir=f'{work}/model/Format-Serving',
      model_run_dir=f'{work}/run', eval_split=None,
      train=settings.TrainConfig(**{'log_every_n_steps': 0, **(train or {})}),
      **kwargs)


def run_trainer(batches: str, work: str, train: Optional[Mapping] = None,
                **kwargs):
  """``trainer_run.run(trainer_args(...))``: the trainer as the pipeline
  runs it."""
  from components.stateful_trainer import run as trainer_run  # pylint: disable=g-import-not-at-top
  return trainer_run.run(trainer_args(batches, work, train, **kwargs))
