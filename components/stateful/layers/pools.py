"""Pools: per-channel statistics of a sequence's past, streamed through the
state protocol (``base.StatefulLayer``; docs/design.md, "The state
protocol").

* ``RunningPool`` — running statistics over the whole history of a
  sequence: ``mean``, ``max``, ``ppv`` (proportion of values above a
  per-channel threshold) and ``head_mean``, carried as a count, sums and
  maxima.
* ``DecayingPool`` — exponentially decaying ``mean`` and ``ppv`` at several
  half-lives (the recent past), carried as decayed weights and sums.

The ``ppv`` thresholds are non-trainable weights fitted by a model's
``adapt``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful.layers.base import PACKAGE
from components.stateful.layers.base import PlainCall
from components.stateful.layers.base import StatefulLayer
from components.stateful.layers.scans import cumulative_max
from components.stateful.layers.scans import doubling_scan
from components.stateful.layers.scans import last_reset
from components.stateful.layers.scans import segmented_cumsum


POOL_STATS = ('mean', 'max', 'ppv', 'head_mean')
# ``RunningPool`` counts values above a threshold by a product with a
# triangle of ones on chunks of at most this many steps (known length), by
# ``tf.cumsum`` on longer ones (the work of the product grows as T'^2).
COUNT_MATMUL_STEPS = 128


def _add_threshold(layer, input_shape) -> None:
  """A pool's channel count and, when it computes ``ppv``, its
  non-trainable per-channel threshold (fitted by the model's ``adapt``)."""
  layer._channels = int(tf.TensorShape(input_shape)[-1])  # pylint: disable=protected-access
  layer.threshold = (layer.add_weight(
      name='threshold', shape=(layer._channels,), trainable=False,  # pylint: disable=protected-access
      initializer='zeros') if 'ppv' in layer.stats else None)


@keras.utils.register_keras_serializable(package=PACKAGE)
class RunningPool(PlainCall, StatefulLayer):
  """Running statistics of each channel over a sequence's history.

  Output at step t, per channel c, for each of ``stats`` in order
  (concatenated on the last axis, stat-major: ``[mean_0..mean_C-1,
  max_0.., ppv_0..]``):

  * ``mean``: mean of ``x[0..t, c]``;
  * ``max``: maximum of ``x[0..t, c]``;
  * ``ppv``: fraction of ``x[0..t, c] > threshold[c]`` (the threshold is a
    non-trainable weight, fitted to data by the model's ``adapt``);
  * ``head_mean``: mean of the sequence's first ``head_steps`` steps seen so
    far, ``x[0..min(t, head_steps - 1), c]`` (how the sequence began).

  State per lane: ``count [1]`` and, per stat, ``[C]`` (sum, maximum,
  positive count). A zero count means a fresh sequence (the carried maximum
  is then ignored), so a zeroed state is a reset.
  """

  def __init__(self, stats: Sequence[str] = ('mean', 'max', 'ppv'),
               stateful: bool = False, head_steps: int = 8, **kwargs):
    super().__init__(stateful=stateful, **kwargs)
    stats = tuple(str(s) for s in stats)
    bad = [s for s in stats if s not in POOL_STATS]
    if not stats or bad or len(set(stats)) != len(stats):
      raise ValueError(f'stats must be distinct names from {POOL_STATS}, got '
                       f'{stats}')
    self.stats = stats
    if int(head_steps) < 1:
      raise ValueError(f'head_steps must be >= 1, got {head_steps}')
    self.head_steps = int(head_steps)

  def build(self, input_shape):
    _add_threshold(self, input_shape)
    super().build(input_shape)

  def state_shapes(self):
    return [tf.TensorShape([1])] + [tf.TensorShape([self._channels])
                                    for _ in self.stats]

  def step(self, inputs, states, resets=None):
    count0, rest = states[0], states[1:]
    steps = tf.range(1, tf.shape(inputs)[1] + 1)
    if resets is None:
      last = fresh = None
      count = count0[:, None, :] + tf.cast(steps, inputs.dtype)[None, :, None]
    else:
      last = last_reset(resets)  # [N, T']
      fresh = (last >= 0)[..., None]  # The sequence started in the chunk.
      count = tf.where(
          fresh, tf.cast(steps[None, :] - last, inputs.dtype)[..., None],
          count0[:, None, :] + tf.cast(steps, inputs.dtype)[None, :, None])

    def running_sum(values, carried, counts=False):
      """Sums since the sequence start: the carried sum plus the chunk's
      cumulative sum, or the cumulative sum since the last reset.
      ``counts``: ``values`` are 0 or 1, so every partial sum is an integer
      and exact in any order: on a short chunk of known length a product
      with a triangle of ones (several times faster than ``tf.cumsum``,
      the same bits)."""
      if last is None:
        length = values.shape[1]
        if counts and length is not None and length <= COUNT_MATMUL_STEPS:
          ones = tf.constant(np.tril(np.ones((length, length), np.float32)),
                             values.dtype)
          return carried[:, None, :] + tf.linalg.matmul(ones[None], values)
        return carried[:, None, :] + tf.cumsum(values, axis=1)
      total = segmented_cumsum(values, tf.maximum(last, 0))
      return tf.where(fresh, total, carried[:, None, :] + total)

    outputs, new = [], [count[:, -1]]
    for name, carried in zip(self.stats, rest):
      if name == 'mean':
        total = running_sum(inputs, carried)
        outputs.append(total / count)
        new.append(total[:, -1])
      elif name == 'max':
        empty = tf.equal(count0, 0.0)  # [N, 1]: no carried history.
        carry = tf.where(empty, tf.fill(tf.shape(carried), -np.inf),
                         carried)[:, None, :]
        if last is None:
          running = tf.maximum(cumulative_max(inputs), carry)
        else:
          running = cumulative_max(inputs, start=tf.maximum(last, 0))
          running = tf.where(fresh, running, tf.maximum(running, carry))
        outputs.append(running)
        new.append(running[:, -1])
      elif name == 'head_mean':
        position = count - 1.0  # 0-based step of the sequence, [N, T', 1].
        inside = tf.cast(position < self.head_steps, inputs.dtype)
        total = running_sum(inputs * inside, carried)
        outputs.append(total / tf.minimum(count, float(self.head_steps)))
        new.append(total[:, -1])
      else:  # ppv
        above = tf.cast(inputs > self.threshold, inputs.dtype)
        total = running_sum(above, carried, counts=True)
        outputs.append(total / count)
        new.append(total[:, -1])
    return tf.concat(outputs, axis=-1), new

  def compute_output_shape(self, input_shape):
    shape = tf.TensorShape(input_shape)
    return shape[:-1].concatenate([shape[-1] * len(self.stats)])

  def get_config(self):
    return {**super().get_config(), 'stats': list(self.stats),
            'head_steps': self.head_steps}


DECAYING_STATS = ('mean', 'ppv')


@keras.utils.register_keras_serializable(package=PACKAGE)
class DecayingPool(PlainCall, StatefulLayer):
  """Exponentially decaying statistics of each channel: the recent past.

  ``RunningPool`` describes a sequence's whole history, which on a stream
  whose content changes is the mixture of everything seen so far; this
  layer forgets. For each half-life h of ``half_lives`` (decay ``a = 0.5 **
  (1 / h)``: a step h steps back weighs half as much as the current one) and
  each of ``stats``, per channel c, the output at step t is the weighted
  mean ``sum_s a^(t-s) v[s, c] / sum_s a^(t-s)`` over the sequence's steps
  s <= t, with ``v = x`` (``mean``) or ``v = x > threshold[c]`` (``ppv``: a
  recent proportion of positive values, MiniRocket's PPV with a memory; the
  threshold is a non-trainable weight fitted by the model's ``adapt``).
  Layout (last axis): half-life major, then stat, then channel.

  State per lane, per half-life: the decayed weight ``[1]`` and the decayed
  sums ``[len(stats) * C]``; a zero weight is a fresh sequence, so a zeroed
  state is a reset. Over a chunk the linear recurrence ``S_t = a S_{t-1} +
  v_t`` is computed by a log-depth scan (``scans.doubling_scan``) of
  ``(decay, value)`` pairs, the carried sums entering through the scanned
  decay products; a reset inside the chunk is a decay of 0 at its step.
  """

  def __init__(self, stats: Sequence[str] = ('mean',),
               half_lives: Sequence[float] = (16.0, 256.0),
               stateful: bool = False, **kwargs):
    super().__init__(stateful=stateful, **kwargs)
    stats = tuple(str(s) for s in stats)
    bad = [s for s in stats if s not in DECAYING_STATS]
    if not stats or bad or len(set(stats)) != len(stats):
      raise ValueError(f'stats must be distinct names from {DECAYING_STATS}, '
                       f'got {stats}')
    lives = tuple(float(h) for h in half_lives)
    if not lives or any(not np.isfinite(h) or h <= 0 for h in lives):
      raise ValueError(f'half_lives must be positive numbers, got '
                       f'{half_lives}')
    self.stats = stats
    self.half_lives = lives

  def build(self, input_shape):
    _add_threshold(self, input_shape)
    super().build(input_shape)

  def state_shapes(self):
    width = 1 + len(self.stats) * self._channels
    return [tf.TensorShape([width]) for _ in self.half_lives]

  def step(self, inputs, states, resets=None):
    values = [inputs if name == 'mean' else
              tf.cast(inputs > self.threshold, inputs.dtype)
              for name in self.stats]
    # [N, T', 1 + S * C]: the weight (a ones channel) and the values.
    ones = tf.ones_like(inputs[..., :1])
    b = tf.concat([ones] + values, axis=-1)
    keep = (None if resets is None else
            (1.0 - tf.cast(resets > 0, inputs.dtype))[..., None])
    outputs, new = [], []
    for h, carried in zip(self.half_lives, states):
      decay = tf.fill(tf.shape(ones), tf.constant(0.5 ** (1.0 / h),
                                                  inputs.dtype))
      if keep is not None:
        decay = decay * keep
      product, total = doubling_scan(
          (decay, b), lambda later, earlier: (
              later[0] * earlier[0], later[1] + later[0] * earlier[1]),
          (1.0, 0.0))
      total = total + product * carried[:, None, :]
      outputs.append(total[..., 1:] / total[..., :1])
      new.append(total[:, -1])
    return tf.concat(outputs, axis=-1), new

  def compute_output_shape(self, input_shape):
    shape = tf.TensorShape(input_shape)
    return shape[:-1].concatenate(
        [shape[-1] * len(self.stats) * len(self.half_lives)])

  def get_config(self):
    return {**super().get_config(), 'stats': list(self.stats),
            'half_lives': list(self.half_lives)}
