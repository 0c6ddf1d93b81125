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
from components.stateful_trainer.checkpoints import Checkpoints
from components.stateful_trainer.checkpoints import EXPORTED
from components.stateful_trainer.checkpoints import prepare_checkpoints
from components.stateful_trainer.checkpoints import RUN_FILE
from components.stateful_trainer import export
from components.stateful_trainer import fingerprint as fingerprint_lib
from components.stateful_trainer import model_setup
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful import module_contract
from components.stateful_trainer import settings
from components.stateful_trainer import optimizers
from components.stateful_trainer import progress
from components.stateful_trainer import recipe as recipe_lib
from components.stateful_trainer import refit as refit_lib
from components.stateful_trainer import training
from components.stateful_trainer import validation
from components.stateful import batches as batches_lib
from components.stateful import objective as objective_lib
from components.stateful.distribution import lanes
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


@dataclasses.dataclass
class Prepared:
  """What the ``prepare`` phase opened and checked: the splits, the model's
  spec and module, the fingerprint, the checkpoints and where this process
  trains (``dist``)."""
  dist: distribution.Distribution
  train: batches_lib.BatchSource
  eval_source: Optional[batches_lib.BatchSource]
  spec: ms.ModelSpec
  module: types.ModuleType
  hooks: module_contract.ModuleHooks
  fp: fingerprint_lib.Fingerprint
  ckpts: Checkpoints
  # A worker other than the chief saves its (identical) checkpoints where
  # no resume looks (here), and resumes from the chief's.
  worker_dir: Optional[str]


def prepare(args: TrainerArgs) -> Prepared:
  """Phase ``setup``: the splits opened and checked, the spec, the module,
  the fingerprint and the checkpoints."""
  # First: a multi-worker strategy must exist before any TensorFlow op.
  dist = distribution.make_distribution(args.train.replicas)
  train, eval_source = _open_sources(args)
  try:  # The one lane rule: each replica owns B / R lanes.
    lanes.lanes_of(0, dist.num_replicas, int(train.meta['batch_size']))
  except lanes.LaneLayoutError as e:
    raise lanes.LaneLayoutError(f'the batches of {args.batches_uri}: {e}'
                                ) from None
  if args.transform_graph_uri:  # Before training: fails in seconds.
    export.check_transform_features(args.transform_graph_uri,
                                    tuple(train.meta['feature_names']))
  stats = batches_lib.label_statistics(train)
  spec = make_spec(args, train.meta, stats)
  batches_lib.check_labels(spec, train.meta['label_dtype'], stats)
  module = model_io.resolve_module(args.module_file, args.module)
  spec = model_setup.label_scale(spec, args.train, module, stats)
  if eval_source is not None:
    batches_lib.check_labels(spec, eval_source.meta['label_dtype'],
                             batches_lib.label_statistics(eval_source))
  _LOG.info('training %s: %s', args.batches_uri, spec)
  fp = fingerprint_of(args, module)
  return Prepared(
      dist=dist, train=train, eval_source=eval_source, spec=spec,
      module=module, hooks=module_contract.hooks_of(module), fp=fp,
      ckpts=prepare_checkpoints(args, fp, dist.is_chief),
      worker_dir=None if dist.is_chief else tempfile.mkdtemp(
          prefix=f'tss-{dist.task_type}-{dist.task_id}-checkpoints-'))


@dataclasses.dataclass
class Adapted:
  """What the ``adapt`` phase built: the model with its initial weights."""
  model: keras.Model
  fitted: bool  # The module's adapt fitted weights (a carve candidate).
  initial_weights: List[np.ndarray]  # Seeded and adapted: the refit's.
  hold_out: float  # The carve adapt left out.
  any_length: bool  # Batches fed in parts (randomised truncation).
  shard: Any  # This worker's lanes (``shards.of``).
  shared: Optional[model_setup.Refit]  # The refit's weights, if adapted.
  module_epochs: Optional[int]  # The module's ``default_epochs``.


