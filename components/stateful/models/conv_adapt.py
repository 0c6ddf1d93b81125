"""Fitting the default conv model's data-dependent weights before training
(its ``adapt`` hook; ``default_model.py`` builds the model).

In lane order over the train split, with the model's own stateful layers:

1. the robust input scale (median and interquartile range per feature);
2. the PPV thresholds: a random quantile of each kernel's output copy;
3. the feature standardisation, on the steps the loss reads;
4. for regression, the label scale;
5. the linear head in closed form (``head.py``, ``ridge.py``), on a
   uniform (bottom-k) sample of at most ``HEAD_MAX_ROWS`` labelled steps
   (per-step regression: a linear autoregression on the lags from Gram
   statistics of every labelled step, then the other features on what it
   leaves; see ``_fit_head``).

On several workers each reads its own lanes and every statistic is
combined (``distribution/shards.py``): samples are drawn on lane-order positions (1-4)
or by a per-row priority that does not depend on the worker (5, a bottom-k
sample), Gram statistics are summed, and the model runs with grappler's
arithmetic optimizer off (``steps.exact_arithmetic``), so R workers fit,
bit for bit, what one process fits on every lane.

With ``refit`` (the trainer's validation carve, ``adapt_conv``) the same
passes fit two sets of weights: those of the labelled steps outside the
carve (``label_weight``), which the carve then scores, and those of every
labelled step (``label_weight + carve_weight``), which the refit on every
sequence starts from. Steps 1 and 2 do not read labels, so they are shared;
3 to 5 keep the rows of both (or a bottom-k sample of each) from one
stream, and fit the second set exactly as a separate ``adapt`` on every
labelled step would.
"""

import copy
import itertools
import logging
import time
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful import steps as steps_lib
from components.stateful.distribution import shards
from components.stateful.models import head as head_lib
from components.stateful.models import ridge
from components.stateful.models import row_sampling
from components.stateful.state import protocol as state

_LOG = logging.getLogger(__name__)

# Training sample used by the statistics: batches read in order, steps kept.
ADAPT_MAX_BATCHES = 400
ADAPT_MAX_ROWS = 20000
# Rows (labelled steps) the closed-form head is fitted on, at most; beyond
# this, a uniform random sample of them.
HEAD_MAX_ROWS = 40000
# PPV thresholds: the quantile of each kernel's output is drawn from this.
PPV_QUANTILES = (0.1, 0.9)


def _runner(model: keras.Model, outputs: tf.Tensor):
  """``run(features, reset) -> outputs`` of the stateful ``model`` on one
  batch, compiled (traced on its first call; one per pass it serves)."""
  probe = keras.Model(model.inputs, outputs)

  @tf.function(autograph=False)
  def run(features, reset):
    return steps_lib.run_model(probe, features, reset, training=False)

  return run


def _stream(model: keras.Model, outputs: tf.Tensor,
            batches: Iterable[Mapping[str, Any]], run=None
           ) -> Iterator[Tuple[Mapping[str, Any], np.ndarray]]:
  """Runs the stateful ``model`` over ``batches`` in lane order (every
  batch: the state must follow every step) and yields each batch with
  ``outputs`` [B, T, C] for it; all state is zeroed before and after.
  ``run``: ``_runner(model, outputs)``, when one is already traced."""
  run = run or _runner(model, outputs)
  state.zero_all(model)
  try:
    for batch in batches:
      yield batch, run(tf.constant(batch['features']),
                       tf.constant(batch['reset'])).numpy()
  finally:
    state.zero_all(model)


def _collect(model: keras.Model, outputs: tf.Tensor,
             batches: Iterable[Mapping[str, Any]], where: str,
             shard: shards.Shard, rng: np.random.Generator,
             run=None) -> np.ndarray:
  """A uniform sample (``_sample``) of ``outputs`` at real steps
  (``where='mask'``) or labelled steps (``'label_weight'``) of
  ``batches`` (``run``: as ``_stream``'s)."""
  rows = [out[np.asarray(batch[where]) > 0]
          for batch, out in _stream(model, outputs, batches, run)]
  out = row_sampling.uniform(shard, rows, rng, ADAPT_MAX_ROWS)
  if not out.shape[0]:
    raise ValueError(f'adapt: no step with {where} > 0 in the sample')
  return out


