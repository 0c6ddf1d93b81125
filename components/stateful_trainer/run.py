"""One training run, start to export: typed arguments in, artifacts out.

``run(TrainerArgs(...))`` is what the TFX executor calls after decoding its
artifacts; it is also usable without TFX (notebooks, tests). No TFX import.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
import types
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

import tensorflow as tf
import tf_keras as keras

from components.stateful_trainer import distribution
from components.stateful_trainer.checkpoints import CHECKPOINT_SUBDIR
from components.stateful_trainer.checkpoints import Checkpoints
from components.stateful_trainer.checkpoints import EXPORTED
from components.stateful_trainer.checkpoints import prepare_checkpoints
from components.stateful_trainer.checkpoints import REFIT_SUBDIR
from components.stateful_trainer.checkpoints import RUN_FILE
from components.stateful_trainer.checkpoints import TRAINING
from components.stateful_trainer import export
from components.stateful_trainer import fingerprint as fingerprint_lib
from components.stateful_trainer import model_setup
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful import module_contract
from components.stateful_trainer import settings
from components.stateful_trainer import optimizers
from components.stateful_trainer import progress
from components.stateful_trainer import selection as selection_lib
from components.stateful_trainer import training
from components.stateful import batches as batches_lib
from components.stateful import objective as objective_lib
from components.stateful.distribution import replicas
from components.stateful.distribution import shards

_LOG = logging.getLogger(__name__)

HISTORY_FILE = 'history.json'
SUMMARY_SUBDIR = 'tensorboard'


@dataclasses.dataclass(frozen=True)
class TrainerArgs:
  """Everything a run needs.

  Attributes:
    batches_uri: the SequenceBatches URI (``metadata.json`` + ``Split-*``).
    model_uri: the Model artifact URI (``stateful/`` goes here).
    serving_model_dir: where the SavedModel goes (``<model_uri>/Format-
      Serving`` under TFX).
    model_run_dir: TensorBoard logs, ``history.json`` and (by default)
      checkpoints.
    module_file: a Python file with ``build_model(spec)``; None: the shipped
      ``default_model``.
    module: an already imported module (takes precedence over module_file).
    train_split: the split to train on.
    eval_split: the split to evaluate on, or None.
    task: ``classification``/``regression``; None: classification for
      integer labels, regression for float labels.
    num_classes: classification classes; None: ``max(label) + 1``.
    output_size: regression outputs per step (the batches carry scalar
      labels, so 1).
    hyperparameters: passed to the module as ``spec.hyperparameters``; also
      ``optimizer``, ``learning_rate``, ``clip_global_norm``, ``momentum``.
    train: loop settings (epochs, seed, ...).
    transform_graph_uri: a TransformGraph URI to embed in the serving model.
    checkpoint_root: a persistent folder: this run's checkpoints go to
      ``<checkpoint_root>/<fingerprint digest>/``, so a later run with the
      same inputs (``fingerprint.run_fingerprint``) resumes them and any
      other starts fresh; they are removed once the model is exported.
    checkpoint_dir: the checkpoints' folder exactly (instead of
      ``checkpoint_root``): resumed when they are of a run with the same
      fingerprint that has not exported its model, else a
      ``fingerprint.CheckpointMismatchError``. Neither set:
      ``<model_run_dir>/checkpoints`` (this run only).
    fresh: ignore (and remove) the checkpoints of an earlier run with the
      same inputs and start from the first step.
  """
  batches_uri: str
  model_uri: str
  serving_model_dir: str
  model_run_dir: str
  module_file: Optional[str] = None
  module: Optional[types.ModuleType] = None
  train_split: str = 'train'
  eval_split: Optional[str] = 'eval'
  task: Optional[str] = None
  num_classes: Optional[int] = None
  output_size: Optional[int] = None
  hyperparameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  train: settings.TrainConfig = settings.TrainConfig()
  transform_graph_uri: Optional[str] = None
  checkpoint_root: Optional[str] = None
  checkpoint_dir: Optional[str] = None
  fresh: bool = False


@dataclasses.dataclass
class RunResult:
  spec: ms.ModelSpec
  fit: training.FitResult
  model: keras.Model
  serving_model_dir: str
  stateful_dir: str
  fingerprint: Optional[fingerprint_lib.Fingerprint] = None
  # Wall seconds per phase (``progress.PHASES``, then ``total``); the
  # chief's, also in history.json.
  phases: Optional[Dict[str, float]] = None


_SAME_LAYOUT = ('batch_size', 'num_unroll', 'num_features', 'feature_names',
                'label_kind', 'label_dtype')


def _open_sources(args: TrainerArgs):
  train = batches_lib.BatchSource.open(args.batches_uri, args.train_split)
  eval_source = None
  if args.eval_split:
    eval_source = batches_lib.BatchSource.open(args.batches_uri, args.eval_split)
    diff = [k for k in _SAME_LAYOUT
            if eval_source.meta[k] != train.meta[k]]
    if diff:
      raise ValueError(f'eval split {args.eval_split!r} differs from train '
                       f'split {args.train_split!r} in {diff}')
  return train, eval_source


def make_spec(args: TrainerArgs, meta: Mapping[str, Any],
              label_stats: Mapping[str, Any]) -> ms.ModelSpec:
  """The training ``ModelSpec`` from the batches' metadata and the args."""
  task = args.task or (ms.CLASSIFICATION if meta['label_dtype'] == 'int64'
                       else ms.REGRESSION)
  num_classes = output_size = None
  if task == ms.CLASSIFICATION:
    if meta['label_dtype'] != 'int64':
      raise batches_lib.LabelError(
          f'classification needs integer class labels; the batches have '
          f'{meta["label_dtype"]} labels. Use task=\'regression\'.')
    num_classes = args.num_classes or batches_lib.infer_num_classes(label_stats)
  else:
    output_size = args.output_size or 1
  return ms.ModelSpec(
      batch_size=int(meta['batch_size']), num_unroll=int(meta['num_unroll']),
      stateful=True, feature_names=tuple(meta['feature_names']),
      label_kind=meta['label_kind'], task=task, num_classes=num_classes,
      output_size=output_size, hyperparameters=dict(args.hyperparameters),
      seed=args.train.seed,
      typical_length=max(1, int(round(float(meta['median_length']))))
      if meta.get('median_length') else None)


