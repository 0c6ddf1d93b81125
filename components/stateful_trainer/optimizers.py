"""The Keras 2 optimizer of a run, from its ``OptimizerConfig``."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tf_keras as keras

from components.stateful_trainer.settings import OptimizerConfig


@keras.utils.register_keras_serializable(package='stateful_trainer')
class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
  """The rate of ``after`` (a number or a schedule) scaled by ``min(1,
  (step + 1) / steps)``: a linear ramp over the first ``steps`` steps."""

  def __init__(self, after, steps: int):
    super().__init__()
    self.after = after
    self.steps = int(steps)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    ramp = tf.minimum(1.0, (step + 1.0) / float(self.steps))
    base = self.after(step) if callable(self.after) else tf.constant(
        float(self.after), tf.float32)
    return ramp * base

  def get_config(self):
    after = (keras.optimizers.schedules.serialize(self.after)
             if callable(self.after) else float(self.after))
    return {'after': after, 'steps': self.steps}


class PlateauRate(keras.optimizers.schedules.LearningRateSchedule):
  """``peak`` scaled by ``plateau.scale(step)``: the budget by
  convergence's rate (``selection.Plateau``), constant until the carve
  stops improving, then dropping by its factor."""

  def __init__(self, peak: float, plateau):
    super().__init__()
    self.peak = float(peak)
    self.plateau = plateau

  def __call__(self, step):
    return self.peak * self.plateau.scale(step)

  def get_config(self):
    return {'peak': self.peak, 'drops': int(self.plateau.reductions),
            'replayed': list(self.plateau.boundaries)}


def learning_rate(config: OptimizerConfig, total_steps: Optional[int],
                  plateau=None):
  """The rate (a number) or schedule of ``config`` over ``total_steps``.

  ``total_steps`` None (a run of unknown length): the constant
  ``learning_rate``, without the schedule or the warm-up, which are
  fractions of the run. ``plateau`` (a ``selection.Plateau``, the budget by
  convergence): its ``PlateauRate`` in place of ``lr_schedule``, the
  warm-up over ``total_steps`` (the planned steps) as before.
  """
  rate = config.learning_rate
  if total_steps is None:
    return rate
  total = max(1, int(total_steps))
  if plateau is not None:
    rate = PlateauRate(config.learning_rate, plateau)
  elif config.lr_schedule == 'cosine':
    rate = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=total, alpha=0.01)
  warmup = int(round(config.warmup_fraction * total))
  if warmup > 0:
    rate = WarmUp(rate, warmup)
  return rate


# Variables that weight decay leaves alone (substrings of their names):
# biases, LayerNorm's scale and offset, the linear recurrence's eigenvalue
# parameters and its skip weights.
NO_DECAY = ('bias', 'gamma', 'beta', 'nu_log', 'theta_log', '/D:')


def make_optimizer(config: OptimizerConfig,
                   total_steps: Optional[int] = None, plateau=None
                  ) -> keras.optimizers.Optimizer:
  """A Keras 2 optimizer (not yet built; ``fit`` builds it).

  ``total_steps``: the run's training steps, for the ``cosine`` schedule
  and the warm-up (``warmup_fraction`` of them); None: a constant rate.
  ``plateau``: see ``learning_rate``.
  """
  kwargs = dict(learning_rate=learning_rate(config, total_steps, plateau),
                jit_compile=False)
  if config.weight_decay:
    kwargs['weight_decay'] = float(config.weight_decay)
  if config.optimizer == 'adam':
    optimizer = keras.optimizers.Adam(**kwargs)
  elif config.optimizer == 'sgd':
    optimizer = keras.optimizers.SGD(momentum=config.momentum, **kwargs)
  elif config.optimizer == 'rmsprop':
    optimizer = keras.optimizers.RMSprop(momentum=config.momentum, **kwargs)
  else:
    optimizer = keras.optimizers.Adagrad(**kwargs)
  if config.weight_decay:
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
  return optimizer
