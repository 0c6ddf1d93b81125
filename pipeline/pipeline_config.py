"""Default settings of the pipeline (the embedded local defaults).

Every value here can be overridden by an argument of ``create_pipeline`` or a
flag of the runners; nothing is edited in code to configure a run.
"""

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

from components.sequence_batcher import sequences as seqlib
from components.stateful_trainer import settings

# The column defaults, declared once (``sequences.ColumnConfig``).
_COLUMNS = seqlib.ColumnConfig()

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



# Blessing rule (the StatefulEvaluator's defaults): the chunked stateful
# outputs match whole-sequence serving, the model beats the no-skill
# predictors, and TFMA's default config for the task
# (``stateful_evaluator/analysis/config.default_eval_config``): accuracy may not drop by more than 0.01
# (MSE not rise by more than 1%) against the latest blessed model.


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """All settings of one pipeline run, with defaults for sensor-like data.

  Defaults are chosen for unknown real data (lengths from a few to thousands
  of steps): the lane layout (batch_size, num_unroll) comes from the train
  split's lengths (``layout_rule.choose_layout``), the epochs from its number of
  sequences (``settings.epochs_rule``), packed mode wastes little padding.
  """
  pipeline_name: str = 'tfx-stateful-sequences'
  data_root: str = os.path.join(PROJECT_ROOT, 'data', 'sample')
  output_dir: str = os.path.join(PROJECT_ROOT, 'outputs', 'local')
  input_format: str = 'csv'  # or 'sequence_example'
  key_column: str = _COLUMNS.key_column
  order_column: str = _COLUMNS.order_column
  label_column: str = _COLUMNS.label_column
  label_kind: str = 'per_sequence'
  task: str = 'classification'  # or 'regression'
  feature_columns: Optional[Tuple[str, ...]] = None
  exclude_columns: Tuple[str, ...] = ()
  batch_size: Optional[int] = None  # None: layout_rule.choose_layout on train
  num_unroll: Optional[int] = None
  mode: str = 'packed'
  # The training recipe: 'default', or 'keras' (Keras fit's: whole
  # sequences, every training sequence, last weights; local_runner --recipe).
  recipe: str = 'default'
  # Longer sequences are an error, or cut to this length with ``truncate``.
  max_sequence_length: Optional[int] = None
  truncate: bool = False
  eval_hash_buckets: int = 1  # of train_hash_buckets + eval_hash_buckets
  train_hash_buckets: int = 4
  module_file: Optional[str] = None
  # Passed to the model module as spec.hyperparameters (--hyperparameters);
  # anything unset takes the module's defaults, and the optimizer's
  # ``settings.optimizer_hyperparameters``.
  hyperparameters: Dict[str, Any] = dataclasses.field(default_factory=dict)
  trainer: settings.TrainConfig = settings.TrainConfig()
  # A tfma.EvalConfig as a dict (None: the evaluator's default for the
  # task) and the evaluator's StatefulSettings fields.
  eval_config: Optional[Dict[str, Any]] = None
  evaluator_settings: Dict[str, Any] = dataclasses.field(default_factory=dict)
  enable_cache: bool = True
  # The trainer's checkpoints: <checkpoint_dir>/<fingerprint of its inputs>/
  # (None: <pipeline_root>/StatefulTrainer/checkpoints); an execution with
  # the same inputs as an unfinished one resumes it, unless ``fresh``.
  checkpoint_dir: Optional[str] = None
  fresh: bool = False

  def __post_init__(self):
    if self.input_format not in ('csv', 'sequence_example'):
      raise ValueError("input_format must be 'csv' or 'sequence_example', got "
                       f'{self.input_format!r}')
    if self.task not in ('classification', 'regression'):
      raise ValueError("task must be 'classification' or 'regression', got "
                       f'{self.task!r}')
    if not isinstance(self.trainer, settings.TrainConfig):
      raise ValueError(f'trainer must be a TrainConfig, got '
                       f'{type(self.trainer).__name__}')
    for name in ('batch_size', 'num_unroll', 'train_hash_buckets',
                 'eval_hash_buckets', 'max_sequence_length'):
      if getattr(self, name) is not None and getattr(self, name) < 1:
        raise ValueError(f'{name} must be at least 1, got '
                         f'{getattr(self, name)}')

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
