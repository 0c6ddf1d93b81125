"""The model of a run before its first step: the spec's label scale, the
model built, checked against its serving twin and adapted to the train
split (optionally without the validation carve's labels), and where
per-sequence labels are scored when the module does not say.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Mapping, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful import batches as batches_lib
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful import module_contract
from components.stateful.distribution import shards
from components.stateful.state import protocol as state
from components.stateful_trainer import settings

_LOG = logging.getLogger(__name__)


def label_scale(spec: ms.ModelSpec, config: settings.TrainConfig, module,
                stats: Mapping[str, Any]) -> ms.ModelSpec:
  """``spec`` with the label mean and spread when regression labels are
  standardised (``TrainConfig.standardize_labels``; see there)."""
  if spec.task != ms.REGRESSION or not config.standardize_labels:
    return spec
  hook = module_contract.hooks_of(module).scales_labels
  if hook is not None and hook(spec):
    _LOG.info('regression labels: the model module scales them itself')
    return spec
  spread = float(stats['std']) if stats['std'] > 0 else 1.0
  _LOG.info('regression labels standardised for training: mean %.6g, '
            'standard deviation %.6g (outputs in label units through '
            'LabelUnits)', stats['mean'], spread)
  return spec.replace(label_center=float(stats['mean']), label_spread=spread)


class Passes:
  """The train split's batches as numpy dicts, in lane order (this
  worker's lanes of each, with ``shard``); every ``iter()`` is a new pass
  from the first batch."""

  def __init__(self, source: batches_lib.BatchSource,
               hold_out: float = 0.0, shard: Optional[shards.Shard] = None,
               mark_carve: bool = False):
    self._source = source
    self._hold_out = float(hold_out)
    self._shard = shard or shards.Shard()
    self._mark_carve = bool(mark_carve)

  def __iter__(self):
    batches = map(self._shard.local,
                  self._source.dataset(keys=None).as_numpy_iterator())
    if not self._hold_out:
      return batches
    return (self._without_carve(b) for b in batches)

  def _without_carve(self, batch):
    """The validation carve's labelled steps unweighted: what adapt fits
    from labels (the default model's closed-form head) does not see them,
    so the carve scores it as fairly as the epochs trained after it.
    With ``mark_carve`` they are ``carve_weight`` instead (zero elsewhere):
    an ``adapt`` that takes ``refit`` fits every labelled step from the
    same pass too."""
    valid = np.asarray(batches_lib.is_validation_key(
        tf.constant(batch['key']), self._hold_out))
    if valid.ndim == 1:
      valid = valid[:, None]
    weight = batch['label_weight']
    out = {**batch, 'label_weight': np.where(valid, 0.0, weight).astype(
        weight.dtype)}
    if self._mark_carve:
      out['carve_weight'] = np.where(valid, weight, 0.0).astype(weight.dtype)
    return out


class Refit:
  """What a module's ``adapt`` hands over when it takes ``refit``: the
  weights it fitted from the same pass on every labelled step, the
  validation carve's included (``model.get_weights()`` order), for the
  refit on every sequence, and their summary (for the log)."""

  def __init__(self):
    self.weights = None
    self.summary = None

  def set(self, weights, summary=None) -> None:
    self.weights = [np.array(w) for w in weights]
    self.summary = summary


def label_scoring_rule(model: keras.Model, spec: ms.ModelSpec):
  """(scoring, why) for a module without a ``label_scoring`` hook, from
  the model's structure (``state.trainable_behind_state``): when trainable
  weights shape a carried state (a last-step loss would reach them through
  the last segment only), ``batches.recurrent_scoring`` (``weighted`` for
  sequences of ``WEIGHTED_MIN_SEGMENTS`` segments or more, else
  ``last_step``); else ``last_step`` (what is trained reads the state, it
  does not shape it)."""
  behind = state.trainable_behind_state(model)
  if behind:
    shown = ', '.join(behind[:4]) + (' ...' if len(behind) > 4 else '')
    scoring, length = batches_lib.recurrent_scoring(spec)
    return scoring, (
        f'no label_scoring hook; trainable layers shape the carried state '
        f'({shown}), which a last-step loss reaches only through the last '
        f'segment; {length}')
  return batches_lib.LAST_STEP, ('no label_scoring hook; no trainable '
                                 'weight shapes the carried state')


def takes_shard(module) -> bool:
  """Whether the module's ``adapt`` hook takes ``shard`` (it combines its
  statistics across workers: ``components.stateful.distribution.shards``)."""
  try:
    return 'shard' in inspect.signature(
        module_contract.hooks_of(module).adapt).parameters
  except (TypeError, ValueError):
    return False


def takes_refit(module) -> bool:
  """Whether the module's ``adapt`` hook takes ``refit`` (it fits the
  weights of every labelled step from the same pass: ``Refit``)."""
  try:
    return 'refit' in inspect.signature(
        module_contract.hooks_of(module).adapt).parameters
  except (TypeError, ValueError):
    return False


def _adapt(module, model: keras.Model, spec: ms.ModelSpec, train,
           hold_out: float, shard: shards.Shard,
           refit: Optional[Refit] = None):
  """Runs the module's ``adapt`` on ``model``; on several workers, on this
  worker's lanes when the hook takes ``shard`` (a model of as many lanes
  is adapted, then its weights copied), else on every lane. Every worker
  then holds the chief's weights (``Shard.agree``). ``refit`` (for a hook
  that takes it): passed on, with the carve's steps marked in the batches
  (``Passes``' ``mark_carve``)."""
  adapt = module_contract.hooks_of(module).adapt
  extra = {} if refit is None else {'refit': refit}
  marked = refit is not None
  if not takes_shard(module):
    if shard.count > 1:
      _LOG.info('adapt on every worker over all %d lanes: the model '
                "module's adapt takes no shard (it cannot combine statistics "
                'across workers)', spec.batch_size)
    summary = adapt(model_io.module_model(model), spec,
                    Passes(train, hold_out, mark_carve=marked), **extra)
  elif shard.count == 1:
    summary = adapt(model_io.module_model(model), spec,
                    Passes(train, hold_out, mark_carve=marked), shard=shard,
                    **extra)
  else:
    start, stop = shard.lanes
    local_spec = spec.replace(batch_size=stop - start)
    local = model_io.build_stateful(module, local_spec)
    model_io.copy_weights(model, local)
    _LOG.info('adapt on %r; its statistics combined with the other '
              "workers'", shard)
    summary = adapt(model_io.module_model(local), local_spec,
                    Passes(train, hold_out, shard, marked), shard=shard,
                    **extra)
    model_io.copy_weights(local, model)
  if shard.count > 1:
    model.set_weights(shard.agree(model.get_weights()))
    if refit is not None and refit.weights is not None:
      refit.weights = list(shard.agree(refit.weights))
  return summary


def build(module, spec: ms.ModelSpec, train, seed: int,
          hold_out: float = 0.0, any_length: bool = False,
          shard: Optional[shards.Shard] = None,
          refit: Optional[Refit] = None):
  """The stateful model, seeded and adapted to the train split (its
  labelled steps outside the validation carve, with ``hold_out``), and
  whether ``adapt`` fitted anything (it ran and returned a non-empty
  summary).

  ``any_length``: the model takes segments of any length (built from the
  spec with ``num_unroll`` None; the same weights), as randomised
  truncation feeds it parts of a batch.

  ``shard``: this worker's part of the fit (``shards.of``); every worker
  ends with the same weights.

  ``refit``: with ``hold_out`` and a hook that takes it (``takes_refit``),
  the same pass also fits the weights of every labelled step, the carve's
  included, into ``refit``: what ``build`` without ``hold_out`` would fit,
  without a second pass (``refit.weights`` stay None when the hook fitted
  nothing for it). Ignored otherwise.

  The serving twin is built first and checked against it (same weights), so
  a module whose twin differs fails before adapting and training.
  """
  keras.utils.set_random_seed(seed)
  model = model_io.build_stateful(
      module, spec.replace(num_unroll=None) if any_length else spec)
  model_io.build_serving(module, spec, weights_from=model)  # Checks only.
  summary = None
  if module_contract.hooks_of(module).adapt is not None:
    started = time.monotonic()
    sharing = refit is not None and hold_out > 0 and takes_refit(module)
    summary = _adapt(module, model, spec, train, hold_out,
                     shard or shards.Shard(), refit if sharing else None)
    _LOG.info('adapted the model to the train split%s in %.1fs: %s',
              ' (labels of the validation carve held out)' if hold_out
              else '', time.monotonic() - started, summary)
    if sharing and refit.weights is not None:
      _LOG.info("the same pass fitted the refit's weights on every "
                "labelled step, the carve's included: %s", refit.summary)
  return model, bool(summary)