def _all_weight(batch: Mapping[str, Any]) -> np.ndarray:
  """Every labelled step's weight: the carve's (``carve_weight``, zero
  outside it) and the others' (``label_weight``, zero in it); their sum is
  the split's own label weight, exactly."""
  return np.asarray(batch['label_weight']) + np.asarray(batch['carve_weight'])


def _head_rows(model: keras.Model, batches: Iterable[Mapping[str, Any]],
               seed: int, shard: shards.Shard, every_row=None,
               carve: bool = False, run=None):
  """The head's input (the features before ``feature_scale``), label and
  sequence (an int per sequence) at the labelled steps of ``batches`` (one
  pass), in lane order over every worker: a uniform sample of
  ``HEAD_MAX_ROWS`` of them when there are more, the rows of smallest
  ``row_sampling.row_priorities`` (a bottom-k sample, which workers merge by keeping the
  k smallest of their own k smallest).

  ``carve``: the batches also carry ``carve_weight`` (the validation
  carve's labelled steps, which ``label_weight`` leaves out); returns a
  pair: the rows of ``label_weight``, and those of every labelled step
  (the bottom-k sample of both: of the union of each part's bottom-k), the
  same as this function on batches whose ``label_weight`` is both.

  ``every_row(x, y, groups, in_carve)``, when given, sees each of this
  worker's labelled steps (the carve's too, ``in_carve`` True) before the
  sampling, in lane order within each batch.

  Returns:
    ``(x, y, groups, seen)``, or a pair of them with ``carve``.
  """
  train_pool, carve_pool = row_sampling.BottomK(HEAD_MAX_ROWS), row_sampling.BottomK(HEAD_MAX_ROWS)
  started = time.monotonic()
  sequence = None  # Per lane: the number of sequences started so far.
  labels = np.zeros(0)  # Its dtype and trailing shape: the batches'.
  stream = _stream(model, model.get_layer('features_all').output, batches,
                   run)
  for i, (batch, out) in enumerate(stream):
    # Labelled steps are kept, with their sequence (global lane, count of
    # resets) as group.
    weight = np.asarray(batch['label_weight'])
    sel = (_all_weight(batch) if carve else weight) > 0
    labels = np.asarray(batch['labels'])
    reset = np.zeros(sel.shape, np.int64)  # Per step, [b, T].
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
    lanes, steps = np.nonzero(sel)
    lanes = lanes + shard.lane_offset
    x, y = out[sel], labels[sel]
    g = lanes * (1 << 32) + count[sel]
    in_carve = ~(weight[sel] > 0)
    if every_row is not None:
      every_row(x, y, g, in_carve)
    keys = row_sampling.row_keys(i, lanes, steps)
    priority = row_sampling.row_priorities(seed, keys)
    if in_carve.any():
      train = ~in_carve
      train_pool.add(x[train], y[train], g[train], keys[train],
                     priority[train])
      carve_pool.add(x[in_carve], y[in_carve], g[in_carve], keys[in_carve],
                     priority[in_carve])
    else:
      train_pool.add(x, y, g, keys, priority)
    if (i + 1) % 1000 == 0:
      _LOG.info('head features: %d batches, %d labelled steps (%.0f '
                'batches/s)', i + 1, train_pool.seen + carve_pool.seen,
                (i + 1) / max(time.monotonic() - started, 1e-9))
  dim = int(model.get_layer('features_all').output.shape[-1])
  train = row_sampling.union_sample([train_pool], shard, dim, labels)
  if not carve:
    return train
  return train, row_sampling.union_sample([train_pool, carve_pool], shard,
                                          dim, labels)


def _lag_columns(model: keras.Model) -> int:
  """How many of the head's last input columns are the linear lags (0:
  the model has none)."""
  try:
    return int(model.get_layer('lags').output.shape[-1])
  except ValueError:
    return 0


