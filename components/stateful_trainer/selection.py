"""Model selection on the validation carve: the best epoch's weights, kept
through checkpoints (early stopping reads them), and the budget by
convergence's plateaus (``Plateau``)."""

from __future__ import annotations

import logging
from typing import List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful_trainer import progress

_LOG = logging.getLogger(__name__)


# ``BestWeights.epoch`` before anything was offered, and for the initial
# weights (scored before the first epoch: "no epoch" is a candidate).
NONE = -2
INITIAL = -1


class BestWeights(tf.Module):
  """The best epoch's weights by validation score (checkpointed with the
  run, so a resumed run keeps the same choice).

  The score is minimised: minus the accuracy when the objective reports one
  (classification), else the loss. Epoch ``INITIAL`` (-1) is the weights
  before training (``TrainConfig.score_initial``); an epoch replaces them
  only with a strictly better score (a tie keeps the initial weights: the
  training did not show it helped). An equal score counts as better, so among
  equally good epochs the later (longer trained) one is kept; with
  ``tolerance`` > 0 so does any score within ``tolerance`` of the best seen
  (``best``), so the kept epoch's ``score`` may be above ``best``.
  """

  def __init__(self, model: keras.Model, tolerance: float = 0.0,
               by: str = 'score'):
    super().__init__(name='best_weights')
    self.tolerance = float(tolerance)
    self.by = by  # ``TrainConfig.select_by``: ``score`` or ``loss``.
    self.score = tf.Variable(float('inf'), trainable=False, name='score')
    # The best score offered so far; equal to ``score`` at tolerance 0.
    self.best = tf.Variable(float('inf'), trainable=False, name='best')
    self.epoch = tf.Variable(NONE, dtype=tf.int64, trainable=False,
                             name='epoch')
    self.stopped = tf.Variable(False, trainable=False, name='stopped')
    # The carve's loss, tracked apart from the score for early stopping:
    # where the score is the accuracy of a small carve (one sequence is
    # several points), it can peak by luck on an early epoch while the loss
    # still falls every epoch.
    self.loss = tf.Variable(float('inf'), trainable=False, name='loss')
    self.loss_epoch = tf.Variable(NONE, dtype=tf.int64, trainable=False,
                                  name='loss_epoch')
    # The last epoch with a strictly better score than any before (a tie,
    # kept as the later epoch, is no progress for the budget by
    # convergence).
    self.gain_epoch = tf.Variable(NONE, dtype=tf.int64, trainable=False,
                                  name='gain_epoch')
    self.weights = [tf.Variable(w, trainable=False, name=f'w{i}')
                    for i, w in enumerate(model.get_weights())]

  @staticmethod
  def score_of(metrics: Mapping[str, float],
               by: str = 'score') -> Tuple[str, float]:
    """``(name, score to minimise)``: minus the accuracy where ``metrics``
    has one and ``by`` is ``score``, else the loss."""
    if by == 'score' and 'accuracy' in metrics:
      return 'accuracy', -float(metrics['accuracy'])
    return 'loss', float(metrics['loss'])

  @classmethod
  def unbeatable(cls, metrics: Mapping[str, float],
                 by: str = 'score') -> bool:
    """Whether no score can be strictly better than that of ``metrics``:
    an accuracy of 1, or a loss of 0 (as float32 holds them)."""
    name, score = cls.score_of(metrics, by)
    return float(np.float32(score)) <= (-1.0 if name == 'accuracy' else 0.0)

  def offer(self, model: keras.Model, metrics: Mapping[str, float],
            epoch: int) -> bool:
    """Keeps ``model``'s weights if ``metrics`` score at least as well as
    the best so far (see the class docstring); True if kept. Also records a
    strictly lower loss (``last_improvement``)."""
    loss = float(np.float32(metrics.get('loss', float('inf'))))
    if loss < float(self.loss):
      self.loss.assign(loss)
      self.loss_epoch.assign(epoch)
    _, score = self.score_of(metrics, self.by)
    score = float(np.float32(score))  # As the variable holds it.
    best = float(self.best)
    if score < best:
      self.gain_epoch.assign(epoch)
    if not score <= best + self.tolerance:
      return False
    if int(self.epoch) == INITIAL and not score < float(self.score):
      return False  # Training must beat the initial weights, not tie.
    self.best.assign(min(best, score))
    self.score.assign(score)
    self.epoch.assign(epoch)
    for var, value in zip(self.weights, model.weights):
      var.assign(value)
    return True

  def last_improvement(self) -> int:
    """The last epoch that improved the score or strictly lowered the loss:
    early stopping counts its patience from there, so training goes on
    while the carve's loss falls even when its accuracy stands still."""
    return max(int(self.epoch), int(self.loss_epoch))

  def last_gain(self) -> int:
    """The last epoch that strictly improved the score or the loss: the
    budget by convergence counts its patience from there (a flat accuracy
    whose ties keep the later epoch is a plateau)."""
    return max(int(self.gain_epoch), int(self.loss_epoch))

  def restore(self, model: keras.Model) -> None:
    model.set_weights([v.numpy() for v in self.weights])


