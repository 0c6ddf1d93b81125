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

The batches are read once, and the model runs over them in two passes of
one traced function (``_runner``), which gives both the kernels' outputs
and the features: the first pass samples the kernels' outputs for 2 (the
thresholds must be set before the features exist), the second reads the
features for 3 and 5 together. The uniform samples of 1 to 3 are drawn
from the row counts before a pass (``row_sampling.Uniform``), so a pass
copies only the sampled rows. 3 and 4 are fitted as soon as the second
pass has read the statistics' sample (the first ``ADAPT_MAX_BATCHES``),
and the pass goes on to the last batch for 5: the head's rows are kept as
the pass gives them (before ``feature_scale``) and standardised at the
end; the per-step head's Gram statistics take each batch's lag columns
once the scales are known (those of the sample's batches are kept until
then).

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
from typing import (Any, Dict, Iterable, Iterator, Mapping, Optional,
                    Sequence, Tuple)

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


def _runner(model: keras.Model, outputs: Sequence[tf.Tensor]):
  """``run(features, reset) -> [outputs]`` of the stateful ``model`` on
  one batch, compiled (traced on its first call): one function for both
  passes, which read different ``outputs`` of it."""
  probe = keras.Model(model.inputs, list(outputs))

  @tf.function(autograph=False)
  def run(features, reset):
    return steps_lib.run_model(probe, features, reset, training=False)

  return run


def _stream(model: keras.Model, run, batches: Iterable[Mapping[str, Any]]
           ) -> Iterator[Tuple[Mapping[str, Any], Sequence[tf.Tensor]]]:
  """Runs the stateful ``model`` over ``batches`` in lane order (every
  batch: the state must follow every step) and yields each batch with
  ``run``'s outputs for it (``_runner``; tensors, ``[B, T, C]`` each); all
  state is zeroed before and after."""
  state.zero_all(model)
  try:
    for batch in batches:
      yield batch, run(tf.constant(batch['features']),
                       tf.constant(batch['reset']))
  finally:
    state.zero_all(model)


def _steps(weight) -> np.ndarray:
  """Positions (in ``[B * T]``, lane order) of the steps ``weight`` [B, T]
  weights."""
  return np.flatnonzero(np.asarray(weight) > 0)


def _all_weight(batch: Mapping[str, Any]) -> np.ndarray:
  """Every labelled step's weight: the carve's (``carve_weight``, zero
  outside it) and the others' (``label_weight``, zero in it); their sum is
  the split's own label weight, exactly."""
  return np.asarray(batch['label_weight']) + np.asarray(batch['carve_weight'])


def _conv_rows(model: keras.Model, run, sample, shard: shards.Shard,
               rng: np.random.Generator) -> np.ndarray:
  """Step 2's pass: a uniform sample of at most ``ADAPT_MAX_ROWS`` of the
  kernels' outputs (``run``'s first, ``_kernel_outputs``) at the real
  steps of ``sample``."""
  rows = row_sampling.Uniform(shard, [_steps(b['mask']).size for b in sample],
                              rng, ADAPT_MAX_ROWS)
  for i, (batch, (conv, _)) in enumerate(_stream(model, run, sample)):
    conv = conv.numpy()
    rows.add(i, conv.reshape(-1, conv.shape[-1]), _steps(batch['mask']))
  out = rows.gather()
  if not out.shape[0]:
    raise ValueError('adapt: no step with mask > 0 in the sample')
  return out


def _kernel_outputs(model: keras.Model) -> Tuple[tf.Tensor, int]:
  """The kernels' outputs (``conv_outputs``, ``[B, T, U]``) and how many
  copies of them the PPV pool reads: its input is the copies side by side,
  so its column c is kernel ``c % U``'s output."""
  kernels = model.get_layer('conv_outputs').output
  pooled = model.get_layer('conv_pool').input
  copies = int(pooled.shape[-1]) // int(kernels.shape[-1])
  inputs = [pooled] if copies == 1 else model.get_layer('conv_copies').input
  if len(inputs) != copies or any(t is not kernels for t in inputs):
    raise ValueError('adapt: the PPV pool does not read copies of '
                     'conv_outputs')
  return kernels, copies


def _thresholds(kernels: np.ndarray, qs: np.ndarray) -> np.ndarray:
  """``np.quantile`` of each PPV column c at ``qs[c]`` (float64[U *
  copies]) from the kernels' sampled outputs ``[N, U]`` (column c reads
  kernel ``c % U``): one partition per kernel for the quantiles of all its
  copies (NumPy gives each the bits it gives it alone)."""
  width = kernels.shape[1]
  out = np.empty(qs.size)
  for u in range(width):
    out[u::width] = np.quantile(kernels[:, u], qs[u::width])
  return out


