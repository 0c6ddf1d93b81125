"""Fitting the default conv model's data-dependent weights before training
(its ``adapt`` hook; ``default_model.py`` builds the model).

In lane order over the train split, with the model's own stateful layers:

1. the robust input scale (median and interquartile range per feature);
2. the PPV thresholds: a random quantile of each kernel's output copy;
3. the feature standardisation, on the steps the loss reads;
4. for regression, the label scale;
5. the linear head in closed form (``ridge.py``), on every labelled step
   (per-step regression: a linear autoregression on the lags from Gram
   statistics of every labelled step, then the other features on what it
   leaves; see ``_fit_head``).
"""

import itertools
import logging
import time
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful import ridge
from components.stateful import state
from components.stateful import steps as steps_lib

_LOG = logging.getLogger(__name__)

# Training sample used by the statistics: batches read in order, steps kept.
ADAPT_MAX_BATCHES = 400
ADAPT_MAX_ROWS = 20000
# Rows (labelled steps) the closed-form head is fitted on, at most; beyond
# this, a uniform random sample of them.
HEAD_MAX_ROWS = 20000
# PPV thresholds: the quantile of each kernel's output is drawn from this.
PPV_QUANTILES = (0.1, 0.9)


def _stream(model: keras.Model, outputs: tf.Tensor,
            batches: Iterable[Mapping[str, Any]]
           ) -> Iterator[Tuple[Mapping[str, Any], np.ndarray]]:
  """Runs the stateful ``model`` over ``batches`` in lane order (every
  batch: the state must follow every step) and yields each batch with
  ``outputs`` [B, T, C] for it; all state is zeroed before and after."""
  probe = keras.Model(model.inputs, outputs)

  @tf.function(autograph=False)
  def run(features, reset):
    return steps_lib.run_model(probe, features, reset, training=False)

  state.zero_all(model)
  try:
    for batch in batches:
      yield batch, run(tf.constant(batch['features']),
                       tf.constant(batch['reset'])).numpy()
  finally:
    state.zero_all(model)


def _collect(model: keras.Model, outputs: tf.Tensor,
             batches: Iterable[Mapping[str, Any]], where: str) -> np.ndarray:
  """``outputs`` at real steps (``where='mask'``) or labelled steps
  (``'label_weight'``) of ``batches``."""
  rows = [out[sel] for batch, out in _stream(model, outputs, batches)
          for sel in [np.asarray(batch[where]) > 0] if sel.any()]
  if not rows:
    raise ValueError(f'adapt: no step with {where} > 0 in the sample')
  return np.concatenate(rows)


def _subsample(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  if rows.shape[0] <= ADAPT_MAX_ROWS:
    return rows
  return rows[np.sort(rng.choice(rows.shape[0], ADAPT_MAX_ROWS,
                                 replace=False))]


def _head_rows(model: keras.Model, batches: Iterable[Mapping[str, Any]],
               rng: np.random.Generator, every_row=None):
  """The head's input, label and sequence (an int per sequence) at every
  labelled step of ``batches`` (one pass, in lane order), thinned to a
  uniform sample of at most ``HEAD_MAX_ROWS`` rows: whenever the kept rows
  pass twice the cap, a random half is dropped and later rows are kept with
  half the probability. ``every_row(x, y, groups)``, when given, sees every
  labelled step before the thinning."""
  xs: List[np.ndarray] = []
  ys: List[np.ndarray] = []
  gs: List[np.ndarray] = []
  keep, kept, seen, started = 1.0, 0, 0, time.monotonic()
  sequence = None  # Per lane: the number of sequences started so far.
  stream = _stream(model, model.get_layer('feature_scale').output, batches)
  for i, (batch, out) in enumerate(stream):
    # Labelled steps are kept, with their sequence (lane, count of resets)
    # as group.
    sel = np.asarray(batch['label_weight']) > 0
    reset = np.zeros(sel.shape, np.int64)  # Per step, [B, T].
    if np.ndim(batch['reset']) == 2:  # dense
      reset[:] = batch['reset']
    else:
      reset[:, 0] = batch['reset']
    if sequence is None:
      sequence = np.zeros(reset.shape[0], np.int64)
    count = sequence[:, None] + np.cumsum(reset, axis=1)
    sequence = count[:, -1]
    if not sel.any():
      continue
    lanes = np.nonzero(sel)[0]
    x, y = out[sel], np.asarray(batch['labels'])[sel]
    g = lanes * (1 << 32) + count[sel]
    seen += x.shape[0]
    if every_row is not None:
      every_row(x, y, g)
    if keep < 1.0:
      pick = rng.random(x.shape[0]) < keep
      x, y, g = x[pick], y[pick], g[pick]
    xs.append(x)
    ys.append(y)
    gs.append(g)
    kept += x.shape[0]
    if kept > 2 * HEAD_MAX_ROWS:
      x, y, g = np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)
      pick = rng.random(x.shape[0]) < 0.5
      xs, ys, gs = [x[pick]], [y[pick]], [g[pick]]
      kept, keep = int(pick.sum()), keep / 2
    if (i + 1) % 1000 == 0:
      _LOG.info('head features: %d batches, %d labelled steps (%.0f '
                'batches/s)', i + 1, seen,
                (i + 1) / max(time.monotonic() - started, 1e-9))
  if not xs:
    raise ValueError('adapt: no labelled step in the train split')
  return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs), seen