# ``Plateau.after_epoch``'s verdicts.
CONTINUE, REDUCE, STOP = 'continue', 'reduce', 'stop'


class Plateau(tf.Module):
  """The budget by convergence (``TrainConfig.budget='convergence'``): when
  the validation carve stops improving, the rate drops, then training stops.

  After each epoch, ``after_epoch`` counts the optimizer steps since the
  last epoch that improved the carve (``BestWeights.last_gain``: a strictly
  better score or a strictly lower loss) or since the last rate drop,
  whichever is later. When they reach ``patience_steps`` (and at least
  ``min_epochs`` epochs), and ``floor_epochs`` epochs have run: the rate
  drops by ``factor`` while fewer than
  ``max_reductions`` drops were made, else training stops. Patience in steps,
  not epochs: an epoch of a small set is a few steps, of a long one
  hundreds. Checkpointed with the run (a resumed run makes the same
  decisions); ``PlateauRate`` reads ``reductions``.

  With ``boundaries`` (the steps at which an earlier run dropped the rate)
  it replays them instead: the refit trains on the carve run's schedule.
  """

  def __init__(self, *, patience_steps: int, min_epochs: int, factor: float,
               max_reductions: int, boundaries: Tuple[int, ...] = (),
               floor_epochs: int = 0):
    super().__init__(name='plateau')
    self.floor_epochs = int(floor_epochs)
    self.patience_steps = int(patience_steps)
    self.min_epochs = int(min_epochs)
    self.factor = float(factor)
    self.max_reductions = int(max_reductions)
    self.boundaries = tuple(int(b) for b in boundaries)
    self.reductions = tf.Variable(0, dtype=tf.int64, trainable=False,
                                  name='reductions')
    self.since = tf.Variable(INITIAL, dtype=tf.int64, trainable=False,
                             name='since')
    # The global steps at which the rate dropped (-1: not yet).
    self.steps = tf.Variable([-1] * max(1, self.max_reductions),
                             dtype=tf.int64, trainable=False, name='steps')

  def scale(self, step) -> tf.Tensor:
    """The rate's factor at ``step`` (a tensor): ``factor`` to the power of
    the drops made (or replayed up to ``step``)."""
    drops = tf.cast(self.reductions, tf.float32)
    for boundary in self.boundaries:
      drops += tf.cast(tf.cast(step, tf.int64) >= boundary, tf.float32)
    return tf.pow(tf.constant(self.factor, tf.float32), drops)

  def after_epoch(self, epoch: int, last_improvement: int,
                  steps_per_epoch: int, step: int) -> str:
    """``CONTINUE``, ``REDUCE`` (the rate dropped: recorded at ``step``)
    or ``STOP``, after 0-based ``epoch``."""
    quiet = epoch - max(int(last_improvement), int(self.since))
    if (epoch + 1 < self.floor_epochs or quiet < self.min_epochs or
        quiet * int(steps_per_epoch) < self.patience_steps):
      return CONTINUE
    done = int(self.reductions)
    if done >= self.max_reductions:
      return STOP
    self.steps[done].assign(int(step))
    self.reductions.assign_add(1)
    self.since.assign(epoch)
    return REDUCE

  def drop_steps(self) -> List[int]:
    """The global steps at which the rate dropped, in order."""
    return [int(s) for s in self.steps.numpy()[:int(self.reductions)]]


