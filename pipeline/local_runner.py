"""The main job: the pipeline on LocalDagRunner, Beam DirectRunner, SQLite MLMD.

  python -m pipeline.local_runner --data-root data/sample --output-dir outputs/local

Unknown flags are passed to Beam (e.g. ``--direct_running_mode=multi_processing
--direct_num_workers=2``). At the end a summary is printed and written to
``<output-dir>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from typing import Dict, List, Optional

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
      '(LocalDagRunner, Beam DirectRunner, SQLite ML Metadata). Unknown flags '
      'are Beam pipeline options.')
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
                 'split\'s sequence lengths: see the README, "Defaults from '
                 'the data")')
  p.add_argument('--num-unroll', type=_positive, default=d.num_unroll,
                 help='T, steps per segment (default: chosen from the train '
                 'split\'s sequence lengths)')
  p.add_argument('--mode', choices=('packed', 'bucketed'), default=d.mode)
  add_trainer_flags(p, d.trainer)
  p.add_argument('--module-file', default=None,
                 help='user model module (default: the shipped model)')
  p.add_argument('--output-dir', default=d.output_dir)
  p.add_argument('--pipeline-name', default=d.pipeline_name)
  p.add_argument('--no-cache', action='store_true',
                 help='re-run every component even if its inputs are unchanged')
  return p


def _csv_list(text: str) -> List[str]:
  return [c.strip() for c in text.split(',') if c.strip()]


def config_from_args(args: argparse.Namespace) -> pipeline_config.PipelineConfig:
  return pipeline_config.PipelineConfig(
      pipeline_name=args.pipeline_name,
      data_root=os.path.abspath(args.data_root),
      output_dir=os.path.abspath(args.output_dir),
      input_format=args.input_format, key_column=args.key_column,
      order_column=args.order_column, label_column=args.label_column,
      label_kind=args.label_kind, task=args.task,
      feature_columns=tuple(_csv_list(args.feature_columns)) or None,
      exclude_columns=tuple(_csv_list(args.exclude_columns)),
      batch_size=args.batch_size, num_unroll=args.num_unroll, mode=args.mode,
      trainer=trainer_from_args(args), module_file=args.module_file,
      enable_cache=not args.no_cache)


def check_data_root(config: pipeline_config.PipelineConfig) -> None:
  root = config.data_root
  if not os.path.isdir(root):
    raise ValueError(f'--data-root {root}: no such directory')
  files = [f for _, _, fs in os.walk(root) for f in fs
           if not f.startswith('.')]
  if not files:
    raise ValueError(f'--data-root {root}: no data files')
  if config.input_format == 'csv' and not any(
      f.endswith('.csv') for f in files):
    raise ValueError(f'--data-root {root}: no .csv files (use '
                     '--input-format sequence_example for TFRecords)')


def run(config: pipeline_config.PipelineConfig,
        beam_args: Optional[List[str]] = None) -> Dict:
  """Runs the pipeline and returns the summary (also in summary.json)."""
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from pipeline import summary as summary_lib  # pylint: disable=g-import-not-at-top
  check_data_root(config)
  os.makedirs(config.output_dir, exist_ok=True)
  beam_args = list(beam_args or ['--direct_running_mode=in_memory'])
  p = pipeline_lib.create_pipeline_from_config(
      config, pipeline_root=config.pipeline_root,
      metadata_connection_config=(
          tfx.orchestration.metadata.sqlite_metadata_connection_config(
              config.metadata_path)),
      beam_pipeline_args=beam_args)
  t0 = time.time()
  tfx.orchestration.LocalDagRunner().run(p)
  wall = time.time() - t0
  summary = summary_lib.collect(config, wall_seconds=wall)
  with open(os.path.join(config.output_dir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1, sort_keys=True)
  return summary


def main(argv: Optional[List[str]] = None) -> int:
  # google-cloud libraries warn about Python 3.10 on import; TFX 1.16 needs it.
  warnings.filterwarnings('ignore', category=FutureWarning)
  args, beam_args = build_parser().parse_known_args(argv)
  bad = [a for a in beam_args if not a.startswith('--')]
  if bad:
    print(f'error: unexpected arguments {bad}', file=sys.stderr)
    return 2
  logging.basicConfig(level=logging.INFO,
                      format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  for noisy in ('absl', 'apache_beam', 'tensorflow'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  try:
    config = config_from_args(args)
    summary = run(config, beam_args)
  except (ValueError, OSError, RuntimeError) as e:  # TrainingConfigError too.
    msg = str(e).strip().splitlines()
    print(f'error: {msg[0] if msg else type(e).__name__}', file=sys.stderr)
    return 1
  from pipeline import summary as summary_lib  # pylint: disable=g-import-not-at-top
  print(summary_lib.render(summary))
  return 0


if __name__ == '__main__':
  sys.exit(main())