def settings_of(args: TrainerArgs) -> dict:
  """Every setting of a run that can change its model (the fingerprint's
  ``settings``): each ``TrainConfig`` field as given (the seed among them),
  the hyperparameters, the task and sizes, the splits."""
  return {'train': args.train.fingerprinted(),
          'hyperparameters': dict(args.hyperparameters),
          'task': args.task, 'num_classes': args.num_classes,
          'output_size': args.output_size, 'train_split': args.train_split,
          'eval_split': args.eval_split}


def fingerprint_of(args: TrainerArgs, module) -> fingerprint_lib.Fingerprint:
  """The run's fingerprint (``fingerprint.run_fingerprint``)."""
  return fingerprint_lib.run_fingerprint(
      batches_uri=args.batches_uri,
      transform_graph_uri=args.transform_graph_uri,
      module_source=model_io.module_source_path(module),
      settings=settings_of(args))


def fit_model(model: keras.Model, *, module: types.ModuleType,
              spec: ms.ModelSpec, dist: distribution.Distribution,
              optimizer: Callable[[], keras.optimizers.Optimizer],
              save_dir: Optional[str] = None,
              **fit_args) -> training.FitResult:
  """``training.fit`` of the stateful ``model`` where ``dist`` says.

  One process: ``model`` trains, its state in its variables. Under a
  strategy: its serving twin, built in the strategy's scope with
  ``model``'s weights (the optimizer too: ``optimizer()`` is called
  there), trains with each replica's lanes' state passed in and out of the
  step; the trained weights are copied back into ``model``.
  """
  if dist.strategy is None:
    return training.fit(model, optimizer=optimizer(), save_dir=save_dir,
                        **fit_args)
  with dist.strategy.scope():
    made = optimizer()
    twin = model_io.build_serving(module, spec, weights_from=model)
  result = training.fit(
      twin, optimizer=made, save_dir=save_dir,
      lanes=replicas.ReplicaLanes(dist.strategy, spec.batch_size),
      **fit_args)
  model.set_weights(twin.get_weights())
  return result


