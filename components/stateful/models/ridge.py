"""Closed-form ridge regression with its penalty chosen by leave-one-out
error, for the default model's linear head (NumPy only).

The default model's trainable part is a linear head over streamed,
standardised features; ROCKET and MiniRocket fit such a head with a ridge
classifier whose penalty is picked by leave-one-out cross-validation
(Dempster et al. 2020). A closed form is deterministic (same features, same
head), needs no learning rate or epochs, and chooses its regularisation on
the training rows alone, so it suits small labelled sets, where gradient
training of a few hundred examples against hundreds of features moves with
every seed.

Leave-one-out residuals come from one SVD of the centred rows: with
``H = U diag(s^2 / (s^2 + a)) U^T`` the hat matrix of penalty ``a`` (plus
``1/n`` for the intercept), the residual of row i fitted without row i is
``(y_i - yhat_i) / (1 - H_ii)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import scipy.linalg

# The penalties tried (ROCKET's RidgeClassifierCV grid).
ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 10))
# With whole sequences held out (per-step labels: many more, correlated
# rows, so the penalty that generalises is larger): up to 1e6.
GROUPED_ALPHAS = tuple(float(a) for a in np.logspace(-3, 6, 10))
# Softmax temperatures tried for classification logits.
TEMPERATURES = tuple(float(t) for t in np.logspace(-1, 2, 31))


@dataclasses.dataclass(frozen=True)
class RidgeFit:
  """``predict(x) = x @ weights + bias``.

  Attributes:
    weights: float64[D, K].
    bias: float64[K].
    alpha: the penalty chosen.
    loo_error: its mean squared held-out residual.
    loo_predictions: float64[N, K], each row predicted without itself (or
      without its group's fold).
  """
  weights: np.ndarray
  bias: np.ndarray
  alpha: float
  loo_error: float
  loo_predictions: np.ndarray

  def predict(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64) @ self.weights + self.bias


def _solve(xc: np.ndarray, yc: np.ndarray):
  u, s, vt = np.linalg.svd(xc, full_matrices=False)
  return u, s, vt, u.T @ yc


def _grouped_cv(x, y, groups, alphas, folds):
  """Out-of-fold predictions per penalty, whole groups held out together,
  and the accumulator (``GramRidge``) whose statistics refit on every row.

  From per-fold Gram matrices: the training folds' ``X^T X`` is the total
  minus the held-out fold's, so the rows are multiplied once (``N D^2``)
  and each (fold, penalty) costs one Cholesky solve (``D^3 / 3``), rather
  than an SVD of the training rows per fold (``4 N D^2``).
  """
  unique = np.unique(groups)
  order = np.random.default_rng(0).permutation(unique.size)
  fold_of = dict(zip(unique[order], np.arange(unique.size) % folds))
  fold = np.array([fold_of[g] for g in groups])
  gram = GramRidge(x.shape[1], y.shape[1], folds)
  gram.add_folds(x, y, fold)
  preds = {a: np.zeros_like(y) for a in alphas}
  for f in range(min(folds, unique.size)):
    test = fold == f
    for a in alphas:
      w, b = gram.solve(a, without=f)
      preds[a][test] = x[test] @ w + b
  return preds, gram


def fit(x: np.ndarray, y: np.ndarray,
        alphas: Optional[Sequence[float]] = None, *,
        groups: Optional[np.ndarray] = None, folds: int = 5) -> RidgeFit:
  """Ridge regression of ``y`` float[N, K] on ``x`` float[N, D] with an
  unpenalised intercept; the penalty is the one in ``alphas`` (default:
  ``ALPHAS``, or ``GROUPED_ALPHAS`` with ``groups``) with the smallest mean
  squared held-out residual (ties: the larger penalty).

  Held out: each row alone (leave-one-out, exact and cheap), or, with
  ``groups`` int[N] (e.g. the sequence of each labelled step), whole groups
  in ``folds`` folds: rows of one sequence are alike, so leaving one step out
  would let its neighbours vouch for it and favour too small a penalty.
  ``loo_predictions`` are then the out-of-fold predictions.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
    raise ValueError(f'ridge.fit needs x [N, D] and y [N, K], got '
                     f'{x.shape} and {y.shape}')
  n = x.shape[0]
  if n < 2:
    raise ValueError(f'ridge.fit needs at least 2 rows, got {n}')
  x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
  best = None
  grouped = groups is not None and np.unique(groups).size >= 2
  if alphas is None:
    alphas = GROUPED_ALPHAS if grouped else ALPHAS
  if grouped:
    held_out, gram = _grouped_cv(x, y, np.asarray(groups), list(alphas),
                                 folds)
    for alpha in sorted(alphas, reverse=True):
      error = float(np.mean((y - held_out[alpha]) ** 2))
      if best is None or error < best[0] - 1e-12 * abs(best[0]):
        best = (error, float(alpha), held_out[alpha] - y_mean)
    error, alpha, loo_fitted = best
    # The refit on every row from the folds' statistics (no SVD of the rows).
    weights, bias = gram.solve(alpha)
    return RidgeFit(weights=weights, bias=bias,
                    alpha=alpha, loo_error=error,
                    loo_predictions=loo_fitted + y_mean)
  xc, yc = x - x_mean, y - y_mean
  u, s, vt, uty = _solve(xc, yc)
  s2 = s * s
  for alpha in sorted(alphas, reverse=True):
    shrink = s2 / (s2 + alpha)
    fitted = u @ (shrink[:, None] * uty)
    hat = np.einsum('ij,j,ij->i', u, shrink, u) + 1.0 / n
    loo = (yc - fitted) / np.maximum(1.0 - hat, 1e-12)[:, None]
    error = float(np.mean(loo * loo))
    if best is None or error < best[0] - 1e-12 * abs(best[0]):
      best = (error, float(alpha), yc - loo)
  error, alpha, loo_fitted = best
  weights = vt.T @ ((s / (s2 + alpha))[:, None] * uty)
  return RidgeFit(weights=weights, bias=y_mean - x_mean @ weights,
                  alpha=alpha, loo_error=error,
                  loo_predictions=loo_fitted + y_mean)


def one_hot_targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """+1 for the class, -1 elsewhere (a ridge classifier's targets)."""
  labels = np.asarray(labels).astype(np.int64)
  out = -np.ones((labels.shape[0], num_classes))
  out[np.arange(labels.shape[0]), labels] = 1.0
  return out


def temperature(scores: np.ndarray, labels: np.ndarray,
                temperatures: Sequence[float] = TEMPERATURES) -> float:
  """The factor t that minimises the cross-entropy of ``softmax(t *
  scores)`` (leave-one-out scores: calibrated logits without peeking)."""
  labels = np.asarray(labels).astype(np.int64)
  best = None
  for t in temperatures:
    z = t * np.asarray(scores, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-log_p[np.arange(labels.shape[0]), labels].mean())
    if best is None or loss < best[0]:
      best = (loss, float(t))
  return best[1]


class GramRidge:
  """Ridge regression from accumulated sufficient statistics.

  ``add`` sums, per fold, the row count, ``sum x``, ``sum y``, ``X^T X``,
  ``X^T y`` and ``sum y^2`` of the rows it is given (a fold per group, e.g.
  per sequence: whole sequences are held out together), so every row is
  used however many there are, in memory ``O(D^2)``, and statistics of
  several workers or passes sum. ``solve`` fits on all folds but one (or
  all); ``fit`` picks the penalty by the held-out squared error over the
  folds, computed from the held-out fold's statistics alone.
  """

  def __init__(self, dim: int, outputs: int, folds: int = 5):
    self.dim, self.outputs, self.folds = int(dim), int(outputs), int(folds)
    f, d, k = self.folds, self.dim, self.outputs
    self.n = np.zeros(f)
    self.sx = np.zeros((f, d))
    self.sy = np.zeros((f, k))
    self.xx = np.zeros((f, d, d))
    self.xy = np.zeros((f, d, k))
    self.yy = np.zeros((f, k))

  def fold_of(self, groups: np.ndarray) -> np.ndarray:
    """The fold of each group id (a fixed hash: the same on every worker)."""
    g = np.asarray(groups, np.uint64)
    return ((g * np.uint64(2654435761)) % np.uint64(1 << 31)
            % np.uint64(self.folds)).astype(np.int64)

  def add(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
    """Adds rows, each to the fold of its group (``fold_of``)."""
    self.add_folds(x, y, self.fold_of(groups))

  def add_folds(self, x: np.ndarray, y: np.ndarray,
                fold: np.ndarray) -> None:
    """Adds rows to the given folds (int[N] in ``[0, folds)``)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64).reshape(x.shape[0], self.outputs)
    for f in np.unique(fold):
      sel = fold == f
      xs, ys = x[sel], y[sel]
      self.n[f] += xs.shape[0]
      self.sx[f] += xs.sum(axis=0)
      self.sy[f] += ys.sum(axis=0)
      self.xx[f] += xs.T @ xs
      self.xy[f] += xs.T @ ys
      self.yy[f] += (ys * ys).sum(axis=0)

  def merge(self, other: 'GramRidge') -> None:
    """Adds another accumulator's statistics (another worker's rows)."""
    for name in ('n', 'sx', 'sy', 'xx', 'xy', 'yy'):
      getattr(self, name).__iadd__(getattr(other, name))

  def combine(self, sum_fn) -> None:
    """Replaces each statistic by ``sum_fn`` of it (e.g. ``Shard.sum``:
    the sum over the workers, each of which added its own rows)."""
    for name in ('n', 'sx', 'sy', 'xx', 'xy', 'yy'):
      setattr(self, name, np.asarray(sum_fn(getattr(self, name)),
                                     np.float64))

  def _stats(self, without: Optional[int]):
    keep = np.ones(self.folds, bool)
    if without is not None:
      keep[without] = False
    return tuple(getattr(self, name)[keep].sum(axis=0)
                 for name in ('n', 'sx', 'sy', 'xx', 'xy', 'yy'))

  def solve(self, alpha: float, without: Optional[int] = None):
    """(weights [D, K], bias [K]) fitted on every fold but ``without``,
    intercept unpenalised."""
    n, sx, sy, xx, xy, _ = self._stats(without)
    if n < 1:
      raise ValueError('GramRidge.solve: no rows')
    mx, my = sx / n, sy / n
    cxx = xx - n * np.outer(mx, mx)
    cxy = xy - n * np.outer(mx, my)
    w = scipy.linalg.solve(cxx + float(alpha) * np.eye(self.dim), cxy,
                           assume_a='pos')
    return w, my - mx @ w

  def held_out_sse(self, fold: int, w: np.ndarray, b: np.ndarray) -> float:
    """Sum of squared errors of ``x @ w + b`` on fold ``fold``'s rows."""
    n, sx, sy, xx, xy, yy = (self.n[fold], self.sx[fold], self.sy[fold],
                             self.xx[fold], self.xy[fold], self.yy[fold])
    pred_sq = np.einsum('dk,de,ek->k', w, xx, w) + 2 * b * (sx @ w) + n * b * b
    cross = np.einsum('dk,dk->k', w, xy) + b * sy
    return float(np.sum(yy - 2 * cross + pred_sq))

  def fit(self, alphas: Sequence[float] = GROUPED_ALPHAS) -> RidgeFit:
    """The penalty with the smallest held-out error over the non-empty
    folds (ties: the larger penalty; with one non-empty fold, the smallest
    penalty, unchecked), refitted on every row. ``loo_error`` is the mean
    held-out squared error per row and output; ``loo_predictions`` is
    empty (the rows are not kept)."""
    folds = [f for f in range(self.folds) if self.n[f] > 0]
    total = float(self.n.sum())
    if total < 2:
      raise ValueError(f'GramRidge.fit needs at least 2 rows, got {total:g}')
    best = None
    if len(folds) >= 2:
      for alpha in sorted(alphas, reverse=True):
        sse = sum(self.held_out_sse(f, *self.solve(alpha, without=f))
                  for f in folds)
        error = sse / (total * self.outputs)
        if best is None or error < best[0] - 1e-12 * abs(best[0]):
          best = (error, float(alpha))
    else:
      best = (math.nan, float(min(alphas)))
    w, b = self.solve(best[1])
    return RidgeFit(weights=w, bias=b, alpha=best[1], loo_error=best[0],
                    loo_predictions=np.zeros((0, self.outputs)))
