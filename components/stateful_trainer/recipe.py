"""A run's training recipe, settled after ``adapt``: how long it trains
(the epochs set, the model module's ``default_epochs``, the epochs rule, or
the budget by convergence: ``TrainConfig.budget``, its plateaus
``selection.Plateau``), whether the carve and the refit apply, where labels
are scored, the objective and the optimizer's settings."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, Optional, Tuple

from components.stateful import carve as carve_lib
from components.stateful import model_spec as ms
from components.stateful import objective as objective_lib
from components.stateful_trainer import model_setup
from components.stateful_trainer import selection
from components.stateful_trainer import settings

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Plan:
  """A run's budget.

  Attributes:
    convergence: the budget by convergence applies (``config.epochs`` is
      then its cap).
    planned_steps: with ``convergence``, the epochs rule's steps: the base
      of the warm-up (``warmup_fraction`` of them), as without it.
    why: how the epochs were chosen (the log, ``history.json``).
  """
  convergence: bool = False
  planned_steps: Optional[int] = None
  floor_epochs: int = 0  # No rate drop or stop before (the epochs rule).
  why: str = 'set'

  def plateau(self, boundaries: Tuple[int, ...] = ()
             ) -> Optional[selection.Plateau]:
    """A fresh ``selection.Plateau`` of the budget by convergence (None
    without it); ``boundaries``: drops to replay."""
    if not self.convergence:
      return None
    return selection.Plateau(
        patience_steps=settings.PATIENCE_STEPS,
        min_epochs=settings.PATIENCE_MIN_EPOCHS,
        factor=settings.RATE_FACTOR,
        max_reductions=settings.RATE_REDUCTIONS, boundaries=boundaries,
        floor_epochs=self.floor_epochs)

  def replay(self, done: Optional[selection.Plateau], steps: int
            ) -> Optional[selection.Plateau]:
    """The refit's plateau: the rate drops ``done`` made before ``steps``,
    replayed by step."""
    if done is None:
      return None
    replay = self.plateau(selection.replay_of(done, steps))
    if replay.boundaries:
      _LOG.info('refit: the rate drops at steps %s, as in the carve run',
                list(replay.boundaries))
    return replay

  def describe(self, config: settings.TrainConfig,
               plateau: Optional[selection.Plateau]) -> Dict[str, Any]:
    """``history.json``'s ``budget``."""
    if plateau is None:
      return {'kind': 'epochs', 'epochs': config.epochs, 'why': self.why}
    return {'kind': 'convergence', 'cap_epochs': config.epochs,
            'patience_steps': plateau.patience_steps,
            'rate_drops_at_steps': plateau.drop_steps(), 'why': self.why}


def plan_budget(config: settings.TrainConfig, module_epochs: Optional[int],
                num_batches: int) -> Tuple[settings.TrainConfig, Plan]:
  """``config`` with its epochs set, and the run's ``Plan``.

  The epochs, in order: as set; the model module's ``default_epochs``;
  with ``budget='convergence'`` and a validation carve, the cap
  (``CAP_FACTOR`` times the epochs rule); else the epochs rule.
  """
  rule = settings.RULE_EPOCHS
  if config.epochs is not None:
    result = config, Plan(why='set')
  elif module_epochs is not None:
    result = (config.replace(epochs=int(module_epochs)),
              Plan(why="the model module's default_epochs"))
    _LOG.info('epochs: %d (unset; the model module\'s default_epochs%s)',
              module_epochs, ': its weights were fitted by adapt'
              if int(module_epochs) == 0 else '')
  elif config.budget == 'convergence' and config.validation_fraction > 0:
    result = (config.replace(epochs=settings.CAP_FACTOR * rule),
              Plan(convergence=True, planned_steps=rule * int(num_batches),
                   floor_epochs=rule, why='the budget by convergence'))
    _LOG.info('budget by convergence: a constant rate while the validation '
              'carve improves; after %d steps (and %d epochs) without, the '
              'rate drops %gx, at most %d times, then training stops; not '
              'before the epochs rule\'s %d epochs, and at most %d (%dx '
              'those)', settings.PATIENCE_STEPS,
              settings.PATIENCE_MIN_EPOCHS, 1 / settings.RATE_FACTOR,
              settings.RATE_REDUCTIONS, rule, settings.CAP_FACTOR * rule,
              settings.CAP_FACTOR)
  else:
    result = (config.replace(epochs=rule), Plan(why='the epochs rule'))
    _LOG.info('epochs: %d (unset; the epochs rule)', rule)
  config, made = result
  if config.budget == 'convergence' and not made.convergence:
    _LOG.info('budget: epochs, not convergence (%s)',
              made.why if made.why != 'the epochs rule' else
              'no validation carve')
  return config, made


@dataclasses.dataclass
class Recipe:
  """The run's training recipe, settled after ``adapt``: the loop's
  settings (epochs and scoring set), the budget, the objective and the
  optimizer's settings."""
  config: settings.TrainConfig
  plan: Plan
  refitting: bool
  objective: objective_lib.Objective
  optimizer: settings.OptimizerConfig


def recipe(args, p, a) -> Recipe:
  """The loop's settings as this run applies them (logged).

  ``args``, ``p``, ``a``: the run's ``TrainerArgs`` and its ``Prepared``
  and ``Adapted`` phases (``run.py``).
  """
  config = args.train
  refitting = settings.refits(config)
  if config.score_initial and not a.fitted:
    # Random initial weights are no candidate: on a small carve one can
    # outscore every trained epoch by chance.
    config = config.replace(score_initial=False)
    if config.validation_fraction > 0:
      _LOG.info('the initial weights are not a candidate of the validation '
                'carve: the model module\'s adapt fitted nothing (no hook, '
                'or an empty summary)')
  if (not a.fitted and config.validation_fraction > 0 and
      config.min_carve_sequences > 0):
    # A handful of held-out sequences cannot choose an epoch (one sequence
    # moves its accuracy by more than an epoch's gain): a model trained by
    # gradient steps from random weights then trains on every sequence for
    # the epoch budget and keeps its last weights.
    held = carve_lib.count_validation_sequences(
        p.train, config.validation_fraction)
    if held < config.min_carve_sequences:
      _LOG.info('no validation carve: %g of the keys would hold %d '
                'sequence(s), fewer than min_carve_sequences=%d; training '
                'on every sequence for the epoch budget, the last weights '
                'kept (no selection, no refit)', config.validation_fraction,
                held, config.min_carve_sequences)
      config = config.replace(validation_fraction=0.0)
      refitting = False
  config, plan = plan_budget(config, a.module_epochs, p.train.num_batches)
  why = 'set'
  if config.label_scoring is None:
    hook = p.hooks.label_scoring
    if hook:
      scoring, why = hook(p.spec), "the model module's label_scoring"
    else:
      scoring, why = model_setup.label_scoring_rule(a.model, p.spec)
    config = dataclasses.replace(config, label_scoring=scoring)
  if p.spec.label_kind == ms.PER_SEQUENCE:
    _LOG.info('per-sequence labels scored in training: %s (%s)',
              config.label_scoring, why)
  optimizer_config = settings.OptimizerConfig.from_hyperparameters(
      settings.optimizer_hyperparameters(p.module, p.spec))
  if config.epochs:
    _LOG.info('optimizer: %s (the run\'s hyperparameters over the model '
              'module\'s optimizer_defaults over the trainer\'s)',
              optimizer_config)
  return Recipe(config=config, plan=plan, refitting=refitting,
                objective=objective_lib.make_objective(p.spec, p.module),
                optimizer=optimizer_config)