def _check_refit(model: keras.Model, chosen: List[np.ndarray],
                 chosen_fit: training.FitResult,
                 refit: training.FitResult) -> Optional[Dict[str, Any]]:
  """Keeps the refit unless it fails on the validation carve.

  The refit trained on every sequence, the carve's included, for as many
  epochs as the carve chose; it should score at least as well there as the
  chosen epoch's weights, which never saw those sequences. Strictly worse
  means the longer run on more data went astray (it diverged, or stayed on
  a plateau the carve run left): ``model`` gets the chosen weights back.
  Both are scored by the same pass after training (``FitResult.carve``).

  Returns:
    What was compared and kept (``history.json``'s ``refit_check``), or
    None when either was not scored (an unfinished run).
  """
  if chosen_fit.carve is None or refit.carve is None:
    return None
  name, chosen_score = selection_lib.BestWeights.score_of(chosen_fit.carve)
  _, refit_score = selection_lib.BestWeights.score_of(refit.carve)
  # float32, as the metrics accumulate: a tie is no failure.
  failed = bool(np.float32(refit_score) > np.float32(chosen_score))
  if failed:
    model.set_weights(chosen)
    _LOG.warning(
        'refit: its validation-carve %s (%s) is worse than the chosen '
        "epoch's (%s), though it trained on the carve: exporting the chosen "
        "epoch's weights instead", name, progress.fmt_metrics(refit.carve),
        progress.fmt_metrics(chosen_fit.carve))
  else:
    _LOG.info("refit kept: its validation-carve %s is at least the chosen "
              "epoch's (%s; chosen %s)", name,
              progress.fmt_metrics(refit.carve),
              progress.fmt_metrics(chosen_fit.carve))
  return {'score': name, 'chosen': dict(chosen_fit.carve),
          'refit': dict(refit.carve),
          'kept': 'chosen' if failed else 'refit'}


