"""Running scans along time for the stateful layers: exact running maxima
and sums that may restart inside a chunk (at resets), and where the last
reset was. Plain TensorFlow on ``[N, T, C]``; the layers in ``layers.py``
build on them.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf


def _scan(x: tf.Tensor, combine, fill: float,
          start: Optional[tf.Tensor]) -> tf.Tensor:
  """Inclusive running ``combine`` along axis 1 of ``x`` [N, T, C], by
  log-depth doubling: after the pass with shift s every position holds the
  combination of the 2s values ending at it (``fill`` before the first).
  ``start`` (int32[N, T], optional): the first step each position may read,
  so that the scan restarts there (a segmented scan).
  """
  length = tf.shape(x)[1]
  pad = tf.fill(tf.shape(x), tf.constant(fill, x.dtype))
  steps = tf.range(length)[None, :]

  def body(shift, y):
    shifted = tf.concat([pad[:, :shift], y[:, :length - shift]], axis=1)
    if start is not None:
      inside = (steps - shift >= start)[..., None]
      shifted = tf.where(inside, shifted, pad)
    return shift * 2, combine(y, shifted)

  _, y = tf.while_loop(lambda shift, _: shift < length, body,
                       [tf.constant(1), x],
                       shape_invariants=[tf.TensorShape([]), x.shape])
  return y


def cumulative_max(x: tf.Tensor, axis: int = 1,
                   start: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Running maximum along ``axis`` (static or dynamic length), exact;
  restarting at ``start`` (int32[N, T]) when given (see ``_scan``)."""
  if axis != 1:
    raise ValueError('cumulative_max supports axis=1 ([N, T, C])')
  return _scan(x, tf.maximum, -np.inf, start)


def segmented_cumsum(x: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
  """Running sum along axis 1 of ``x`` [N, T, C] from ``start`` [N, T]
  (the first step each position sums from). Summed directly, never as a
  difference of two running sums, which would lose the digits of a short
  sequence after a long one."""
  return _scan(x, tf.add, 0.0, start)


def last_reset(resets: tf.Tensor) -> tf.Tensor:
  """int32[N, T']: the index of the last reset at or before each step of
  the chunk, -1 where the chunk has none yet (``resets`` float32[N, T'])."""
  steps = tf.range(tf.shape(resets)[1], dtype=tf.float32)[None, :]
  marked = tf.where(resets > 0, steps + tf.zeros_like(resets),
                    -tf.ones_like(resets))
  return tf.cast(cumulative_max(marked[..., None])[..., 0], tf.int32)
