"""The pipeline's command-line flags, generated from the declarations.

``build_parser`` (the local runner's flags: one per flagged field of
``PipelineConfig``, of ``TrainConfig`` and of the evaluator's
``StatefulSettings``, each with its help and default; see
``components/declared.py``) and ``config_from_args`` (a ``PipelineConfig``
from parsed flags) are shared by ``pipeline/local_runner.py`` and
``kubeflow/compile.py``, so neither imports the other and the two compile
the same pipeline from the same flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Optional

from components import declared
from components.stateful_evaluator import settings as evaluator_settings
from components.stateful_trainer import settings
from pipeline import pipeline_config

_DEFAULTS = pipeline_config.PipelineConfig()
TRAINER = 'trainer.'      # The dests of the trainer's flags,
EVALUATOR = 'evaluator.'  # and of the evaluator's.

RECIPES = pipeline_config.RECIPES
KERAS_BATCH_SIZE = 32  # Keras fit's default batch size.


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m pipeline.local_runner',
      description='Run the stateful-sequence TFX pipeline locally '
      '(LocalDagRunner, Beam DirectRunner, SQLite ML Metadata). Other flags '
      'must be Beam pipeline options (e.g. --runner=DaskRunner '
      '--dask_client_address=tcp://HOST:8786).')
  declared.add_flags(p, pipeline_config.PipelineConfig, defaults=_DEFAULTS)
  declared.add_flags(
      p.add_argument_group('trainer',
                           'StatefulTrainer settings (settings.TrainConfig)'),
      settings.TrainConfig, dest_prefix=TRAINER, defaults=_DEFAULTS.trainer)
  declared.add_flags(
      p.add_argument_group(
          'evaluator', 'StatefulEvaluator settings (StatefulSettings; '
          'docs/stateful_evaluator.md)'),
      evaluator_settings.StatefulSettings, dest_prefix=EVALUATOR,
      defaults=_DEFAULTS.evaluator)
  return p


def _local_path(path: Optional[str]) -> Optional[str]:
  """Absolute for a local path; a URI (gs://...) as given."""
  if not path or '://' in path:
    return path
  return os.path.abspath(path)


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
  values = declared.values_from_args(args, pipeline_config.PipelineConfig)
  return pipeline_config.PipelineConfig(**{
      **values,
      'data_root': os.path.abspath(values['data_root']),
      'output_dir': os.path.abspath(values['output_dir']),
      'checkpoint_dir': _local_path(values['checkpoint_dir']),
      'hyperparameters': dict(values['hyperparameters'] or {}),
      'trainer': settings.TrainConfig.from_dict(declared.values_from_args(
          args, settings.TrainConfig, dest_prefix=TRAINER)),
      'evaluator': evaluator_settings.StatefulSettings.from_dict(
          declared.values_from_args(args, evaluator_settings.StatefulSettings,
                                    dest_prefix=EVALUATOR))})
