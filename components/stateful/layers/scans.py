"""Running scans along time for the stateful layers: exact running maxima
and sums that may restart inside a chunk (at resets), where the last reset
was, and the generic doubling scan they and the linear recurrence
(``lru.py``) are built on. Plain TensorFlow on ``[N, T, C]``; the layers in ``layers.py``
build on them.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf


def doubling_scan(xs: Tuple[tf.Tensor, ...], combine,
                  fills: Tuple[float, ...],
                  start: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, ...]:
  """Inclusive scan along axis 1 of the tensors ``xs`` (each [N, T, C], one
  element of the scan being one slice of each) under the associative
  ``combine(later, earlier) -> tuple``, by log-depth doubling (a
  Hillis-Steele scan): after the pass with shift s every position holds the
  combination of the 2s elements ending at it; positions before the first
  read ``fills`` (the identity). ceil(log2 T) passes, no loop over steps.
  ``start`` (int32[N, T], optional): the first step each position may read,
  so that the scan restarts there (a segmented scan).
  """
  length = tf.shape(xs[0])[1]
  pads = tuple(tf.fill(tf.shape(x), tf.constant(f, x.dtype))
               for x, f in zip(xs, fills))
  steps = tf.range(length)[None, :]

  def body(shift, *ys):
    shifted = []
    for y, pad in zip(ys, pads):
      earlier = tf.concat([pad[:, :shift], y[:, :length - shift]], axis=1)
      if start is not None:
        inside = (steps - shift >= start)[..., None]
        earlier = tf.where(inside, earlier, pad)
      shifted.append(earlier)
    return (shift * 2,) + tuple(combine(tuple(ys), tuple(shifted)))

  static = xs[0].shape[1]
  if static is not None:
    # A known length (training batches): the ceil(log2 T) passes unrolled.
    # A while loop's gradient at long T (more than 10 passes) trips
    # TensorFlow's AddN rewrite inside loops (AlreadyExistsError on a
    # TemporaryVariable, seen at T = 1460).
    ys, shift = tuple(xs), 1
    while shift < static:
      ys = body(tf.constant(shift), *ys)[1:]
      shift *= 2
    return tuple(ys)
  out = tf.while_loop(
      lambda shift, *_: shift < length, body, (tf.constant(1),) + tuple(xs),
      shape_invariants=(tf.TensorShape([]),) + tuple(x.shape for x in xs))
  return tuple(out[1:])


def _scan(x: tf.Tensor, combine, fill: float,
          start: Optional[tf.Tensor]) -> tf.Tensor:
  """``doubling_scan`` of one tensor under a binary ``combine``."""
  return doubling_scan((x,), lambda later, earlier: (combine(later[0],
                                                             earlier[0]),),
                       (fill,), start)[0]


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
