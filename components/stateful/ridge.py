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
from typing import Optional, Sequence

import numpy as np

# The penalties tried (ROCKET's RidgeClassifierCV grid).
ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 10))
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
  """Out-of-fold predictions per penalty, whole groups held out together."""
  unique = np.unique(groups)
  order = np.random.default_rng(0).permutation(unique.size)
  fold_of = dict(zip(unique[order], np.arange(unique.size) % folds))
  fold = np.array([fold_of[g] for g in groups])
  preds = {a: np.zeros_like(y) for a in alphas}
  for f in range(min(folds, unique.size)):
    test = fold == f
    train = ~test
    x_mean, y_mean = x[train].mean(axis=0), y[train].mean(axis=0)
    _, s, vt, uty = _solve(x[train] - x_mean, y[train] - y_mean)
    proj = (x[test] - x_mean) @ vt.T
    for a in alphas:
      preds[a][test] = proj @ ((s / (s * s + a))[:, None] * uty) + y_mean
  return preds


def fit(x: np.ndarray, y: np.ndarray,
        alphas: Sequence[float] = ALPHAS, *,
        groups: Optional[np.ndarray] = None, folds: int = 5) -> RidgeFit:
  """Ridge regression of ``y`` float[N, K] on ``x`` float[N, D] with an
  unpenalised intercept; the penalty is the one in ``alphas`` with the
  smallest mean squared held-out residual (ties: the larger penalty).

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
  xc, yc = x - x_mean, y - y_mean
  u, s, vt, uty = _solve(xc, yc)
  s2 = s * s
  best = None
  if groups is not None and np.unique(groups).size >= 2:
    held_out = _grouped_cv(x, y, np.asarray(groups), list(alphas), folds)
    for alpha in sorted(alphas, reverse=True):
      error = float(np.mean((y - held_out[alpha]) ** 2))
      if best is None or error < best[0] - 1e-12 * abs(best[0]):
        best = (error, float(alpha), held_out[alpha] - y_mean)
  for alpha in (sorted(alphas, reverse=True) if best is None else ()):
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
