"""Element-wise layers: per-step, per-channel maps (no time mixing, no
state).

* ``SignedLog`` — ``sign(x) log(1 + |x|)``.
* ``Standardize`` — ``(x - center) / scale`` with non-trainable,
  data-fitted center and scale.
* ``LabelUnits`` — standardised regression outputs back in label units
  (appended by ``model_io`` when the spec standardises its labels).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful.layers.base import PACKAGE
from components.stateful.layers.base import PlainCall


@keras.utils.register_keras_serializable(package=PACKAGE)
class SignedLog(PlainCall, keras.layers.Layer):
  """``sign(x) * log(1 + |x|)``, per step and channel (no time mixing)."""

  def call(self, inputs):
    return tf.sign(inputs) * tf.math.log1p(tf.abs(inputs))


@keras.utils.register_keras_serializable(package=PACKAGE)
class Standardize(PlainCall, keras.layers.Layer):
  """``(x - center) / scale`` per channel (``inverse``: ``x * scale +
  center``); both non-trainable, set by ``set_statistics`` (the default
  model's ``adapt``). Starts as identity."""

  def __init__(self, inverse: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.inverse = bool(inverse)

  def build(self, input_shape):
    channels = int(tf.TensorShape(input_shape)[-1])
    self.center = self.add_weight(name='center', shape=(channels,),
                                  trainable=False, initializer='zeros')
    self.scale = self.add_weight(name='scale', shape=(channels,),
                                 trainable=False, initializer='ones')
    super().build(input_shape)

  def set_statistics(self, center: np.ndarray, scale: np.ndarray) -> None:
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    self.center.assign(np.asarray(center, np.float32))
    self.scale.assign(np.asarray(scale, np.float32))

  def call(self, inputs):
    if self.inverse:
      return inputs * self.scale + self.center
    return (inputs - self.center) / self.scale

  def get_config(self):
    return {**super().get_config(), 'inverse': self.inverse}


@keras.utils.register_keras_serializable(package=PACKAGE)
class LabelUnits(PlainCall, keras.layers.Layer):
  """``y = x * spread + center``: standardised outputs back in label units
  (fixed numbers from the spec, not weights, so a model and its serving twin
  keep the same weights)."""

  def __init__(self, center: float, spread: float, **kwargs):
    super().__init__(**kwargs)
    self.center = float(center)
    self.spread = float(spread)

  def call(self, inputs):
    return inputs * self.spread + self.center

  def get_config(self):
    return {**super().get_config(), 'center': self.center,
            'spread': self.spread}
