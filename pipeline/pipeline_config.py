"""The pipeline's settings: ``PipelineConfig``, each declared once.

Plain Python (no TensorFlow, no TFX). Every field carries its default and
help text (``components/declared.py``); the column and layout settings are
the SequenceBatcher's declarations (``ColumnConfig``, ``LayoutConfig``),
taken over with the pipeline's defaults, the trainer's are ``TrainConfig``
and the evaluator's ``StatefulSettings``. From them come the flags of the
local runner and the Kubeflow compiler (``pipeline/flags.py``), the
components' arguments (``pipeline.create_pipeline(config)``) and the
configuration reference (docs/configuration.md). Nothing is edited in code
to configure a run.
"""

import argparse
import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

from components.declared import same_as
from components.declared import setting
from components.sequence_batcher import layout
from components.sequence_batcher import sequences as seqlib
from components.stateful.models import hyperparameters as hp_lib
from components.stateful_evaluator import settings as evaluator_settings
from components.stateful_trainer import settings

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INPUT_FORMATS = ('csv', 'sequence_example')
TASKS = ('classification', 'regression')
# The training recipes: 'default', or 'keras' (Keras fit's: whole
# sequences, every training sequence, last weights; ``flags.config_from_args``
# applies it).
RECIPES = ('default', 'keras')

# Blessing rule (the StatefulEvaluator's defaults): the chunked stateful
# outputs match whole-sequence serving, the model beats the no-skill
# predictors, and TFMA's default config for the task
# (``stateful_evaluator/analysis/config.default_eval_config``): accuracy may not drop by more than 0.01
# (MSE not rise by more than 1%) against the latest blessed model.


def _hyperparameters(text: str) -> Dict[str, Any]:
  try:
    return hp_lib.parse(text)
  except hp_lib.HyperparametersError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


