"""How long a run trains: the epochs (set, the model module's
``default_epochs`` or the epochs rule) or the budget by convergence
(``TrainConfig.budget``; its plateaus are ``selection.Plateau``)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, Optional, Tuple

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
        max_reductions=settings.RATE_REDUCTIONS, boundaries=boundaries)

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


def plan(config: settings.TrainConfig, module_epochs: Optional[int],
         num_sequences: int, num_batches: int
        ) -> Tuple[settings.TrainConfig, Plan]:
  """``config`` with its epochs set, and the run's ``Plan``.

  The epochs, in order: as set; the model module's ``default_epochs``;
  with ``budget='convergence'`` and a validation carve, the cap
  (``CAP_FACTOR`` times the epochs rule); else the epochs rule.
  """
  rule = settings.epochs_rule(num_sequences)
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
                   why='the budget by convergence'))
    _LOG.info('budget by convergence: a constant rate while the validation '
              'carve improves; after %d steps (and %d epochs) without, the '
              'rate drops %gx, at most %d times, then training stops; the '
              'cap is %d epochs (%dx the epochs rule\'s %d for %d training '
              'sequences)', settings.PATIENCE_STEPS,
              settings.PATIENCE_MIN_EPOCHS, 1 / settings.RATE_FACTOR,
              settings.RATE_REDUCTIONS, settings.CAP_FACTOR * rule,
              settings.CAP_FACTOR, rule, num_sequences)
  else:
    result = (config.replace(epochs=rule), Plan(why='the epochs rule'))
    _LOG.info('epochs: %d (unset; the epochs rule for %d training sequences: '
              '%d sequences seen, %d to %d epochs)', rule, num_sequences,
              settings.EPOCHS_TARGET_EXAMPLES, settings.EPOCHS_MIN,
              settings.EPOCHS_MAX)
  config, made = result
  if config.budget == 'convergence' and not made.convergence:
    _LOG.info('budget: epochs, not convergence (%s)',
              made.why if made.why != 'the epochs rule' else
              'no validation carve')
  return config, made
