"""The default conv model's closed-form head as its ``adapt`` fits it
(step 5, ``conv_adapt.py``): the head's rows, kept batch by batch of the
features pass (``HeadRows``: a bottom-k sample of the labelled steps, of
both fits with the validation carve), the per-step head's Gram statistics
of the lag columns of every labelled step (``LagGram``), and the head
solved from them (``fit_head``; the maths: ``head.py``, ``ridge.py``).
"""

from typing import Any, Mapping, Optional

import numpy as np
import tf_keras as keras

from components.stateful.distribution import shards
from components.stateful.models import adapt_passes
from components.stateful.models import head as head_lib
from components.stateful.models import ridge
from components.stateful.models import row_sampling

# Rows (labelled steps) the closed-form head is fitted on, at most; beyond
# this, a uniform random sample of them.
HEAD_MAX_ROWS = 40000


class HeadRows:
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
    self._gram: Optional[LagGram] = None
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
    sel = (adapt_passes.all_weight(batch) if self.carve else weight) > 0
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

  def set_gram(self, gram: 'LagGram') -> None:
    """The lag columns kept so far, then those of every later batch, go
    to ``gram``, in batch order."""
    self._gram = gram
    for lag_rows in self._lag_rows:
      gram.add(*lag_rows)
    self._lag_rows = []

  @property
  def gram(self) -> Optional['LagGram']:
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


class LagGram:
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


def lag_columns(model: keras.Model) -> int:
  """How many of the head's last input columns are the linear lags (0:
  the model has none)."""
  try:
    return int(model.get_layer('lags').output.shape[-1])
  except ValueError:
    return 0


def fit_head(model: keras.Model, spec, rows: HeadRows,
             shard: shards.Shard, scales: head_lib.Scales,
             refit_scales: Optional[head_lib.Scales] = None):
  """Ridge head (``conv_adapt.py``, step 5) on the bottom-k sample of at
  most ``HEAD_MAX_ROWS`` labelled steps (``rows``, filled by the pass),
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