class _HeadRows:
  """The head's rows, batch by batch of one pass (``add``): the input (the
  features before ``feature_scale``), label and sequence (an int per
  sequence) at the labelled steps, in lane order over every worker; a
  uniform sample of ``HEAD_MAX_ROWS`` of them when there are more, the rows
  of smallest ``row_sampling.row_priorities`` (a bottom-k sample, which
  workers merge by keeping the k smallest of their own k smallest).

  ``carve``: the batches also carry ``carve_weight`` (the validation
  carve's labelled steps, which ``label_weight`` leaves out); ``sample``
  then gives a pair: the rows of ``label_weight``, and those of every
  labelled step (the bottom-k sample of both: of the union of each part's
  bottom-k), the same as without ``carve`` on batches whose
  ``label_weight`` is both.

  ``lags`` > 0: the last ``lags`` columns of every labelled step of this
  worker (the carve's too) go to the Gram statistics, batch by batch
  (``set_gram``); until the scales they need are known (after the
  statistics' sample) they are kept.
  """

  def __init__(self, seed: int, shard: shards.Shard, dim: int,
               carve: bool = False, lags: int = 0):
    self._seed, self._shard, self._dim = int(seed), shard, int(dim)
    self.carve, self.lags = bool(carve), int(lags)
    self._train = row_sampling.BottomK(HEAD_MAX_ROWS)
    self._carve = row_sampling.BottomK(HEAD_MAX_ROWS)
    # (x[:, -lags:], y, groups, in_carve) per batch, until ``set_gram``.
    self._lag_rows = []
    self._gram: Optional[_LagGram] = None
    self._sequence = None  # Per lane: the number of sequences started.
    self._labels = np.zeros(0)  # Its dtype and trailing shape: the batches'.

  @property
  def seen(self) -> int:
    """This worker's labelled steps so far."""
    return self._train.seen + self._carve.seen

  def add(self, index: int, batch: Mapping[str, Any],
          features: np.ndarray) -> None:
    """Batch ``index`` of the pass and its ``features`` [B, T, D]."""
    # Labelled steps are kept, with their sequence (global lane, count of
    # resets) as group.
    weight = np.asarray(batch['label_weight'])
    sel = (_all_weight(batch) if self.carve else weight) > 0
    labels = self._labels = np.asarray(batch['labels'])
    reset = np.zeros(sel.shape, np.int64)  # Per step, [b, T].
    if np.ndim(batch['reset']) == 2:  # dense
      reset[:] = batch['reset']
    else:
      reset[:, 0] = batch['reset']
    if self._sequence is None:
      self._sequence = np.zeros(reset.shape[0], np.int64)
    count = self._sequence[:, None] + np.cumsum(reset, axis=1)
    self._sequence = count[:, -1]
    if not sel.any():
      return
    lanes, steps = np.nonzero(sel)
    lanes = lanes + self._shard.lane_offset
    y, g = labels[sel], lanes * (1 << 32) + count[sel]
    in_carve = ~(weight[sel] > 0)
    keys = row_sampling.row_keys(index, lanes, steps)
    priority = row_sampling.row_priorities(self._seed, keys)
    x = features[sel]
    if self.lags:
      lag_rows = (x[:, -self.lags:].copy(), y, g, in_carve)
      if self._gram is None:
        self._lag_rows.append(lag_rows)
      else:
        self._gram.add(*lag_rows)
    if in_carve.any():
      train = ~in_carve
      self._train.add(x[train], y[train], g[train], keys[train],
                      priority[train])
      self._carve.add(x[in_carve], y[in_carve], g[in_carve],
                      keys[in_carve], priority[in_carve])
    else:
      self._train.add(x, y, g, keys, priority)

  def set_gram(self, gram: '_LagGram') -> None:
    """The lag columns kept so far, then those of every later batch, go
    to ``gram``, in batch order."""
    self._gram = gram
    for lag_rows in self._lag_rows:
      gram.add(*lag_rows)
    self._lag_rows = []

  @property
  def gram(self) -> Optional['_LagGram']:
    """The Gram statistics (``set_gram``), or None (no lags)."""
    return self._gram

  def sample(self):
    """``(x, y, groups, seen)`` over every worker (collectives), or a pair
    of them with ``carve``."""
    train = row_sampling.union_sample([self._train], self._shard, self._dim,
                                      self._labels)
    if not self.carve:
      return train
    return train, row_sampling.union_sample([self._train, self._carve],
                                            self._shard, self._dim,
                                            self._labels)


