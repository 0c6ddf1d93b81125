"""The default conv model's closed-form head (``head_rows`` gathers its
rows): ``Scales``, the label-dependent statistics of one fit (the feature
and label standardisation), and ``solve_head``, the head's weights from its
sampled rows by ridge regression (``ridge.py``); for per-step regression
with lags, a linear autoregression from Gram statistics first, then the
other features on what it leaves. NumPy only.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional

import numpy as np

from components.stateful.models import ridge

if TYPE_CHECKING:
  import tf_keras as keras  # pylint: disable=g-bad-import-order


@dataclasses.dataclass(frozen=True)
class Scales:
  """The label-dependent statistics of one fit (``feature_scale``'s and,
  for regression, ``label_scale``'s center and scale), float32 as the
  layers hold them."""
  feature_center: np.ndarray
  feature_scale: np.ndarray
  label_center: Optional[np.ndarray] = None
  label_scale: Optional[np.ndarray] = None

  @staticmethod
  def held(value: np.ndarray, scale: bool) -> np.ndarray:
    """``value`` as ``Standardize.set_statistics`` stores it."""
    if scale:
      value = np.where(np.isfinite(value) & (value > 0), value, 1.0)
    return np.asarray(value, np.float32)

  @classmethod
  def make(cls, feature_center, feature_scale, label_center=None,
           label_scale=None) -> 'Scales':
    return cls(cls.held(feature_center, False), cls.held(feature_scale, True),
               None if label_center is None else cls.held(label_center,
                                                          False),
               None if label_scale is None else cls.held(label_scale, True))

  def features(self, x: np.ndarray, columns: Optional[int] = None):
    """``feature_scale``'s output for rows ``x`` of its input (its last
    ``columns`` only, when given), in float32 as the layer computes it."""
    center, scale = self.feature_center, self.feature_scale
    if columns:
      x, center, scale = x[:, -columns:], center[-columns:], scale[-columns:]
    return (x - center) / scale

  def labels(self, y, outputs: int) -> np.ndarray:
    """Regression labels standardised by the label scale, [N, outputs]."""
    mean = self.label_center.astype(np.float64)
    std = self.label_scale.astype(np.float64)
    z = (np.asarray(y, np.float64).reshape(len(y), -1) - mean) / std
    return np.broadcast_to(z, (len(y), outputs))

  def set(self, model: 'keras.Model') -> None:
    model.get_layer('feature_scale').set_statistics(self.feature_center,
                                                    self.feature_scale)
    if self.label_center is not None:
      model.get_layer('label_scale').set_statistics(self.label_center,
                                                    self.label_scale)


def solve_head(spec, lags: int, scales: Scales, rows, gram):
  """The head's (kernel, bias, summary) from its sampled ``rows`` (x
  before ``feature_scale``, y, groups, seen) and, with lags, the Gram
  statistics of the lag columns of every labelled step."""
  per_step = spec.label_kind == 'per_step'
  x, y, groups, seen = rows
  x = scales.features(x)
  # Per-step labels: hold whole sequences out when choosing the penalty.
  groups = groups if per_step else None
  summary = {}
  if spec.task == 'classification':
    fit = ridge.fit(x, ridge.one_hot_targets(y, spec.num_classes),
                    groups=groups)
    scale = ridge.temperature(fit.loo_predictions, y)
    weights, bias = fit.weights, fit.bias
  else:
    z = scales.labels(y, spec.output_units)
    scale = 1.0
    if gram is None:
      fit = ridge.fit(x, z, groups=groups)
      weights, bias = fit.weights, fit.bias
    else:
      ar = gram.fit()
      residual = z - (x[:, -lags:] @ ar.weights + ar.bias)
      fit = ridge.fit(x, residual, groups=groups)
      alone = float(np.mean((residual - residual.mean(axis=0)) ** 2))
      kept = fit.loo_error < alone
      weights = (fit.weights if kept else np.zeros_like(fit.weights)).copy()
      bias = ar.bias + (fit.bias if kept else residual.mean(axis=0))
      weights[-lags:] += ar.weights
      summary = {'ar_rows': int(gram.n.sum()), 'ar_alpha': ar.alpha,
                 'ar_held_out_mse': round(ar.loo_error, 6),
                 'rest_kept': bool(kept),
                 'rest_held_out_mse': round(fit.loo_error, 6),
                 'residual_mse': round(alone, 6)}
  head = [(scale * weights).astype(np.float32),
          (scale * bias).astype(np.float32)]
  return head, {'head_rows': int(x.shape[0]), 'labelled_steps': int(seen),
                'ridge_alpha': fit.alpha, 'loo_mse': round(fit.loo_error, 6),
                'temperature': scale, **summary}
