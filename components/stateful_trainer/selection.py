"""Model selection on the validation carve: the best epoch's weights, kept
through checkpoints (early stopping reads them)."""

from __future__ import annotations

from typing import Mapping, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras


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

  def __init__(self, model: keras.Model, tolerance: float = 0.0):
    super().__init__(name='best_weights')
    self.tolerance = float(tolerance)
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
    self.weights = [tf.Variable(w, trainable=False, name=f'w{i}')
                    for i, w in enumerate(model.get_weights())]

  @staticmethod
  def score_of(metrics: Mapping[str, float]) -> Tuple[str, float]:
    if 'accuracy' in metrics:
      return 'accuracy', -float(metrics['accuracy'])
    return 'loss', float(metrics['loss'])

  @classmethod
  def unbeatable(cls, metrics: Mapping[str, float]) -> bool:
    """Whether no score can be strictly better than that of ``metrics``:
    an accuracy of 1, or a loss of 0 (as float32 holds them)."""
    name, score = cls.score_of(metrics)
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
    _, score = self.score_of(metrics)
    score = float(np.float32(score))  # As the variable holds it.
    best = float(self.best)
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

  def restore(self, model: keras.Model) -> None:
    model.set_weights([v.numpy() for v in self.weights])
