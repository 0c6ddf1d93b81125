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
  equally good epochs the later (longer trained) one is kept.
  """

  def __init__(self, model: keras.Model):
    super().__init__(name='best_weights')
    self.score = tf.Variable(float('inf'), trainable=False, name='score')
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
    if not score <= float(self.score):
      return False
    if int(self.epoch) == INITIAL and not score < float(self.score):
      return False  # Training must beat the initial weights, not tie.
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