_FROM_THE_DATA = ("; unset: chosen from the train split's sequence lengths "
                  '(docs/sequence_batcher.md, "The layout chosen from the '
                  'data")')


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """All settings of one pipeline run, with defaults for sensor-like data.

  Defaults are chosen for unknown real data (lengths from a few to thousands
  of steps): the lane layout (batch_size, num_unroll) comes from the train
  split's lengths (``layout_rule.choose_layout``), the epochs by
  the epochs rule (``settings.RULE_EPOCHS``), packed mode wastes little padding.
  Each field's help text is in its metadata (see the module docstring).
  """
  pipeline_name: str = setting(
      'tfx-stateful-sequences', 'the TFX pipeline\'s name (ML Metadata '
      'keeps the runs of each name apart)')
  data_root: str = setting(
      os.path.join(PROJECT_ROOT, 'data', 'sample'),
      'CSV files (split into train and eval by a hash of the sequence key, '
      'never by row), or train/ and eval/ subfolders; TFRecord '
      'SequenceExamples with --input-format sequence_example',
      shown='data/sample')
  output_dir: str = setting(
      os.path.join(PROJECT_ROOT, 'outputs', 'local'),
      "the local run's files: pipeline_root/, metadata.sqlite, summary.json "
      'and serving_model/ (the pushed model)', shown='outputs/local')
  input_format: str = setting(
      'csv', 'csv (rows of time steps) or sequence_example (TFRecord '
      'SequenceExamples, one per sequence)', choices=INPUT_FORMATS)
  key_column: str = same_as(seqlib.ColumnConfig, 'key_column')
  order_column: Optional[str] = same_as(seqlib.ColumnConfig, 'order_column')
  label_column: str = same_as(seqlib.ColumnConfig, 'label_column')
  label_kind: str = same_as(layout.LayoutConfig, 'label_kind')
  task: str = setting('classification', 'classification or regression',
                      choices=TASKS)
  feature_columns: Optional[Tuple[str, ...]] = same_as(
      seqlib.ColumnConfig, 'feature_columns')
  exclude_columns: Tuple[str, ...] = same_as(seqlib.ColumnConfig,
                                             'exclude_columns')
  batch_size: Optional[int] = same_as(
      layout.LayoutConfig, 'batch_size', default=None,
      help_text='B, lanes per batch' + _FROM_THE_DATA,
      shown='from the data')
  num_unroll: Optional[int] = same_as(
      layout.LayoutConfig, 'num_unroll', default=None,
      help_text='T, steps per segment (the truncated-BPTT window)' +
      _FROM_THE_DATA, shown='from the data')
  mode: str = same_as(layout.LayoutConfig, 'mode')
  recipe: str = setting(
      'default', 'keras: train as Keras fit does, the floor the default '
      'recipe is measured against (BENCHMARKS.md section 13): whole '
      'sequences in one segment (bucketed mode; T the longest training '
      'sequence and B 32 unless given), every training sequence (no '
      'validation carve, no refit: the last weights), the order reshuffled '
      'every epoch, a constant learning rate without warm-up '
      '(settings.KERAS_RECIPE); the number of epochs as without it',
      choices=RECIPES)
  max_sequence_length: Optional[int] = same_as(layout.LayoutConfig,
                                               'max_sequence_length')
  truncate: bool = same_as(layout.LayoutConfig, 'truncate')
  eval_hash_buckets: int = setting(
      1, "ExampleGen's eval share: eval_hash_buckets of train_hash_buckets + "
      'eval_hash_buckets buckets of the sequence key (when data_root has no '
      'train/ and eval/ subfolders)', flag=False)
  train_hash_buckets: int = setting(
      4, "ExampleGen's train share (see eval_hash_buckets)", flag=False)
  module_file: Optional[str] = setting(
      None, 'the user model module (build_model(spec); '
      'docs/stateful_trainer.md)', shown='the shipped model')
  hyperparameters: Dict[str, Any] = setting(
      default_factory=dict, help_text='passed to the model module as '
      'spec.hyperparameters (model=lstm,units=[64,64] or a JSON object); '
      "anything unset takes the module's defaults, and the optimizer's "
      'settings.optimizer_hyperparameters', parse=_hyperparameters,
      shown="the module's", more_help=hp_lib.help_text)
  trainer: settings.TrainConfig = setting(
      settings.TrainConfig(), "the StatefulTrainer's settings "
      '(settings.TrainConfig, each field a flag)', flag=False,
      shown='its fields\' (Trainer settings)')
  eval_config: Optional[Dict[str, Any]] = setting(
      None, "the StatefulEvaluator's tfma.EvalConfig as a dict (unset: its "
      'default for the task)', flag=False)
  evaluator: evaluator_settings.StatefulSettings = setting(
      evaluator_settings.StatefulSettings(), "the StatefulEvaluator's "
      'settings (StatefulSettings, each field a flag; a dict or JSON text '
      'is read as one)', flag=False,
      shown='its fields\' (Evaluator settings)')
  enable_cache: bool = setting(
      True, 'reuse the outputs of a component whose inputs are unchanged '
      '(--no-cache: re-run every component)', flag='--cache')
  checkpoint_dir: Optional[str] = setting(
      None, 'where the trainer keeps its checkpoints, e.g. a bucket; each '
      'set of trainer inputs (batches, transform graph, module, settings, '
      'seed) gets its own folder there, a re-run with the same inputs '
      'resumes an interrupted training from it, and it is removed once the '
      'model is exported', shown='<pipeline root>/StatefulTrainer/checkpoints')
  fresh: bool = setting(
      False, 'train from the first step even if an interrupted run with the '
      'same inputs left checkpoints (they are removed)')
  materialize_transform: bool = setting(
      False, 'Transform also writes its transformed examples (TFX\'s '
      'materialize) and the SequenceBatcher reads those; off: Transform '
      'only analyses and the batcher applies its graph to ExampleGen\'s '
      'rows as it decodes them (the same batches; the transformed rows are '
      'never written and read again)')

  def __post_init__(self):
    if self.input_format not in INPUT_FORMATS:
      raise ValueError("input_format must be 'csv' or 'sequence_example', got "
                       f'{self.input_format!r}')
    if self.task not in TASKS:
      raise ValueError("task must be 'classification' or 'regression', got "
                       f'{self.task!r}')
    if not isinstance(self.trainer, settings.TrainConfig):
      raise ValueError(f'trainer must be a TrainConfig, got '
                       f'{type(self.trainer).__name__}')
    object.__setattr__(self, 'evaluator',
                       evaluator_settings.coerce(self.evaluator))
    if self.feature_columns is not None:  # An empty list: every column.
      object.__setattr__(self, 'feature_columns',
                         tuple(self.feature_columns) or None)
    object.__setattr__(self, 'exclude_columns', tuple(self.exclude_columns))
    for name in ('batch_size', 'num_unroll', 'train_hash_buckets',
                 'eval_hash_buckets', 'max_sequence_length'):
      if getattr(self, name) is not None and getattr(self, name) < 1:
        raise ValueError(f'{name} must be at least 1, got '
                         f'{getattr(self, name)}')

  def batcher_settings(self) -> Dict[str, Any]:
    """The SequenceBatcher's arguments among these settings: the fields
    taken over from its declarations (``ColumnConfig``, ``LayoutConfig``)."""
    names = {f.name for cls in (seqlib.ColumnConfig, layout.LayoutConfig)
             for f in dataclasses.fields(cls)}
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.name in names}

  @property
  def pipeline_root(self) -> str:
    return os.path.join(self.output_dir, 'pipeline_root')

  @property
  def metadata_path(self) -> str:
    return os.path.join(self.output_dir, 'metadata.sqlite')

  @property
  def serving_dir(self) -> str:
    return os.path.join(self.output_dir, 'serving_model')


TRANSFORM_FN = 'pipeline.transform_module.preprocessing_fn'