def _fit_head(model: keras.Model, spec, batches: Iterable[Mapping[str, Any]],
              shard: shards.Shard, scales: head_lib.Scales,
              refit_scales: Optional[head_lib.Scales] = None, run=None):
  """Ridge head (see the module docstring) on the bottom-k sample of at most
  ``HEAD_MAX_ROWS`` labelled steps (``_head_rows``), standardised by
  ``scales``; set on ``model``.

  Per-step regression with lags, in two stages: (1) a linear
  autoregression on the lag columns alone, fitted on every labelled step
  (not only the sample) from accumulated Gram statistics
  (``ridge.GramRidge``), its penalty chosen with whole sequences held
  out; (2) the ridge on all features, on the sample, fitted to what (1)
  leaves, kept only when its held-out error is below that of leaving the
  residual alone. The head is their sum, so it represents persistence and
  any linear autoregression on the lags exactly, without shrinking them
  together with thousands of other features.

  ``refit_scales``: the batches carry ``carve_weight`` too; the head of
  every labelled step (standardised by these) is fitted from the same pass.
  ``run``: the traced ``_runner`` of ``features_all``, when there is one.

  Returns:
    (summary, the refit's head weights or None, its summary or None).
  """
  per_step = spec.label_kind == 'per_step'
  lags = _lag_columns(model) if (spec.task == 'regression' and
                                 per_step) else 0
  outputs = spec.output_units
  carve = refit_scales is not None
  gram = ridge.GramRidge(lags, outputs) if lags else None
  gram_all = ridge.GramRidge(lags, outputs) if lags and carve else None

  def every_row(x, y, g, in_carve):
    train = ~in_carve
    if train.all():
      gram.add(scales.features(x, lags), scales.labels(y, outputs), g)
    elif train.any():
      gram.add(scales.features(x[train], lags),
               scales.labels(y[train], outputs), g[train])
    if gram_all is not None:
      gram_all.add(refit_scales.features(x, lags),
                   refit_scales.labels(y, outputs), g)

  rows = _head_rows(model, batches, int(spec.seed), shard,
                    every_row if gram is not None else None, carve=carve,
                    run=run)
  rows, rows_all = rows if carve else (rows, None)
  for g in (gram, gram_all):
    if g is not None:  # Every worker's labelled steps.
      g.combine(shard.sum)
  head, summary = head_lib.solve_head(spec, lags, scales, rows, gram)
  model.get_layer('head').set_weights(head)
  if not carve:
    return summary, None, None
  head_all, summary_all = head_lib.solve_head(spec, lags, refit_scales,
                                              rows_all, gram_all)
  return summary, head_all, summary_all


def adapt_conv(model: keras.Model, spec,
               batches: Iterable[Mapping[str, Any]], *,
               fit_head: bool = True,
               shard: Optional[shards.Shard] = None,
               refit=None) -> Dict[str, Any]:
  """Fits the conv model's data-dependent weights on the train split.

  ``batches`` are numpy dicts (``features``, ``reset``, ``mask``,
  ``label_weight``, ``labels``) in lane order from the start of the train
  split. The statistics read the first ``ADAPT_MAX_BATCHES``; the ridge head
  (``fit_head``) reads every batch in a second pass when ``batches`` can be
  iterated again and hold more (a one-shot iterator: the head is fitted on
  that sample; fewer: the sample is every batch, not read again).
  Deterministic for a given seed. On several workers (``shard``: see
  ``shards.py``) ``batches`` hold this worker's lanes and the model has as
  many; every statistic is combined across the workers, so each fits the
  weights one process fits on every lane.

  ``refit``: the batches also carry ``carve_weight``, the label weight of
  the validation carve's steps (which ``label_weight`` leaves out); the
  same passes also fit the weights of every labelled step (the carve's
  too), as ``adapt_conv`` on batches whose ``label_weight`` were both
  would, and hand them over by ``refit.set(weights, summary)`` (weights
  in ``model.get_weights()`` order). ``model`` gets those of
  ``label_weight``, as without ``refit``.

  Returns:
    A short summary (for the log).
  """
  with steps_lib.exact_arithmetic():
    return _adapt_conv(model, spec, batches, fit_head,
                       shard or shards.Shard(), refit)


def _label_rows(sample, weight_of, shard):
  """Regression labels of the steps ``weight_of(batch)`` weights."""
  return row_sampling.uniform(shard, [np.asarray(b['labels'], np.float64)[
      weight_of(b) > 0] for b in sample], None, max_rows=None)