def replay_of(plateau: Optional[Plateau], steps: int) -> Tuple[int, ...]:
  """The drops of ``plateau`` (a finished run's) before global step
  ``steps``: a refit of that many steps replays them."""
  if plateau is None:
    return ()
  return tuple(s for s in plateau.drop_steps() if s < steps)


def after_epoch(best: BestWeights, plateau: Optional[Plateau],
                model: keras.Model, stats, patience: int, steps_per_epoch: int,
                step: int) -> Tuple[bool, Optional[str]]:
  """The validation carve's verdict on an epoch (``stats``, an
  ``EpochStats`` with ``valid`` scored): its weights offered to ``best``
  (logged), then whether training stops.

  Stops, in order: ``no_gain`` (the first epoch neither beat the initial
  weights nor lowered the carve's loss); with ``plateau`` (the budget by
  convergence) its verdict (a rate drop, or ``converged``); else
  ``early_stopping`` after ``patience`` epochs without improvement.

  Returns:
    ``(the weights were kept, the stop reason or None)``.
  """
  epoch = int(stats.epoch)
  improved = best.offer(model, stats.valid, epoch)
  name, _ = best.score_of(stats.valid, best.by)
  _LOG.info('validation (epoch %d): %s%s; streamed during the epoch: '
            '%s', epoch + 1, progress.fmt_metrics(stats.valid),
            (' (best so far)' if float(best.score) <= float(best.best)
             else ' (kept: within selection_tolerance of the best)')
            if improved else
            (f' (best {name}: before training)'
             if int(best.epoch) == INITIAL else
             f' (best {name}: epoch {int(best.epoch) + 1})'),
            progress.fmt_metrics(stats.valid_streamed))
  if int(best.epoch) == INITIAL and best.last_improvement() == INITIAL:
    # The first sign that training does not help: an epoch neither better
    # than the initial (adapted) weights on the carve nor lowering its
    # loss. The epochs after it start from there.
    _LOG.info('stop after epoch %d: no better validation score and no '
              'lower validation loss than the initial weights', epoch + 1)
    return improved, 'no_gain'
  if plateau is not None:
    quiet = epoch - max(best.last_gain(), int(plateau.since))
    verdict = plateau.after_epoch(epoch, best.last_gain(), steps_per_epoch,
                                  step)
    if verdict == REDUCE:
      _LOG.info('the rate drops %gx after epoch %d (step %d): no better '
                'validation score and no lower validation loss for %d '
                'epochs (%d steps); drop %d of %d', 1 / plateau.factor,
                epoch + 1, step, quiet, quiet * steps_per_epoch,
                int(plateau.reductions), plateau.max_reductions)
    elif verdict == STOP:
      _LOG.info('converged after epoch %d: no better validation score and '
                'no lower validation loss for %d steps after the last of %d '
                'rate drops', epoch + 1, quiet * steps_per_epoch,
                plateau.max_reductions)
      return improved, 'converged'
    return improved, None
  if patience and epoch - best.last_improvement() >= patience:
    _LOG.info('early stop after epoch %d: no better validation score and '
              'no lower validation loss for %d epochs', epoch + 1, patience)
    return improved, 'early_stopping'
  return improved, None