class _LagGram:
  """The per-step head's Gram statistics (``ridge.GramRidge``) of the lag
  columns of every labelled step, standardised by ``scales`` (the steps of
  ``label_weight``) and, with ``refit_scales``, by those (every labelled
  step, the carve's too)."""

  def __init__(self, lags: int, outputs: int, scales: head_lib.Scales,
               refit_scales: Optional[head_lib.Scales] = None):
    self._lags, self._outputs = lags, outputs
    self._scales, self._refit_scales = scales, refit_scales
    self.gram = ridge.GramRidge(lags, outputs)
    self.gram_all = (None if refit_scales is None else
                     ridge.GramRidge(lags, outputs))

  def add(self, x: np.ndarray, y: np.ndarray, g: np.ndarray,
          in_carve: np.ndarray) -> None:
    """One batch's labelled steps: lag columns ``x`` [n, lags], labels,
    sequences, and which are the carve's."""
    lags, outputs, scales = self._lags, self._outputs, self._scales
    train = ~in_carve
    if train.all():
      self.gram.add(scales.features(x, lags), scales.labels(y, outputs), g)
    elif train.any():
      self.gram.add(scales.features(x[train], lags),
                    scales.labels(y[train], outputs), g[train])
    if self.gram_all is not None:
      self.gram_all.add(self._refit_scales.features(x, lags),
                        self._refit_scales.labels(y, outputs), g)


def _lag_columns(model: keras.Model) -> int:
  """How many of the head's last input columns are the linear lags (0:
  the model has none)."""
  try:
    return int(model.get_layer('lags').output.shape[-1])
  except ValueError:
    return 0


def _fit_head(model: keras.Model, spec, rows: _HeadRows,
              shard: shards.Shard, scales: head_lib.Scales,
              refit_scales: Optional[head_lib.Scales] = None):
  """Ridge head (see the module docstring) on the bottom-k sample of at most
  ``HEAD_MAX_ROWS`` labelled steps (``rows``, filled by the pass),
  standardised by ``scales``; set on ``model``.

  Per-step regression with lags (``rows.lags``), in two stages: (1) a
  linear autoregression on the lag columns alone, fitted on every labelled
  step (not only the sample) from accumulated Gram statistics
  (``ridge.GramRidge``), its penalty chosen with whole sequences held
  out; (2) the ridge on all features, on the sample, fitted to what (1)
  leaves, kept only when its held-out error is below that of leaving the
  residual alone. The head is their sum, so it represents persistence and
  any linear autoregression on the lags exactly, without shrinking them
  together with thousands of other features.

  ``refit_scales``: ``rows.carve``; the head of every labelled step
  (standardised by these) is fitted from the same rows.

  Returns:
    (summary, the refit's head weights or None, its summary or None).
  """
  lags, carve = rows.lags, refit_scales is not None
  sample = rows.sample()
  sample, sample_all = sample if carve else (sample, None)
  gram = gram_all = None
  if rows.gram is not None:  # Every worker's labelled steps.
    gram, gram_all = rows.gram.gram, rows.gram.gram_all
    for g in (gram, gram_all):
      if g is not None:
        g.combine(shard.sum)
  head, summary = head_lib.solve_head(spec, lags, scales, sample, gram)
  model.get_layer('head').set_weights(head)
  if not carve:
    return summary, None, None
  head_all, summary_all = head_lib.solve_head(spec, lags, refit_scales,
                                              sample_all, gram_all)
  return summary, head_all, summary_all


