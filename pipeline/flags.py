"""The pipeline's command-line flags, declared once for every front end.

``build_parser`` (the local runner's flags: the columns, the layout, every
``TrainConfig`` field, the evaluator's gate, resume, the recipe) and
``config_from_args`` (a ``PipelineConfig`` from parsed flags) are shared by
``pipeline/local_runner.py`` and ``kubeflow/compile.py``, so neither imports
the other and the two compile the same pipeline from the same flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Dict, List, Optional

from components.sequence_batcher import layout
from components.stateful.models import hyperparameters as hp_lib
from components.stateful_trainer import settings
from pipeline import pipeline_config

_DEFAULTS = pipeline_config.PipelineConfig()


def _positive(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'not an integer: {text!r}') from None
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
  return value


def _describe(default) -> str:
  if default is None:
    return 'unset'
  if isinstance(default, bool):
    return 'on' if default else 'off'
  return str(default)


def add_trainer_flags(parser: argparse.ArgumentParser,
                      defaults: settings.TrainConfig) -> None:
  """One flag per ``settings.TrainConfig`` field, with its help text and
  default (the single declaration of the trainer's settings)."""
  group = parser.add_argument_group(
      'trainer', 'StatefulTrainer settings (settings.TrainConfig)')
  for spec in settings.flag_specs():
    default = getattr(defaults, spec.name)
    text = f'{spec.help} (default: {_describe(default)})'
    if spec.kind is bool:  # The action appends "(default: ...)" itself.
      group.add_argument(spec.flag, dest=f'trainer.{spec.name}',
                         action=argparse.BooleanOptionalAction,
                         default=default, help=spec.help)
    else:
      group.add_argument(spec.flag, dest=f'trainer.{spec.name}',
                         type=spec.kind, default=default,
                         choices=spec.choices, help=text,
                         metavar=spec.name.upper())


def trainer_from_args(args: argparse.Namespace) -> settings.TrainConfig:
  values = {name[len('trainer.'):]: value for name, value in vars(args).items()
            if name.startswith('trainer.')}
  return settings.TrainConfig.from_dict(values)


def build_parser() -> argparse.ArgumentParser:
  d = _DEFAULTS
  p = argparse.ArgumentParser(
      prog='python -m pipeline.local_runner',
      description='Run the stateful-sequence TFX pipeline locally '
      '(LocalDagRunner, Beam DirectRunner, SQLite ML Metadata). Other flags '
      'must be Beam pipeline options (e.g. --runner=DaskRunner '
      '--dask_client_address=tcp://HOST:8786).')
  p.add_argument('--data-root', default=d.data_root,
                 help='CSV files (split by sequence key), or train/ and eval/ '
                 'subfolders; TFRecord SequenceExamples with '
                 '--input-format sequence_example')
  p.add_argument('--input-format', choices=('csv', 'sequence_example'),
                 default=d.input_format)
  p.add_argument('--key-column', default=d.key_column)
  p.add_argument('--order-column', default=d.order_column)
  p.add_argument('--label-column', default=d.label_column)
  p.add_argument('--label-kind', choices=('per_sequence', 'per_step'),
                 default=d.label_kind)
  p.add_argument('--task', choices=('classification', 'regression'),
                 default=d.task)
  p.add_argument('--feature-columns', default='',
                 help='comma-separated (default: every other numeric column)')
  p.add_argument('--exclude-columns', default='',
                 help='comma-separated columns to ignore')
  p.add_argument('--batch-size', type=_positive, default=d.batch_size,
                 help='B, lanes per batch (default: chosen from the train '
                 'split\'s sequence lengths: see docs/stateful_trainer.md, '
                 '"Defaults from the data")')
  p.add_argument('--num-unroll', type=_positive, default=d.num_unroll,
                 help='T, steps per segment (default: chosen from the train '
                 'split\'s sequence lengths)')
  p.add_argument('--mode', choices=layout.MODES, default=d.mode)
  p.add_argument('--max-sequence-length', type=_positive,
                 default=d.max_sequence_length,
                 help='longer sequences are an error, or cut to this length '
                 'with --truncate (default: no limit)')
  p.add_argument('--truncate', action='store_true', default=d.truncate,
                 help='cut sequences longer than --max-sequence-length to '
                 'their first steps (counted as truncated_timesteps) instead '
                 'of failing')
  add_trainer_flags(p, d.trainer)
  p.add_argument(
      '--recipe', choices=RECIPES, default=d.recipe,
      help='keras: train as Keras fit does, the floor the default recipe is '
      'measured against (BENCHMARKS.md section 13): whole sequences in one '
      'segment (bucketed mode; T the longest training sequence and B 32 '
      'unless given), every training sequence (no validation carve, no '
      'refit: the last weights), the order reshuffled every epoch, a '
      'constant learning rate without warm-up (settings.KERAS_RECIPE); the '
      'number of epochs as without it')
  p.add_argument('--module-file', default=None,
                 help='user model module (default: the shipped model)')
  p.add_argument('--hyperparameters', default='',
                 type=_hyperparameters, help=hp_lib.help_text()
                 .replace('%', '%%'))
  p.add_argument('--output-dir', default=d.output_dir)
  p.add_argument('--pipeline-name', default=d.pipeline_name)
  p.add_argument('--no-cache', action='store_true',
                 help='re-run every component even if its inputs are unchanged')
  add_checkpoint_flags(p)
  add_evaluator_flags(p)
  return p


def add_evaluator_flags(parser: argparse.ArgumentParser) -> None:
  """The StatefulEvaluator's no-skill gate (docs/stateful_evaluator.md)."""
  parser.add_argument(
      '--no-skill-margin', type=float, default=0.0,
      help='bless only a model that beats the no-skill predictors (majority '
      'class; training mean; last observed value) by this much: accuracy '
      'points for classification, a fraction of the no-skill MSE for '
      'regression (default 0: strictly better)')
  parser.add_argument(
      '--allow-no-skill', action='store_true',
      help='turn the no-skill gate off: a model no better than the no-skill '
      'predictors may be blessed (they are still reported)')
  parser.add_argument(
      '--skill-significance', type=float, default=0.05,
      help='level of the one-sided paired test that the model beats each '
      'no-skill predictor on the same eval examples (default 0.05; 1.0: no '
      'test, the margin alone decides)')


def add_checkpoint_flags(parser: argparse.ArgumentParser) -> None:
  """--checkpoint-dir and --fresh (the trainer's resume; docs/stateful_trainer.md, "Resume")."""
  parser.add_argument(
      '--checkpoint-dir', default=None,
      help='where the trainer keeps its checkpoints, e.g. a bucket; each set '
      'of trainer inputs (batches, transform graph, module, settings, seed) '
      'gets its own folder there, a re-run with the same inputs resumes an '
      'interrupted training from it, and it is removed once the model is '
      'exported (default: <pipeline root>/StatefulTrainer/checkpoints)')
  parser.add_argument(
      '--fresh', action='store_true',
      help='train from the first step even if an interrupted run with the '
      'same inputs left checkpoints (they are removed)')


def _hyperparameters(text: str) -> Dict:
  try:
    return hp_lib.parse(text)
  except hp_lib.HyperparametersError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def _local_path(path: Optional[str]) -> Optional[str]:
  """Absolute for a local path; a URI (gs://...) as given."""
  if not path or '://' in path:
    return path
  return os.path.abspath(path)


def _csv_list(text: str) -> List[str]:
  return [c.strip() for c in text.split(',') if c.strip()]


RECIPES = ('default', 'keras')
KERAS_BATCH_SIZE = 32  # Keras fit's default batch size.


def config_from_args(args: argparse.Namespace) -> pipeline_config.PipelineConfig:
  config = _config_from_args(args)
  if config.recipe == 'keras':
    config = dataclasses.replace(
        config, mode='bucketed',
        batch_size=config.batch_size or KERAS_BATCH_SIZE,
        trainer=config.trainer.replace(**settings.KERAS_RECIPE),
        hyperparameters={**settings.KERAS_OPTIMIZER,
                         **config.hyperparameters})
  return config


def _config_from_args(args: argparse.Namespace
                     ) -> pipeline_config.PipelineConfig:
  return pipeline_config.PipelineConfig(
      recipe=args.recipe,
      pipeline_name=args.pipeline_name,
      data_root=os.path.abspath(args.data_root),
      output_dir=os.path.abspath(args.output_dir),
      input_format=args.input_format, key_column=args.key_column,
      order_column=args.order_column, label_column=args.label_column,
      label_kind=args.label_kind, task=args.task,
      feature_columns=tuple(_csv_list(args.feature_columns)) or None,
      exclude_columns=tuple(_csv_list(args.exclude_columns)),
      batch_size=args.batch_size, num_unroll=args.num_unroll, mode=args.mode,
      max_sequence_length=args.max_sequence_length, truncate=args.truncate,
      trainer=trainer_from_args(args), module_file=args.module_file,
      hyperparameters=dict(args.hyperparameters or {}),
      enable_cache=not args.no_cache,
      checkpoint_dir=_local_path(args.checkpoint_dir), fresh=args.fresh,
      evaluator_settings={'no_skill_margin': args.no_skill_margin,
                          'require_skill': not args.allow_no_skill,
                          'skill_significance': args.skill_significance})