def run(args: TrainerArgs, *, clock: Callable[[], float] = time.monotonic,
        after_step: Optional[Callable[[int], Optional[bool]]] = None
       ) -> RunResult:
  """Trains, evaluates, checkpoints and exports. See ``TrainerArgs``.

  With ``args.train.replicas`` > 1 or a multi-worker ``TF_CONFIG`` it
  trains data-parallel (``distribution``, ``components.stateful.replicas``);
  only the chief exports.
  """
  phases = progress.Phases()  # Wall seconds per phase: history.json.
  # First: a multi-worker strategy must exist before any TensorFlow op.
  dist = distribution.make_distribution(args.train.replicas)
  train, eval_source = _open_sources(args)
  if int(train.meta['batch_size']) % dist.num_replicas:
    raise replicas.LaneLayoutError(
        f'the batches of {args.batches_uri} have {train.meta["batch_size"]} '
        f'lanes, which {dist.num_replicas} replicas cannot share: write them '
        'with a batch_size that is a multiple of the replica count (the '
        'SequenceBatcher\'s --replicas rounds it up)')
  if args.transform_graph_uri:  # Before training: fails in seconds.
    export.check_transform_features(args.transform_graph_uri,
                                    tuple(train.meta['feature_names']))
  stats = batches_lib.scan_labels(train)
  spec = make_spec(args, train.meta, stats)
  batches_lib.check_labels(spec, train.meta['label_dtype'], stats)
  module = model_io.resolve_module(args.module_file, args.module)
  spec = model_setup.label_scale(spec, args.train, module, stats)
  if eval_source is not None:
    batches_lib.check_labels(spec, eval_source.meta['label_dtype'],
                          batches_lib.scan_labels(eval_source))
  _LOG.info('training %s: %s', args.batches_uri, spec)
  fp = fingerprint_of(args, module)
  ckpts = prepare_checkpoints(args, fp, dist.is_chief)
  # A worker other than the chief saves its (identical) checkpoints where
  # no resume looks, and resumes from the chief's.
  worker_dir = (None if dist.is_chief else
                tempfile.mkdtemp(prefix=f'tss-{dist.task_type}-'
                                 f'{dist.task_id}-checkpoints-'))
  config = args.train
  hooks = module_contract.hooks_of(module)
  module_epochs = (hooks.default_epochs(spec)
                   if hooks.default_epochs is not None else None)
  # The initial weights are a candidate of the validation carve: adapt
  # then fits them without the carve's labels (and the weights of every
  # sequence for the refit, from the same pass where the hook can; else the
  # refit adapts again).
  epochs_planned = config.epochs if config.epochs is not None else (
      module_epochs if module_epochs is not None else 1)
  hold_out = (config.validation_fraction if config.score_initial and
              epochs_planned > 0 and hooks.adapt is not None else 0.0)
  any_length = config.random_truncation > 0  # It feeds parts of batches.
  # On several workers each fits the model's statistics on its own lanes.
  shard = shards.of(dist.strategy, dist.num_workers, spec.batch_size)
  refitting = config.refit and config.validation_fraction > 0
  # With a carve, adapt's one pass also fits the refit's weights (every
  # labelled step) where the module's hook can (``model_setup.Refit``).
  shared = model_setup.Refit() if hold_out and refitting else None
  phases.end('setup')
  model, fitted = model_setup.build(module, spec, train, args.train.seed,
                                    hold_out, any_length, shard, shared)
  initial_weights = model.get_weights()  # Seeded and adapted: the refit's.
  phases.end('adapt', note='the model built and adapted')
  if config.score_initial and not fitted:
    # Random initial weights are no candidate: on a small carve one can
    # outscore every trained epoch by chance.
    config = config.replace(score_initial=False)
    if config.validation_fraction > 0:
      _LOG.info('the initial weights are not a candidate of the validation '
                'carve: the model module\'s adapt fitted nothing (no hook, '
                'or an empty summary)')
  if (not fitted and config.validation_fraction > 0 and
      config.min_carve_sequences > 0):
    # A handful of held-out sequences cannot choose an epoch (one sequence
    # moves its accuracy by more than an epoch's gain): a model trained by
    # gradient steps from random weights then trains on every sequence for
    # the epoch budget and keeps its last weights.
    held = batches_lib.count_validation_sequences(
        train, config.validation_fraction)
    if held < config.min_carve_sequences:
      _LOG.info('no validation carve: %g of the keys would hold %d '
                'sequence(s), fewer than min_carve_sequences=%d; training '
                'on every sequence for the epoch budget, the last weights '
                'kept (no selection, no refit)', config.validation_fraction,
                held, config.min_carve_sequences)
      config = config.replace(validation_fraction=0.0)
      refitting = False
  if config.epochs is None and module_epochs is not None:
    config = config.replace(epochs=int(module_epochs))
    _LOG.info('epochs: %d (unset; the model module\'s default_epochs%s)',
              config.epochs, ': its weights were fitted by adapt'
              if config.epochs == 0 else '')
  elif config.epochs is None:
    config = config.replace(
        epochs=settings.epochs_rule(int(train.meta['num_sequences'])))
    _LOG.info('epochs: %d (unset; the epochs rule for %d training sequences: '
              '%d sequences seen, %d to %d epochs)', config.epochs,
              int(train.meta['num_sequences']),
              settings.EPOCHS_TARGET_EXAMPLES, settings.EPOCHS_MIN,
              settings.EPOCHS_MAX)
  why = 'set'
  if config.label_scoring is None:
    hook = hooks.label_scoring
    if hook:
      scoring, why = hook(spec), "the model module's label_scoring"
    else:
      scoring, why = model_setup.label_scoring_rule(model, spec)
    config = dataclasses.replace(config, label_scoring=scoring)
  if spec.label_kind == ms.PER_SEQUENCE:
    _LOG.info('per-sequence labels scored in training: %s (%s)',
              config.label_scoring, why)
  objective = objective_lib.make_objective(spec, module)
  checkpoint_dir = ckpts.path
  optimizer_config = settings.OptimizerConfig.from_hyperparameters(
      settings.optimizer_hyperparameters(module, spec))
  if config.epochs:
    _LOG.info('optimizer: %s (the run\'s hyperparameters over the model '
              'module\'s optimizer_defaults over the trainer\'s)',
              optimizer_config)

  def fit(model, config, subdir, score_carve=0.0):
    total_steps = max(1, config.epochs * train.num_batches)
    common = dict(
        objective=objective, train=train, eval_source=eval_source,
        config=config,
        checkpoint_dir=os.path.join(checkpoint_dir, subdir) if subdir else
        checkpoint_dir,
        summary_dir=os.path.join(args.model_run_dir, SUMMARY_SUBDIR,
                                 subdir or '') if dist.is_chief else None,
        clock=clock, after_step=after_step, fingerprint=fp.digest,
        score_carve=score_carve)
    return fit_model(
        model, module=module, spec=spec, dist=dist,
        optimizer=lambda: optimizers.make_optimizer(optimizer_config,
                                                    total_steps),
        save_dir=None if worker_dir is None else os.path.join(
            worker_dir, subdir or 'main'), **common)

  result = fit(model, config, None,
               config.validation_fraction if refitting else 0.0)
  phases.end('training', less=result.validation_seconds,
             note=f'{len(result.epochs)} epochs, {result.steps} steps; the '
             'validation carve\'s passes apart')
  phases.add('validation', result.validation_seconds, quiet=True)
  selection = None
  refit_check = None
  if refitting and result.finished and result.best_epoch is not None:
    selection = result
    chosen = model.get_weights()
    epochs = result.best_epoch + 1
    adapted = shared is not None and shared.weights is not None
    if epochs == 0:
      _LOG.info('refit: the validation carve chose the initial weights (no '
                'epoch improved on them); %s', 'no epoch, from the weights '
                "adapt's one pass fitted on every training sequence"
                if adapted else 'adapting again on every training sequence, '
                'no epoch' if hold_out else
                'no epoch on every training sequence')
    else:
      _LOG.info('refit: the validation carve chose epoch %d; training again '
                'from the same initial weights on every training sequence '
                'for %d epochs', epochs, epochs)
    if hold_out and not adapted:
      model, _ = model_setup.build(module, spec, train, args.train.seed,
                                   any_length=any_length, shard=shard)
    else:
      keras.utils.set_random_seed(args.train.seed)
      model = model_io.build_stateful(
          module, spec.replace(num_unroll=None) if any_length else spec)
      model.set_weights(shared.weights if adapted else initial_weights)
    result = fit(model, config.replace(
        epochs=epochs, validation_fraction=0.0, early_stopping_patience=0),
                 REFIT_SUBDIR, config.validation_fraction)
    refit_check = _check_refit(model, chosen, selection, result)
    phases.end('refit', less=result.validation_seconds,
               note=f'{epochs} epochs; its carve score apart')
    phases.add('validation', result.validation_seconds, quiet=True)
  phases.log('validation', 'the passes over the validation carve')
  if not dist.is_chief:
    tf.io.gfile.rmtree(worker_dir)
    _LOG.info('%s done after %d steps: the chief exports', dist.name,
              result.steps)
    return RunResult(spec=spec, fit=result, model=model,
                     serving_model_dir=args.serving_model_dir,
                     stateful_dir='', fingerprint=fp)
  twin = model_io.build_serving(module, spec, weights_from=model)
  export.export_serving_model(args.serving_model_dir, twin, spec,
                              args.transform_graph_uri)
  stateful_dir = model_io.save_stateful(args.model_uri, model, spec, module)
  fingerprint_lib.write(os.path.join(stateful_dir, fingerprint_lib.FILE),
                        fp.to_dict())
  phases.end('export', note='the serving SavedModel and stateful/')
  history = {
      'fingerprint': fp.digest,
      'spec': spec.to_dict(),
      'steps': result.steps,
      'finished': result.finished,
      'stop_reason': result.stop_reason,
      'replicas': dist.num_replicas, 'workers': dist.num_workers,
      'resumed_from': result.resumed_from,
      'epochs': [e.as_dict() for e in result.epochs],
      'evaluations': [{'step': s, **m} for s, m in result.evaluations],
      'refit_check': refit_check,
      'selection': None if selection is None else {
          'best_epoch': selection.best_epoch,
          'stop_reason': selection.stop_reason,
          'epochs': [e.as_dict() for e in selection.epochs],
          'evaluations': [{'step': s, **m}
                          for s, m in selection.evaluations]},
      'phases': phases.as_dict(),
  }
  tf.io.gfile.makedirs(args.model_run_dir)
  with tf.io.gfile.GFile(os.path.join(args.model_run_dir, HISTORY_FILE),
                         'w') as f:
    f.write(json.dumps(history, indent=1, sort_keys=True) + '\n')
  _LOG.info('exported %s and %s', args.serving_model_dir, stateful_dir)
  _LOG.info('phases (seconds): %s', ', '.join(
      f'{k} {v:.1f}' for k, v in history['phases'].items()))
  ckpts.mark(EXPORTED)  # First: never resumed, even if the removal stops.
  ckpts.clear()
  _LOG.info('removed the checkpoints in %s (the model is exported)',
            ckpts.path)
  return RunResult(spec=spec, fit=result, model=model,
                   serving_model_dir=args.serving_model_dir,
                   stateful_dir=stateful_dir, fingerprint=fp,
                   phases=history['phases'])