def adapt(args: TrainerArgs, p: Prepared) -> Adapted:
  """Phase ``adapt``: the model built and its module's ``adapt`` run."""
  config, hooks = args.train, p.hooks
  module_epochs = (hooks.default_epochs(p.spec)
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
  shard = shards.of(p.dist.strategy, p.dist.num_workers, p.spec.batch_size)
  refitting = settings.refits(config)
  # With a carve, adapt's one pass also fits the refit's weights (every
  # labelled step) where the module's hook can (``model_setup.Refit``).
  shared = model_setup.Refit() if hold_out and refitting else None
  model, fitted = model_setup.build(p.module, p.spec, p.train, config.seed,
                                    hold_out, any_length, shard, shared)
  return Adapted(model=model, fitted=fitted,
                 initial_weights=model.get_weights(), hold_out=hold_out,
                 any_length=any_length, shard=shard, shared=shared,
                 module_epochs=module_epochs)


def fitter(args: TrainerArgs, p: Prepared, r: recipe_lib.Recipe, *,
           clock: Callable[[], float],
           after_step: Optional[Callable[[int], Optional[bool]]]
          ) -> Callable[..., training.FitResult]:
  """``fit(model, config, subdir, score_carve=0.0, plateau=None)``: one
  ``training.fit`` of this run (the carve run, or the refit in
  ``subdir``), its checkpoints, summaries and optimizer set up; one
  ``validation.CarveScorer`` for all of them (the carve laid out once)."""
  scorer = validation.CarveScorer(p.train, r.objective)

  def fit(model, config, subdir, score_carve=0.0, plateau=None):
    total_steps = (r.plan.planned_steps if plateau is not None else
                   max(1, config.epochs * p.train.num_batches))
    return fit_model(
        model, module=p.module, spec=p.spec, dist=p.dist,
        optimizer=lambda: optimizers.make_optimizer(
            r.optimizer, total_steps, plateau),
        save_dir=None if p.worker_dir is None else os.path.join(
            p.worker_dir, subdir or 'main'),
        objective=r.objective, train=p.train, eval_source=p.eval_source,
        config=config,
        checkpoint_dir=os.path.join(p.ckpts.path, subdir) if subdir else
        p.ckpts.path,
        summary_dir=os.path.join(args.model_run_dir, SUMMARY_SUBDIR,
                                 subdir or '') if p.dist.is_chief else None,
        clock=clock, after_step=after_step, fingerprint=p.fp.digest,
        score_carve=score_carve, plateau=plateau, scorer=scorer)

  return fit


def run(args: TrainerArgs, *, clock: Callable[[], float] = time.monotonic,
        after_step: Optional[Callable[[int], Optional[bool]]] = None
       ) -> RunResult:
  """Trains, evaluates, checkpoints and exports. See ``TrainerArgs``.

  The phases, each timed (``history.json``'s ``phases``): ``prepare``,
  ``adapt``, the recipe settled, train and select (``training.fit`` on the
  carve), ``refit.refit``, ``export_run``. With ``args.train.replicas`` > 1
  or a multi-worker ``TF_CONFIG`` it trains data-parallel
  (``distribution``, ``components.stateful.distribution.replicas``); only the chief
  exports.
  """
  phases = progress.Phases()  # Wall seconds per phase: history.json.
  p = prepare(args)
  phases.end('setup')
  a = adapt(args, p)
  phases.end('adapt', note='the model built and adapted')
  r = recipe_lib.recipe(args, p, a)
  fit = fitter(args, p, r, clock=clock, after_step=after_step)
  plateau = r.plan.plateau()
  carve_run = fit(a.model, r.config, None,
                  r.config.validation_fraction if r.refitting else 0.0,
                  plateau)
  phases.end('training', less=carve_run.validation_seconds,
             note=f'{len(carve_run.epochs)} epochs, {carve_run.steps} steps; '
             'the validation carve\'s passes apart')
  phases.add('validation', carve_run.validation_seconds, quiet=True)
  done = refit_lib.refit(args, p, a, r, fit, carve_run, plateau, phases)
  phases.log('validation', 'the passes over the validation carve')
  if not p.dist.is_chief:
    tf.io.gfile.rmtree(p.worker_dir)
    _LOG.info('%s done after %d steps: the chief exports', p.dist.name,
              done.result.steps)
    return RunResult(spec=p.spec, fit=done.result, model=done.model,
                     serving_model_dir=args.serving_model_dir,
                     stateful_dir='', fingerprint=p.fp)
  return export_run(args, p, r, done, plateau, phases)


def export_run(args: TrainerArgs, p: Prepared, r: recipe_lib.Recipe,
               done: 'refit_lib.Trained', plateau, phases: progress.Phases
              ) -> RunResult:
  """Phase ``export``: the serving SavedModel, ``stateful/`` and
  ``history.json``; the checkpoints removed."""
  model, result, selection = done.model, done.result, done.selection
  twin = model_io.build_serving(p.module, p.spec, weights_from=model)
  export.export_serving_model(args.serving_model_dir, twin, p.spec,
                              args.transform_graph_uri)
  stateful_dir = model_io.save_stateful(args.model_uri, model, p.spec,
                                        p.module)
  fingerprint_lib.write(os.path.join(stateful_dir, fingerprint_lib.FILE),
                        p.fp.to_dict())
  phases.end('export', note='the serving SavedModel and stateful/')
  history = {
      'fingerprint': p.fp.digest,
      'spec': p.spec.to_dict(),
      'steps': result.steps,
      'finished': result.finished,
      'stop_reason': result.stop_reason,
      'replicas': p.dist.num_replicas, 'workers': p.dist.num_workers,
      'resumed_from': result.resumed_from,
      'epochs': [e.as_dict() for e in result.epochs],
      'evaluations': [{'step': s, **m} for s, m in result.evaluations],
      'refit_check': done.refit_check,
      'budget': r.plan.describe(r.config, plateau),
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
  p.ckpts.mark(EXPORTED)  # First: never resumed, even if the removal stops.
  p.ckpts.clear()
  _LOG.info('removed the checkpoints in %s (the model is exported)',
            p.ckpts.path)
  return RunResult(spec=p.spec, fit=result, model=model,
                   serving_model_dir=args.serving_model_dir,
                   stateful_dir=stateful_dir, fingerprint=p.fp,
                   phases=history['phases'])