def _adapt_conv(model, spec, batches, fit_head, shard,
                refit=None) -> Dict[str, Any]:
  sample = list(itertools.islice(batches, ADAPT_MAX_BATCHES))
  rng = np.random.default_rng(int(spec.seed) + 12345)
  layer = model.get_layer
  # 1. Robust input scale: median and interquartile range per feature.
  raw = row_sampling.uniform(shard, [b['features'][b['mask'] > 0] for b in sample],
                            rng, ADAPT_MAX_ROWS)
  q25, med, q75 = np.percentile(raw, [25, 50, 75], axis=0)
  iqr = q75 - q25
  spread = np.where(iqr > 0, iqr, raw.std(axis=0))
  layer('input_scale').set_statistics(med, spread)
  # 2. PPV thresholds: a random quantile of each kernel's output (of each
  # copy of it, one threshold per copy).
  conv = _collect(model, layer('conv_pool').input, sample, 'mask', shard,
                  rng)
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
  # 3. Feature standardisation, on the steps the loss reads (and, for the
  # refit, on every labelled step: the same stream, the same draws).
  weight_of = lambda b: np.asarray(b['label_weight'])  # pylint: disable=unnecessary-lambda-assignment
  # Traced once for this pass and the head's.
  features = _runner(model, layer('features_all').output)
  if refit is None:
    feats = _collect(model, layer('features_all').output, sample,
                     'label_weight', shard, rng, features)
  else:
    rows, rows_all = [], []
    for batch, out in _stream(model, layer('features_all').output, sample,
                              features):
      rows.append(out[weight_of(batch) > 0])
      rows_all.append(out[_all_weight(batch) > 0])
    rng_all = copy.deepcopy(rng)  # The refit draws what the carve run does.
    feats = row_sampling.uniform(shard, rows, rng, ADAPT_MAX_ROWS)
    if not feats.shape[0]:
      raise ValueError('adapt: no step with label_weight > 0 in the sample')
    feats_all = row_sampling.uniform(shard, rows_all, rng_all,
                                     ADAPT_MAX_ROWS)
  scales = [feats.mean(axis=0), feats.std(axis=0) + 1e-3]
  scales_all = (None if refit is None else
                [feats_all.mean(axis=0), feats_all.std(axis=0) + 1e-3])
  # 4. Regression: outputs in the label's units.
  if spec.task == 'regression':
    for stats, weights in ((scales, weight_of), (scales_all, _all_weight)):
      if stats is not None:
        labels = _label_rows(sample, weights, shard)
        stats += [np.full([spec.output_units], labels.mean()),
                  np.full([spec.output_units], labels.std() or 1.0)]
  scales = head_lib.Scales.make(*scales)
  scales.set(model)
  summary = {'sample_batches': len(sample), 'input_rows': int(raw.shape[0]),
             'conv_rows': int(conv.shape[0]), 'feature_rows': int(
                 feats.shape[0]), 'features': int(feats.shape[1])}
  head_all = summary_all = None
  if refit is not None:
    scales_all = head_lib.Scales.make(*scales_all)
    summary_all = {**summary, 'feature_rows': int(feats_all.shape[0])}
  # 5. The head, in closed form.
  if fit_head:
    # The sample is every batch when the batches ran out before
    # ``ADAPT_MAX_BATCHES`` (then they are not read again).
    whole = iter(batches) is batches or len(sample) < ADAPT_MAX_BATCHES
    fitted, head_all, fitted_all = _fit_head(
        model, spec, sample if whole else batches, shard, scales,
        scales_all, features)
    summary.update(fitted)
    if refit is not None:
      summary_all.update(fitted_all)
  if refit is not None:
    _hand_over_refit(model, scales, scales_all, head_all, refit, summary_all)
  return summary


def _hand_over_refit(model, scales: head_lib.Scales,
                     scales_all: head_lib.Scales, head_all, refit,
                     summary_all) -> None:
  """``refit.set`` with ``model``'s weights where the label-dependent ones
  are those of every labelled step; ``model`` keeps its own."""
  head = model.get_layer('head')
  kept = head.get_weights()
  scales_all.set(model)
  if head_all is not None:
    head.set_weights(head_all)
  weights = model.get_weights()
  scales.set(model)
  head.set_weights(kept)
  refit.set(weights, summary_all)
