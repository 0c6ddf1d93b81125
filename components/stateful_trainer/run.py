"""One training run, start to export: typed arguments in, artifacts out.

``run(TrainerArgs(...))`` is what the TFX executor calls after decoding its
artifacts; it is also usable without TFX (notebooks, tests). No TFX import.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import types
from typing import Any, Callable, Mapping, Optional

import tensorflow as tf
import tf_keras as keras

from components.stateful_trainer import export
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful_trainer import settings
from components.stateful_trainer import training
from components.stateful import batches as batches_lib
from components.stateful import objective as objective_lib

_LOG = logging.getLogger(__name__)

HISTORY_FILE = 'history.json'
CHECKPOINT_SUBDIR = 'checkpoints'
REFIT_SUBDIR = 'refit'  # Checkpoints of the refit, under the checkpoints.
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
    checkpoint_dir: checkpoints (a run resumes from the latest one there);
      None: ``<model_run_dir>/checkpoints``.
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
  checkpoint_dir: Optional[str] = None


@dataclasses.dataclass
class RunResult:
  spec: ms.ModelSpec
  fit: training.FitResult
  model: keras.Model
  serving_model_dir: str
  stateful_dir: str


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


class _Passes:
  """The train split's batches as numpy dicts, in lane order; every
  ``iter()`` is a new pass from the first batch."""

  def __init__(self, source: batches_lib.BatchSource):
    self._source = source

  def __iter__(self):
    return self._source.dataset(keys=None).as_numpy_iterator()


def _build(module, spec: ms.ModelSpec, train, seed: int) -> keras.Model:
  """The stateful model, seeded and adapted to the train split."""
  keras.utils.set_random_seed(seed)
  model = model_io.build_stateful(module, spec)
  if hasattr(module, 'adapt'):
    started = time.monotonic()
    summary = module.adapt(model, spec, _Passes(train))
    _LOG.info('adapted the model to the train split in %.1fs: %s',
              time.monotonic() - started, summary)
  return model


def run(args: TrainerArgs, *, clock: Callable[[], float] = time.monotonic,
        after_step: Optional[Callable[[int], Optional[bool]]] = None
       ) -> RunResult:
  """Trains, evaluates, checkpoints and exports. See ``TrainerArgs``."""
  train, eval_source = _open_sources(args)
  stats = batches_lib.scan_labels(train)
  spec = make_spec(args, train.meta, stats)
  batches_lib.check_labels(spec, train.meta['label_dtype'], stats)
  if eval_source is not None:
    batches_lib.check_labels(spec, eval_source.meta['label_dtype'],
                          batches_lib.scan_labels(eval_source))
  _LOG.info('training %s: %s', args.batches_uri, spec)
  module = model_io.resolve_module(args.module_file, args.module)
  model = _build(module, spec, train, args.train.seed)
  initial_weights = model.get_weights()  # Seeded and adapted: the refit's.
  config = args.train
  module_epochs = (module.default_epochs(spec)
                   if hasattr(module, 'default_epochs') else None)
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
  if config.label_scoring is None:
    hook = getattr(module, 'label_scoring', None)
    config = dataclasses.replace(
        config, label_scoring=hook(spec) if hook else batches_lib.LAST_STEP)
  if spec.label_kind == ms.PER_SEQUENCE:
    _LOG.info('per-sequence labels scored in training: %s',
              config.label_scoring)
  objective = objective_lib.make_objective(spec, module)
  checkpoint_dir = args.checkpoint_dir or os.path.join(args.model_run_dir,
                                                       CHECKPOINT_SUBDIR)

  def fit(model, config, subdir):
    optimizer = training.make_optimizer(
        settings.OptimizerConfig.from_hyperparameters(spec.hyperparameters),
        total_steps=max(1, config.epochs * train.num_batches))
    return training.fit(
        model, optimizer=optimizer, objective=objective, train=train,
        eval_source=eval_source, config=config,
        checkpoint_dir=os.path.join(checkpoint_dir, subdir) if subdir else
        checkpoint_dir,
        summary_dir=os.path.join(args.model_run_dir, SUMMARY_SUBDIR,
                                 subdir or ''),
        clock=clock, after_step=after_step)

  result = fit(model, config, None)
  selection = None
  if (config.refit and config.validation_fraction > 0 and result.finished
      and result.best_epoch is not None):
    selection = result
    epochs = result.best_epoch + 1
    _LOG.info('refit: the validation carve chose epoch %d; training again '
              'from the same initial weights on every training sequence for '
              '%d epochs', epochs, epochs)
    keras.utils.set_random_seed(args.train.seed)
    model = model_io.build_stateful(module, spec)
    model.set_weights(initial_weights)
    result = fit(model, config.replace(
        epochs=epochs, validation_fraction=0.0, early_stopping_patience=0),
                 REFIT_SUBDIR)
  twin = model_io.build_serving(module, spec, weights_from=model)
  export.export_serving_model(args.serving_model_dir, twin, spec,
                              args.transform_graph_uri)
  stateful_dir = model_io.save_stateful(args.model_uri, model, spec, module)
  history = {
      'spec': spec.to_dict(),
      'steps': result.steps,
      'finished': result.finished,
      'resumed_from': result.resumed_from,
      'epochs': [e.as_dict() for e in result.epochs],
      'evaluations': [{'step': s, **m} for s, m in result.evaluations],
      'selection': None if selection is None else {
          'best_epoch': selection.best_epoch,
          'epochs': [e.as_dict() for e in selection.epochs],
          'evaluations': [{'step': s, **m}
                          for s, m in selection.evaluations]},
  }
  tf.io.gfile.makedirs(args.model_run_dir)
  with tf.io.gfile.GFile(os.path.join(args.model_run_dir, HISTORY_FILE),
                         'w') as f:
    f.write(json.dumps(history, indent=1, sort_keys=True) + '\n')
  _LOG.info('exported %s and %s', args.serving_model_dir, stateful_dir)
  return RunResult(spec=spec, fit=result, model=model,
                   serving_model_dir=args.serving_model_dir,
                   stateful_dir=stateful_dir)
