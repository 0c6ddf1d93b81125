"""Fitting the default conv model's data-dependent weights before training
(its ``adapt`` hook; ``default_model.py`` builds the model).

In lane order over the train split, with the model's own stateful layers:

1. the robust input scale (median and interquartile range per feature);
2. the PPV thresholds: a random quantile of each kernel's output copy
   (``ppv_thresholds.py``);
3. the feature standardisation, on the steps the loss reads;
4. for regression, the label scale;
5. the linear head in closed form (``head_rows.py``; the maths:
   ``head.py``, ``ridge.py``), on a uniform (bottom-k) sample of at most
   ``head_rows.HEAD_MAX_ROWS`` labelled steps (per-step regression: a
   linear autoregression on the lags from Gram statistics of every
   labelled step, then the other features on what it leaves; see
   ``head_rows.fit_head``).

This module runs the steps in that order (``adapt_conv``) and fits 1, 3 and
4 itself. The batches are read once, and the model runs over them in two
passes of one traced function (``adapt_passes.py``), which gives both the
kernels' outputs and the features: the first pass samples the kernels'
outputs for 2 (the thresholds must be set before the features exist), the
second reads the features for 3 and 5 together. The uniform samples of 1 to
3 are drawn from the row counts before a pass (``row_sampling.Uniform``),
so a pass copies only the sampled rows. 3 and 4 are fitted as soon as the
second pass has read the statistics' sample (the first
``ADAPT_MAX_BATCHES``), and the pass goes on to the last batch for 5: the
head's rows are kept as the pass gives them (before ``feature_scale``) and
standardised at the end; the per-step head's Gram statistics take each
batch's lag columns once the scales are known (those of the sample's
batches are kept until then).

On several workers each reads its own lanes and every statistic is combined
(``distribution/shards.py``): samples are drawn on lane-order positions
(1-4) or by a per-row priority that does not depend on the worker (5, a
bottom-k sample), Gram statistics are summed, and the model runs with
grappler's arithmetic optimizer off (``steps.exact_arithmetic``), so R
workers fit, bit for bit, what one process fits on every lane.

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
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np
import tf_keras as keras

from components.stateful import steps as steps_lib
from components.stateful.distribution import shards
from components.stateful.models import adapt_passes
from components.stateful.models import head as head_lib
from components.stateful.models import head_rows as head_rows_lib
from components.stateful.models import ppv_thresholds
from components.stateful.models import row_sampling

_LOG = logging.getLogger(__name__)

# Training sample used by the statistics: batches read in order, steps kept.
ADAPT_MAX_BATCHES = 400
ADAPT_MAX_ROWS = 20000


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
                          (rows_all, adapt_passes.all_weight)):
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
  steps, all_weight = adapt_passes.weighted_steps, adapt_passes.all_weight
  # 1. Robust input scale: median and interquartile range per feature.
  raw = row_sampling.uniform(
      shard, [b['features'][b['mask'] > 0] for b in sample], rng,
      ADAPT_MAX_ROWS)
  q25, med, q75 = np.percentile(raw, [25, 50, 75], axis=0)
  iqr = q75 - q25
  spread = np.where(iqr > 0, iqr, raw.std(axis=0))
  layer('input_scale').set_statistics(med, spread)
  # One traced function for both passes over the batches: the kernels'
  # outputs (the thresholds' pass) and the features (the other steps').
  kernels, copies = ppv_thresholds.kernel_outputs(model)
  run = adapt_passes.runner(model, [kernels, layer('features_all').output])
  # 2. PPV thresholds: a random quantile of each kernel's output (of each
  # copy of it, one threshold per copy).
  conv_rows = ppv_thresholds.fit_thresholds(model, run, sample, shard, rng,
                                            copies, ADAPT_MAX_ROWS)
  # 3-5 from one pass over the features: the standardisation's rows are
  # drawn first (on the sample's labelled steps; for the refit, on every
  # labelled step: the same stream, the same draws), the head's rows are
  # kept unstandardised and standardised once the scales are known.
  # The refit draws what the carve run does.
  rng_all = None if refit is None else copy.deepcopy(rng)
  rows = row_sampling.Uniform(
      shard, [steps(b['label_weight']).size for b in sample], rng,
      ADAPT_MAX_ROWS)
  rows_all = None if refit is None else row_sampling.Uniform(
      shard, [steps(all_weight(b)).size for b in sample], rng_all,
      ADAPT_MAX_ROWS)
  dim = int(layer('features_all').output.shape[-1])
  head_rows = None
  source = sample
  if fit_head:
    per_step = spec.label_kind == 'per_step'
    head_rows = head_rows_lib.HeadRows(
        spec.seed, shard, dim, carve=refit is not None,
        lags=head_rows_lib.lag_columns(model) if (
            spec.task == 'regression' and per_step) else 0)
    # Past the sample, the same reading goes on (a one-shot iterator: the
    # head is fitted on the sample).
    if reader is not batches:
      source = itertools.chain(sample, reader)
  fitted = None  # (scales, scales_all), once the sample's batches are in.

  def scales_of_the_sample():
    scales = _scales(spec, sample, shard, rows, rows_all)
    if head_rows is not None and head_rows.lags:
      head_rows.set_gram(head_rows_lib.LagGram(
          head_rows.lags, spec.output_units, *scales))
    return scales

  started = time.monotonic()
  for i, (batch, (_, out)) in enumerate(adapt_passes.stream(model, run,
                                                            source)):
    out = out.numpy()
    if i < len(sample):
      flat = out.reshape(-1, dim)
      rows.add(i, flat, steps(batch['label_weight']))
      if rows_all is not None:
        rows_all.add(i, flat, steps(all_weight(batch)))
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
             'conv_rows': conv_rows, 'feature_rows': rows.size,
             'features': dim}
  head_all = summary_all = None
  if refit is not None:
    summary_all = {**summary, 'feature_rows': rows_all.size}
  # 5. The head, in closed form.
  if head_rows is not None:
    fitted, head_all, fitted_all = head_rows_lib.fit_head(
        model, spec, head_rows, shard, scales, scales_all)
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
