"""The refit phase: after the validation carve chose an epoch, training
again from the same initial weights on every training sequence (the carve
included) for that many epochs, kept unless it fails on the carve
(``check_refit``)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import tf_keras as keras

from components.stateful import model_io
from components.stateful_trainer import model_setup
from components.stateful_trainer import progress
from components.stateful_trainer import selection as selection_lib
from components.stateful_trainer import training
from components.stateful_trainer.checkpoints import REFIT_SUBDIR

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Trained:
  """The model to export and how it was trained.

  Attributes:
    model: the weights to export.
    result: the last ``training.fit`` (the refit's, when it ran).
    selection: the carve run's result when a refit followed it, else None.
    refit_check: ``check_refit``'s record (``history.json``), or None.
  """
  model: keras.Model
  result: training.FitResult
  selection: Optional[training.FitResult] = None
  refit_check: Optional[Dict[str, Any]] = None


def check_refit(model: keras.Model, chosen: List[np.ndarray],
                 chosen_fit: training.FitResult,
                 refit: training.FitResult,
                 by: str = 'score') -> Optional[Dict[str, Any]]:
  """Keeps the refit unless it fails on the validation carve.

  The refit trained on every sequence, the carve's included, for as many
  epochs as the carve chose; it should score at least as well there as the
  chosen epoch's weights, which never saw those sequences. Strictly worse
  means the longer run on more data went astray (it diverged, or stayed on
  a plateau the carve run left): ``model`` gets the chosen weights back.
  Both are scored by the same pass after training (``FitResult.carve``),
  by ``by`` (``TrainConfig.select_by``, as the carve chose the epoch).

  Returns:
    What was compared and kept (``history.json``'s ``refit_check``), or
    None when either was not scored (an unfinished run).
  """
  if chosen_fit.carve is None or refit.carve is None:
    return None
  name, chosen_score = selection_lib.BestWeights.score_of(chosen_fit.carve,
                                                          by)
  _, refit_score = selection_lib.BestWeights.score_of(refit.carve, by)
  # float32, as the metrics accumulate: a tie is no failure.
  failed = bool(np.float32(refit_score) > np.float32(chosen_score))
  if failed:
    model.set_weights(chosen)
    _LOG.warning(
        'refit: its validation-carve %s (%s) is worse than the chosen '
        "epoch's (%s), though it trained on the carve: exporting the chosen "
        "epoch's weights instead", name, progress.fmt_metrics(refit.carve),
        progress.fmt_metrics(chosen_fit.carve))
  else:
    _LOG.info("refit kept: its validation-carve %s is at least the chosen "
              "epoch's (%s; chosen %s)", name,
              progress.fmt_metrics(refit.carve),
              progress.fmt_metrics(chosen_fit.carve))
  return {'score': name, 'chosen': dict(chosen_fit.carve),
          'refit': dict(refit.carve),
          'kept': 'chosen' if failed else 'refit'}



def refit(args, p, a, r, fit: Callable[..., training.FitResult],
          carve_run: training.FitResult,
          plateau: Optional[selection_lib.Plateau],
          phases: progress.Phases) -> Trained:
  """Phase ``refit`` (see the module docstring) where the recipe refits and
  the carve run finished with a chosen epoch; else the carve run's model.

  ``args``, ``p``, ``a``, ``r``: the run's ``TrainerArgs``, ``Prepared``,
  ``Adapted`` and ``Recipe`` (``run.py``); ``fit``: its ``fitter``.
  """
  if not (r.refitting and carve_run.finished and
          carve_run.best_epoch is not None):
    return Trained(model=a.model, result=carve_run)
  chosen = a.model.get_weights()
  epochs = carve_run.best_epoch + 1
  adapted = a.shared is not None and a.shared.weights is not None
  if epochs == 0:
    _LOG.info('refit: the validation carve chose the initial weights (no '
              'epoch improved on them); %s', 'no epoch, from the weights '
              "adapt's one pass fitted on every training sequence"
              if adapted else 'adapting again on every training sequence, '
              'no epoch' if a.hold_out else
              'no epoch on every training sequence')
  else:
    _LOG.info('refit: the validation carve chose epoch %d; training again '
              'from the same initial weights on every training sequence '
              'for %d epochs', epochs, epochs)
  if a.hold_out and not adapted:
    model, _ = model_setup.build(p.module, p.spec, p.train, args.train.seed,
                                 any_length=a.any_length, shard=a.shard)
  else:
    keras.utils.set_random_seed(args.train.seed)
    model = model_io.build_stateful(
        p.module, p.spec.replace(num_unroll=None) if a.any_length else p.spec)
    model.set_weights(a.shared.weights if adapted else a.initial_weights)
  replay = r.plan.replay(plateau, epochs * p.train.num_batches)
  result = fit(model, r.config.replace(
      epochs=epochs, validation_fraction=0.0, early_stopping_patience=0),
               REFIT_SUBDIR, r.config.validation_fraction, replay)
  check = check_refit(model, chosen, carve_run, result, r.config.select_by)
  phases.end('refit', less=result.validation_seconds,
             note=f'{epochs} epochs; its carve score apart')
  phases.add('validation', result.validation_seconds, quiet=True)
  return Trained(model=model, result=result, selection=carve_run,
                 refit_check=check)
