"""The Keras 2 optimizer of a run, from its ``OptimizerConfig``."""

from __future__ import annotations

from typing import Optional

import tf_keras as keras

from components.stateful_trainer.settings import OptimizerConfig


def make_optimizer(config: OptimizerConfig,
                   total_steps: Optional[int] = None
                  ) -> keras.optimizers.Optimizer:
  """A Keras 2 optimizer (not yet built; ``fit`` builds it).

  ``total_steps``: the run's training steps, for the ``cosine`` schedule.
  """
  rate = config.learning_rate
  if config.lr_schedule == 'cosine':
    rate = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, int(total_steps or 1)),
        alpha=0.01)
  kwargs = dict(learning_rate=rate, jit_compile=False)
  if config.optimizer == 'adam':
    return keras.optimizers.Adam(**kwargs)
  if config.optimizer == 'sgd':
    return keras.optimizers.SGD(momentum=config.momentum, **kwargs)
  if config.optimizer == 'rmsprop':
    return keras.optimizers.RMSprop(momentum=config.momentum, **kwargs)
  return keras.optimizers.Adagrad(**kwargs)
