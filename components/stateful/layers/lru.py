"""A linear recurrent unit: a diagonal complex linear recurrence over a
chunk, computed by a parallel associative scan.

``LinearRecurrence`` is a ``base.StatefulLayer`` (docs/design.md, "The
state protocol"). Per lane, with input ``x_t`` float32[H] and a complex
state ``h_t`` of ``state_size`` N (the LRU of Orvieto et al. 2023,
"Resurrecting Recurrent Neural Networks for Long Sequences"):

    h_t = lambda * h_{t-1} + gamma * (B x_t)       (element-wise over N)
    y_t = Re(C h_t) + D * x_t                      (y_t float32[H])

* ``lambda = exp(-exp(nu_log) + i exp(theta_log))``: its modulus
  ``exp(-exp(nu_log))`` is below 1 for every value of ``nu_log`` (the decay
  rate ``exp(nu_log)`` is floored at ``MIN_DECAY`` so that float32 does not
  round the modulus to 1), so the recurrence is stable whatever training
  does to the weights. At initialisation the eigenvalues are uniform on the
  ring ``r_min <= |lambda| <= r_max`` (``|lambda|^2`` uniform) with phases
  uniform in ``(0, max_phase]``.
* ``gamma = sqrt(1 - |lambda|^2)`` (computed from ``lambda``, not a separate
  weight) normalises the input, so that a white-noise input gives a state of
  the same scale whatever the eigenvalue's modulus.
* The state is two float32 variables ``[B, N]`` (real and imaginary parts),
  so the state protocol covers it as any other layer: an all-zero state is
  the start of a sequence.

Over a chunk of T' steps the recurrence is the inclusive scan of the pairs
``(a_t, b_t) = (lambda, gamma * B x_t)`` under the associative combine
``(a1, b1), (a2, b2) -> (a1 a2, a2 b1 + b2)``; ``linear_scan`` computes it
by log-depth doubling (ceil(log2 T') passes of whole-chunk TensorFlow ops,
no loop over steps), and its gradient by the same scan of the adjoint
recurrence, backwards in time. The carried state is folded into the first
element (``b_0 <- a_0 h_carried + b_0``). A reset at step t (``dense``
batches) sets ``a_t = 0``, so the scan restarts there exactly: nothing
before it reaches past it, in values or gradients. A chunk without resets
(``packed`` and ``bucketed`` batches, serving) has the same ``a_t =
lambda`` at every step, and ``invariant_scan`` computes it with no ``a``
tensor at all: the pass of shift s adds ``lambda^s h_{t-s}`` (the powers
rounded once from float64), fewer operations per pass than
``linear_scan``'s, with its own adjoint gradient; a chunk of at least
``MIN_BLOCKS * BLOCK`` steps is scanned in blocks of ``BLOCK`` steps, the
blocks' last states scanned by ``lambda^BLOCK`` and carried into the next
block by one more pass, so it takes log2(BLOCK) + 1 full passes instead of
ceil(log2 T'). Like the other stateful
layers it reads no Keras mask: padding sits only at a lane's end and is
followed by a reset.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful.layers import scans
from components.stateful.layers.base import PACKAGE
from components.stateful.layers.base import PlainCall
from components.stateful.layers.base import StatefulLayer

# Floor on the decay rate exp(nu_log): |lambda| <= exp(-MIN_DECAY), which is
# below 1 in float32 with room for rounding (exp(-x) rounds to 1 for x
# below about 3e-8); a memory of about 1e6 steps.
MIN_DECAY = 1e-6
# Ceiling on theta_log: the phase exp(theta_log) stays finite.
MAX_THETA_LOG = 80.0


def _cmul(ar, ai, br, bi):
  """(ar + i ai)(br + i bi) as a (real, imaginary) pair."""
  return ar * br - ai * bi, ar * bi + ai * br


def _doubling(a_re, a_im, b_re, b_im):
  """The forward scan of ``linear_scan`` (see there)."""

  def combine(later, earlier):
    ar, ai, br, bi = later
    pr, pi, qr, qi = earlier
    cr, ci = _cmul(ar, ai, qr, qi)  # a_later * b_earlier
    nr, ni = _cmul(pr, pi, ar, ai)  # a_earlier * a_later
    return nr, ni, cr + br, ci + bi

  _, _, h_re, h_im = scans.doubling_scan((a_re, a_im, b_re, b_im), combine,
                                         (1.0, 0.0, 0.0, 0.0))
  return h_re, h_im


def _reverse(x):
  return tf.reverse(x, axis=[1])


@tf.custom_gradient
def linear_scan(a_re: tf.Tensor, a_im: tf.Tensor, b_re: tf.Tensor,
                b_im: tf.Tensor):
  """``h_t = a_t h_{t-1} + b_t`` along axis 1, from ``h_{-1} = 0``.

  Complex values as (real, imaginary) float32 pairs, each [N, T, S]: the
  inclusive ``scans.doubling_scan`` of the pairs ``(a_t, b_t)`` under
  ``(a1, b1), (a2, b2) -> (a1 a2, a2 b1 + b2)`` (identity ``(1, 0)``),
  ceil(log2 T) passes.

  Its gradient is the adjoint recurrence, itself one more scan, run
  backwards in time (not TensorFlow's derivative of the doubling passes,
  which costs many times the forward scan): with ``g_t`` the loss's
  gradient at ``h_t``, ``d_t = g_t + conj(a_{t+1}) d_{t+1}``; then the
  gradient at ``b_t`` is ``d_t`` and at ``a_t`` it is ``conj(h_{t-1})
  d_t``. A zero ``a_t`` (a reset) stops ``d`` there, as it stops ``h``.

  Returns:
    ``(h_re, h_im)``, each [N, T, S].
  """
  h_re, h_im = _doubling(a_re, a_im, b_re, b_im)

  def grad(g_re, g_im):
    g_re = tf.zeros_like(h_re) if g_re is None else g_re
    g_im = tf.zeros_like(h_im) if g_im is None else g_im
    # conj(a_{t+1}); nothing after the last step.
    n_re = tf.concat([a_re[:, 1:], tf.zeros_like(a_re[:, :1])], axis=1)
    n_im = -tf.concat([a_im[:, 1:], tf.zeros_like(a_im[:, :1])], axis=1)
    d_re, d_im = _doubling(_reverse(n_re), _reverse(n_im), _reverse(g_re),
                           _reverse(g_im))
    d_re, d_im = _reverse(d_re), _reverse(d_im)
    # h_{t-1}: zero before the first step.
    p_re = tf.concat([tf.zeros_like(h_re[:, :1]), h_re[:, :-1]], axis=1)
    p_im = tf.concat([tf.zeros_like(h_im[:, :1]), h_im[:, :-1]], axis=1)
    return (p_re * d_re + p_im * d_im, p_re * d_im - p_im * d_re, d_re,
            d_im)

  return (h_re, h_im), grad


def _powers(decay: tf.Tensor, phase: tf.Tensor, exponents) -> Tuple[
    tf.Tensor, tf.Tensor]:
  """``lambda^k`` for the integer exponents ``k`` [M], as (real, imaginary)
  float32[M, S], from the decay rate and phase [S] (``lambda = exp(-decay +
  i phase)``). Computed in float64 and rounded once, so that a high power is
  as exact as ``lambda`` itself (in float32, ``k * phase`` at k = 32 is
  rounded to about 1e-5 of a radian)."""
  k = tf.cast(exponents, tf.float64)[:, None]
  modulus = tf.exp(-k * tf.cast(decay, tf.float64)[None])
  angle = k * tf.cast(phase, tf.float64)[None]
  return (tf.cast(modulus * tf.cos(angle), tf.float32),
          tf.cast(modulus * tf.sin(angle), tf.float32))


# Chunks at least this many blocks long are scanned in blocks of BLOCK steps
# (``_blocked_passes``); shorter ones by doubling over the whole chunk.
BLOCK = 8
MIN_BLOCKS = 4


def _shifted(h, shift: int, axis: int):
  """``h`` moved ``shift`` steps later along ``axis`` (static length),
  zeros before the start."""
  length = h.shape[axis]
  begin = [slice(None)] * len(h.shape)
  begin[axis] = slice(0, length - shift)
  pads = [[0, 0]] * len(h.shape)
  pads[axis] = [shift, 0]
  return tf.pad(h[tuple(begin)], pads)


def _doubling_passes(decay, phase, b_re, b_im, stride: int, axis: int):
  """Doubling passes along ``axis`` (static length) of ``h_t = lambda^stride
  h_{t-1} + b_t``: the pass of shift s adds ``lambda^(stride s) h_{t-s}``."""
  length = b_re.shape[axis]
  shifts = []
  while (1 << len(shifts)) < length:
    shifts.append(1 << len(shifts))
  h_re, h_im = b_re, b_im
  if shifts:
    p_re, p_im = _powers(decay, phase, [stride * s for s in shifts])
    for i, shift in enumerate(shifts):
      m_re, m_im = _cmul(p_re[i], p_im[i], _shifted(h_re, shift, axis),
                         _shifted(h_im, shift, axis))
      h_re, h_im = h_re + m_re, h_im + m_im
  return h_re, h_im


def _blocked_passes(decay, phase, b_re, b_im, stride: int):
  """``_doubling_passes`` along axis 1 in blocks of ``BLOCK`` steps: each
  block scanned from zero (log2 BLOCK passes), the blocks' last states
  scanned with ``lambda^(stride BLOCK)`` (recursively), and each block's
  incoming state ``c`` added as ``lambda^(stride (i + 1)) c`` at its step
  i. Fewer full passes over the chunk than doubling over all of it
  (log2 BLOCK + 1 against ceil(log2 T)), the same recurrence."""
  length = b_re.shape[1]
  blocks = -(-length // BLOCK)
  pad = [[0, 0], [0, blocks * BLOCK - length], [0, 0]]
  size = b_re.shape[2]

  def split(x):  # [N, T, S] -> [N, blocks, BLOCK, S]; zeros after the end.
    return tf.reshape(tf.pad(x, pad), [-1, blocks, BLOCK, size])

  h_re, h_im = _doubling_passes(decay, phase, split(b_re), split(b_im),
                                stride, axis=2)
  c_re, c_im = _passes(decay, phase, h_re[:, :, -1], h_im[:, :, -1],
                       stride * BLOCK)
  # The state entering block j: the carry after block j - 1.
  c_re, c_im = _shifted(c_re, 1, 1)[:, :, None], _shifted(c_im, 1, 1)[:, :,
                                                                      None]
  p_re, p_im = _powers(decay, phase, [stride * (i + 1) for i in range(BLOCK)])
  m_re, m_im = _cmul(p_re, p_im, c_re, c_im)
  h_re, h_im = h_re + m_re, h_im + m_im
  return (tf.reshape(h_re, [-1, blocks * BLOCK, size])[:, :length],
          tf.reshape(h_im, [-1, blocks * BLOCK, size])[:, :length])


def _passes(decay, phase, b_re, b_im, stride: int = 1):
  """``h_t = lambda^stride h_{t-1} + b_t`` along axis 1 (static length)."""
  if b_re.shape[1] >= MIN_BLOCKS * BLOCK:
    return _blocked_passes(decay, phase, b_re, b_im, stride)
  return _doubling_passes(decay, phase, b_re, b_im, stride, axis=1)


def _invariant_passes(decay, phase, b_re, b_im):
  """The forward scan of ``invariant_scan`` (see there)."""
  if b_re.shape[1] is not None and b_re.shape[2] is not None:
    return _passes(decay, phase, b_re, b_im)  # Training batches.
  length = tf.shape(b_re)[1]

  def apply(shift, p_re, p_im, h_re, h_im):
    def earlier(h):  # h_{t - shift}, zero before the chunk.
      return tf.pad(h[:, :length - shift], [[0, 0], [shift, 0], [0, 0]])
    m_re, m_im = _cmul(p_re, p_im, earlier(h_re), earlier(h_im))
    return h_re + m_re, h_im + m_im

  def body(shift, h_re, h_im):
    p_re, p_im = _powers(decay, phase, shift[None])
    return (shift * 2,) + apply(shift, p_re[0], p_im[0], h_re, h_im)

  out = tf.while_loop(lambda shift, *_: shift < length, body,
                      (tf.constant(1), b_re, b_im),
                      shape_invariants=(tf.TensorShape([]), b_re.shape,
                                        b_im.shape))
  return out[1], out[2]


@tf.custom_gradient
def invariant_scan(decay: tf.Tensor, phase: tf.Tensor, b_re: tf.Tensor,
                   b_im: tf.Tensor):
  """``h_t = lambda h_{t-1} + b_t`` along axis 1 from ``h_{-1} = 0``, with
  one ``lambda = exp(-decay + i phase)`` per channel at every step (no
  reset inside the chunk): what ``linear_scan`` computes for a constant
  ``a``, in fewer operations.

  With ``a`` constant the doubling pass of shift s needs no ``a`` tensor:
  ``h_t <- h_t + lambda^s h_{t-s}`` (``h_{t-s} = 0`` before the chunk), a
  product by one complex number per channel, ceil(log2 T) passes; from
  ``MIN_BLOCKS * BLOCK`` steps on, in blocks (``_blocked_passes``). The
  gradient is the adjoint recurrence, the same scan backwards in time with
  ``conj(lambda)``: ``d_t = g_t + conj(lambda) d_{t+1}``; the gradient at
  ``b_t`` is ``d_t`` and at ``lambda`` it is the sum over lanes and steps
  of ``conj(h_{t-1}) d_t``, taken to ``decay`` and ``phase`` through
  ``d lambda = lambda (-d decay + i d phase)``.

  Args:
    decay, phase: float32[S].
    b_re, b_im: float32[N, T, S].

  Returns:
    ``(h_re, h_im)``, each float32[N, T, S].
  """
  h_re, h_im = _invariant_passes(decay, phase, b_re, b_im)

  def grad(g_re, g_im):
    g_re = tf.zeros_like(h_re) if g_re is None else g_re
    g_im = tf.zeros_like(h_im) if g_im is None else g_im
    d_re, d_im = _invariant_passes(decay, -phase, _reverse(g_re),
                                   _reverse(g_im))
    d_re, d_im = _reverse(d_re), _reverse(d_im)
    # h_{t-1}: zero before the first step.
    p_re = tf.pad(h_re[:, :-1], [[0, 0], [1, 0], [0, 0]])
    p_im = tf.pad(h_im[:, :-1], [[0, 0], [1, 0], [0, 0]])
    # The gradient at (lambda_re, lambda_im): sum of conj(h_{t-1}) d_t.
    l_re = tf.reduce_sum(p_re * d_re + p_im * d_im, axis=[0, 1])
    l_im = tf.reduce_sum(p_re * d_im - p_im * d_re, axis=[0, 1])
    modulus = tf.exp(-decay)
    lam_re, lam_im = modulus * tf.cos(phase), modulus * tf.sin(phase)
    return (-(l_re * lam_re + l_im * lam_im), l_im * lam_re - l_re * lam_im,
            d_re, d_im)

  return (h_re, h_im), grad


def ring_init(state_size: int, r_min: float, r_max: float, max_phase: float,
              seed: int):
  """``(nu_log, theta_log)`` float32[N]: eigenvalues uniform on the ring
  ``r_min <= |lambda| <= r_max`` (uniform in area: ``|lambda|^2`` uniform)
  with phases uniform in ``(0, max_phase]``; seeded."""
  rng = np.random.default_rng([seed, 0])
  u1 = 1.0 - rng.uniform(size=state_size)  # (0, 1]: no log(0).
  u2 = 1.0 - rng.uniform(size=state_size)
  modulus_sq = u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2
  nu_log = np.log(-0.5 * np.log(modulus_sq))
  theta_log = np.log(max_phase * u2)
  return nu_log.astype(np.float32), theta_log.astype(np.float32)


def _values(array: np.ndarray):
  """An initializer that returns ``array`` (the layer's seeded draws)."""

  def init(shape, dtype=None, **kwargs):
    del kwargs
    if tuple(shape) != array.shape:
      raise ValueError(f'initial values have shape {array.shape}, the weight '
                       f'{tuple(shape)}')
    return tf.constant(array, dtype or tf.float32)

  return init


@keras.utils.register_keras_serializable(package=PACKAGE)
class LinearRecurrence(PlainCall, StatefulLayer):
  """A linear recurrent unit (LRU) that streams exactly; see the module
  docstring.

  Input and output float32[N, T', H]. State: ``[h_re, h_im]``, each
  float32[state_size].

  Args:
    state_size: N, complex state dimensions (eigenvalues).
    r_min, r_max: the ring of initial eigenvalue moduli,
      ``0 <= r_min < r_max < 1``.
    max_phase: initial phases lie in ``(0, max_phase]``; > 0.
    seed: seeds the initial eigenvalues and the B, C and D draws.
    stateful: see ``StatefulLayer``.

  Weights (trainable): ``nu_log``, ``theta_log`` [N]; ``B_re``, ``B_im``
  [H, N] (initially normal / sqrt(2H)); ``C_re``, ``C_im`` [N, H] (normal /
  sqrt(N)); ``D`` [H] (normal).
  """

  def __init__(self, state_size: int, r_min: float = 0.9,
               r_max: float = 0.999, max_phase: float = 2 * math.pi,
               seed: int = 0, stateful: bool = False, **kwargs):
    super().__init__(stateful=stateful, **kwargs)
    if int(state_size) < 1:
      raise ValueError(f'state_size must be >= 1, got {state_size}')
    if not 0.0 <= float(r_min) < float(r_max) < 1.0:
      raise ValueError('need 0 <= r_min < r_max < 1 (eigenvalue moduli '
                       f'inside the unit circle), got r_min={r_min}, '
                       f'r_max={r_max}')
    if not float(max_phase) > 0.0:
      raise ValueError(f'max_phase must be > 0, got {max_phase}')
    self.state_size = int(state_size)
    self.r_min = float(r_min)
    self.r_max = float(r_max)
    self.max_phase = float(max_phase)
    self.seed = int(seed)

  def build(self, input_shape):
    channels = int(tf.TensorShape(input_shape)[-1])
    self._channels = channels
    n = self.state_size
    nu_log, theta_log = ring_init(n, self.r_min, self.r_max, self.max_phase,
                                  self.seed)

    def normal(k, shape, scale):
      rng = np.random.default_rng([self.seed, k])
      return (rng.normal(size=shape) * scale).astype(np.float32)

    draws = {
        'nu_log': nu_log, 'theta_log': theta_log,
        'B_re': normal(1, (channels, n), 1.0 / math.sqrt(2 * channels)),
        'B_im': normal(2, (channels, n), 1.0 / math.sqrt(2 * channels)),
        'C_re': normal(3, (n, channels), 1.0 / math.sqrt(n)),
        'C_im': normal(4, (n, channels), 1.0 / math.sqrt(n)),
        'D': normal(5, (channels,), 1.0),
    }
    for name, value in draws.items():
      setattr(self, name, self.add_weight(
          name=name, shape=value.shape, initializer=_values(value)))
    super().build(input_shape)

  def eigenvalues(self):
    """``(lambda_re, lambda_im, gamma)``, each float32[N], from the
    weights: ``|lambda| = exp(-max(exp(nu_log), MIN_DECAY)) < 1`` and
    ``gamma = sqrt(1 - |lambda|^2)``."""
    decay, phase = self.rates()
    modulus = tf.exp(-decay)
    gamma = tf.sqrt(-tf.math.expm1(-2.0 * decay))
    return modulus * tf.cos(phase), modulus * tf.sin(phase), gamma

  def rates(self):
    """``(decay, phase)``, each float32[N]: ``lambda = exp(-decay + i
    phase)``, the decay floored at ``MIN_DECAY``."""
    return (tf.maximum(tf.exp(self.nu_log), MIN_DECAY),
            tf.exp(tf.minimum(self.theta_log, MAX_THETA_LOG)))

  def state_shapes(self):
    return [tf.TensorShape([self.state_size]),
            tf.TensorShape([self.state_size])]

  def step(self, inputs, states, resets=None):
    """See ``StatefulLayer.step``.

    Without per-step resets (``packed`` and ``bucketed`` batches, serving)
    ``lambda`` is the same at every step, and the chunk is scanned by
    ``invariant_scan``, powers of ``lambda`` only; with them (``dense``) a
    reset step has ``a_t = 0``, and ``linear_scan``'s doubling passes take
    it.
    """
    h_re, h_im = states
    lam_re, lam_im, gamma = self.eigenvalues()
    # gamma scales B's columns (cheaper than scaling B x at every step).
    b_re = tf.tensordot(inputs, self.B_re * gamma, axes=[[2], [0]])
    b_im = tf.tensordot(inputs, self.B_im * gamma, axes=[[2], [0]])
    if resets is None:
      # The carried state folded into the first element: b_0 += lambda h.
      c_re, c_im = _cmul(lam_re, lam_im, h_re, h_im)
      b_re = tf.concat([b_re[:, :1] + c_re[:, None], b_re[:, 1:]], axis=1)
      b_im = tf.concat([b_im[:, :1] + c_im[:, None], b_im[:, 1:]], axis=1)
      h_re, h_im = invariant_scan(*self.rates(), b_re, b_im)
    else:
      a_re = tf.zeros_like(b_re) + lam_re
      a_im = tf.zeros_like(b_im) + lam_im
      fresh = (tf.convert_to_tensor(resets) > 0)[..., None]
      a_re = tf.where(fresh, tf.zeros_like(a_re), a_re)
      a_im = tf.where(fresh, tf.zeros_like(a_im), a_im)
      # The carried state folded into the first element.
      c_re, c_im = _cmul(a_re[:, :1], a_im[:, :1], h_re[:, None],
                         h_im[:, None])
      b_re = tf.concat([b_re[:, :1] + c_re, b_re[:, 1:]], axis=1)
      b_im = tf.concat([b_im[:, :1] + c_im, b_im[:, 1:]], axis=1)
      h_re, h_im = linear_scan(a_re, a_im, b_re, b_im)
    outputs = (tf.tensordot(h_re, self.C_re, axes=[[2], [0]])
               - tf.tensordot(h_im, self.C_im, axes=[[2], [0]])
               + self.D * inputs)
    return outputs, [h_re[:, -1], h_im[:, -1]]

  def compute_output_shape(self, input_shape):
    return tf.TensorShape(input_shape)

  def get_config(self):
    return {**super().get_config(), 'state_size': self.state_size,
            'r_min': self.r_min, 'r_max': self.r_max,
            'max_phase': self.max_phase, 'seed': self.seed}


__all__ = ['LinearRecurrence', 'invariant_scan', 'linear_scan', 'ring_init',
           'MIN_DECAY']