def adapt_conv(model: keras.Model, spec,
               batches: Iterable[Mapping[str, Any]], *,
               fit_head: bool = True,
               shard: Optional[shards.Shard] = None,
               refit=None) -> Dict[str, Any]:
  """Fits the conv model's data-dependent weights on the train split.

  ``batches`` are numpy dicts (``features``, ``reset``, ``mask``,
  ``label_weight``, ``labels``) in lane order from the start of the train
  split, read once. The statistics read the first ``ADAPT_MAX_BATCHES``;
  the ridge head (``fit_head``) reads every batch (its pass goes on
  reading past the sample), unless ``batches`` is a one-shot iterator
  (``iter(batches) is batches``: the head is fitted on the sample).
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


def _scales(spec, sample, shard: shards.Shard, rows: row_sampling.Uniform,
            rows_all: Optional[row_sampling.Uniform]
           ) -> Tuple[head_lib.Scales, Optional[head_lib.Scales]]:
  """Steps 3 and 4: the feature standardisation on ``rows`` (the features
  at the sampled labelled steps of ``sample``) and, for regression, the
  label scale; the same of every labelled step with ``rows_all``."""
  out = []
  for part, weight_of in ((rows, lambda b: np.asarray(b['label_weight'])),
                          (rows_all, _all_weight)):
    if part is None:
      out.append(None)
      continue
    feats = part.gather()
    if not feats.shape[0]:
      raise ValueError('adapt: no step with label_weight > 0 in the sample')
    stats = [feats.mean(axis=0), feats.std(axis=0) + 1e-3]
    if spec.task == 'regression':  # Outputs in the label's units.
      labels = _label_rows(sample, weight_of, shard)
      stats += [np.full([spec.output_units], labels.mean()),
                np.full([spec.output_units], labels.std() or 1.0)]
    out.append(head_lib.Scales.make(*stats))
  return out[0], out[1]


def _adapt_conv(model, spec, batches, fit_head, shard,
                refit=None) -> Dict[str, Any]:
  reader = iter(batches)
  sample = list(itertools.islice(reader, ADAPT_MAX_BATCHES))
  rng = np.random.default_rng(int(spec.seed) + 12345)
  layer = model.get_layer
  # 1. Robust input scale: median and interquartile range per feature.
  raw = row_sampling.uniform(shard, [b['features'][b['mask'] > 0] for b in sample],
                            rng, ADAPT_MAX_ROWS)
  q25, med, q75 = np.percentile(raw, [25, 50, 75], axis=0)
  iqr = q75 - q25
  spread = np.where(iqr > 0, iqr, raw.std(axis=0))
  layer('input_scale').set_statistics(med, spread)
  # One traced function for both passes over the batches: the kernels'
  # outputs (the thresholds' pass) and the features (the other steps').
  kernels, copies = _kernel_outputs(model)
  run = _runner(model, [kernels, layer('features_all').output])
  # 2. PPV thresholds: a random quantile of each kernel's output (of each
  # copy of it, one threshold per copy).
  conv = _conv_rows(model, run, sample, shard, rng)
  qs = rng.uniform(*PPV_QUANTILES, size=conv.shape[1] * copies)
  thresholds = _thresholds(conv, qs)
  layer('conv_pool').threshold.assign(thresholds.astype(np.float32))
  try:  # The decaying PPV reads the kernels once: the first copy's.
    recent = layer('recent_conv')
  except ValueError:
    recent = None
  if recent is not None:
    recent.threshold.assign(
        thresholds[:recent.threshold.shape[0]].astype(np.float32))
  # 3-5 from one pass over the features: the standardisation's rows are
  # drawn first (on the sample's labelled steps; for the refit, on every
  # labelled step: the same stream, the same draws), the head's rows are
  # kept unstandardised and standardised once the scales are known.
  # The refit draws what the carve run does.
  rng_all = None if refit is None else copy.deepcopy(rng)
  rows = row_sampling.Uniform(
      shard, [_steps(b['label_weight']).size for b in sample], rng,
      ADAPT_MAX_ROWS)
  rows_all = None if refit is None else row_sampling.Uniform(
      shard, [_steps(_all_weight(b)).size for b in sample], rng_all,
      ADAPT_MAX_ROWS)
  dim = int(layer('features_all').output.shape[-1])
  head_rows = None
  source = sample
  if fit_head:
    per_step = spec.label_kind == 'per_step'
    head_rows = _HeadRows(spec.seed, shard, dim, carve=refit is not None,
                          lags=_lag_columns(model) if (
                              spec.task == 'regression' and per_step) else 0)
    # Past the sample, the same reading goes on (a one-shot iterator: the
    # head is fitted on the sample).
    if reader is not batches:
      source = itertools.chain(sample, reader)
  fitted = None  # (scales, scales_all), once the sample's batches are in.

  def scales_of_the_sample():
    scales = _scales(spec, sample, shard, rows, rows_all)
    if head_rows is not None and head_rows.lags:
      head_rows.set_gram(_LagGram(head_rows.lags, spec.output_units,
                                  *scales))
    return scales

  started = time.monotonic()
  for i, (batch, (_, out)) in enumerate(_stream(model, run, source)):
    out = out.numpy()
    if i < len(sample):
      flat = out.reshape(-1, dim)
      rows.add(i, flat, _steps(batch['label_weight']))
      if rows_all is not None:
        rows_all.add(i, flat, _steps(_all_weight(batch)))
    if head_rows is not None:
      head_rows.add(i, batch, out)
      if (i + 1) % 1000 == 0:
        _LOG.info('head features: %d batches, %d labelled steps (%.0f '
                  'batches/s)', i + 1, head_rows.seen,
                  (i + 1) / max(time.monotonic() - started, 1e-9))
    if i == len(sample) - 1:  # 3 and 4; the rest of the pass is the head's.
      fitted = scales_of_the_sample()
  scales, scales_all = fitted or scales_of_the_sample()
  scales.set(model)
  summary = {'sample_batches': len(sample), 'input_rows': int(raw.shape[0]),
             'conv_rows': int(conv.shape[0]), 'feature_rows': rows.size,
             'features': dim}
  head_all = summary_all = None
  if refit is not None:
    summary_all = {**summary, 'feature_rows': rows_all.size}
  # 5. The head, in closed form.
  if head_rows is not None:
    fitted, head_all, fitted_all = _fit_head(model, spec, head_rows, shard,
                                             scales, scales_all)
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