def _lag_columns(model: keras.Model) -> int:
  """How many of the head's last input columns are the linear lags (0:
  the model has none)."""
  try:
    return int(model.get_layer('lags').output.shape[-1])
  except ValueError:
    return 0


def _fit_head(model: keras.Model, spec, batches: Iterable[Mapping[str, Any]],
              rng: np.random.Generator) -> Dict[str, Any]:
  """Ridge head (see the module docstring) on every labelled step.

  Per-step regression with lags, in two stages: (1) a linear
  autoregression on the lag columns alone, fitted on every labelled step
  from accumulated Gram statistics (``ridge.GramRidge``), its penalty
  chosen with whole sequences held out; (2) the ridge on all features
  fitted to what (1) leaves, kept only when its held-out error is below
  that of leaving the residual alone. The head is their sum, so it
  represents persistence and any linear autoregression on the lags
  exactly, without shrinking them together with thousands of other
  features."""
  per_step = spec.label_kind == 'per_step'
  lags = _lag_columns(model) if (spec.task == 'regression' and
                                 per_step) else 0
  if spec.task == 'regression':
    scaler = model.get_layer('label_scale')
    mean = scaler.center.numpy().astype(np.float64)
    std = scaler.scale.numpy().astype(np.float64)

    def standard(y):
      z = (np.asarray(y, np.float64).reshape(len(y), -1) - mean) / std
      return np.broadcast_to(z, (len(y), spec.output_units))

  gram = ridge.GramRidge(lags, spec.output_units) if lags else None
  every_row = ((lambda x, y, g: gram.add(x[:, -lags:], standard(y), g))
               if gram is not None else None)
  x, y, groups, seen = _head_rows(model, batches, rng, every_row)
  # Per-step labels: hold whole sequences out when choosing the penalty.
  groups = groups if per_step else None
  summary = {}
  if spec.task == 'classification':
    fit = ridge.fit(x, ridge.one_hot_targets(y, spec.num_classes),
                    groups=groups)
    scale = ridge.temperature(fit.loo_predictions, y)
    weights, bias = fit.weights, fit.bias
  else:
    z = standard(y)
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
  model.get_layer('head').set_weights([
      (scale * weights).astype(np.float32),
      (scale * bias).astype(np.float32)])
  return {'head_rows': int(x.shape[0]), 'labelled_steps': int(seen),
          'ridge_alpha': fit.alpha, 'loo_mse': round(fit.loo_error, 6),
          'temperature': scale, **summary}


def adapt_conv(model: keras.Model, spec,
               batches: Iterable[Mapping[str, Any]], *,
               fit_head: bool = True) -> Dict[str, Any]:
  """Fits the conv model's data-dependent weights on the train split.

  ``batches`` are numpy dicts (``features``, ``reset``, ``mask``,
  ``label_weight``, ``labels``) in lane order from the start of the train
  split. The statistics read the first ``ADAPT_MAX_BATCHES``; the ridge head
  (``fit_head``) reads every batch in a second pass when ``batches`` can be
  iterated again (a one-shot iterator: the head is fitted on that sample).
  Deterministic for a given seed.

  Returns:
    A short summary (for the log).
  """
  sample = list(itertools.islice(batches, ADAPT_MAX_BATCHES))
  rng = np.random.default_rng(int(spec.seed) + 12345)
  layer = model.get_layer
  # 1. Robust input scale: median and interquartile range per feature.
  raw = np.concatenate([b['features'][b['mask'] > 0] for b in sample])
  raw = _subsample(raw, rng)
  q25, med, q75 = np.percentile(raw, [25, 50, 75], axis=0)
  iqr = q75 - q25
  spread = np.where(iqr > 0, iqr, raw.std(axis=0))
  layer('input_scale').set_statistics(med, spread)
  # 2. PPV thresholds: a random quantile of each kernel's output (of each
  # copy of it, one threshold per copy).
  conv = _subsample(_collect(model, layer('conv_pool').input, sample,
                             'mask'), rng)
  qs = rng.uniform(*PPV_QUANTILES, size=conv.shape[1])
  thresholds = np.array([np.quantile(conv[:, c], qs[c])
                         for c in range(conv.shape[1])])
  layer('conv_pool').threshold.assign(thresholds.astype(np.float32))
  try:  # The decaying PPV reads the kernels once: the first copy's.
    recent = layer('recent_conv')
  except ValueError:
    recent = None
  if recent is not None:
    recent.threshold.assign(
        thresholds[:recent.threshold.shape[0]].astype(np.float32))
  # 3. Feature standardisation, on the steps the loss reads.
  where = 'label_weight'
  feats = _subsample(_collect(model, layer('features_all').output, sample,
                              where), rng)
  layer('feature_scale').set_statistics(feats.mean(axis=0),
                                        feats.std(axis=0) + 1e-3)
  # 4. Regression: outputs in the label's units.
  if spec.task == 'regression':
    labels = np.concatenate(
        [np.asarray(b['labels'], np.float64)[b[where] > 0] for b in sample])
    layer('label_scale').set_statistics(
        np.full([spec.output_units], labels.mean()),
        np.full([spec.output_units], labels.std() or 1.0))
  summary = {'sample_batches': len(sample), 'input_rows': int(raw.shape[0]),
             'conv_rows': int(conv.shape[0]), 'feature_rows': int(
                 feats.shape[0]), 'features': int(feats.shape[1])}
  # 5. The head, in closed form.
  if fit_head:
    one_shot = iter(batches) is batches
    summary.update(_fit_head(model, spec, sample if one_shot else batches,
                             rng))
  return summary
