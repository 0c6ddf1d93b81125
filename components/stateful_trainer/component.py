"""TFX component: StatefulTrainer (SequenceBatches -> Model, ModelRun).

Validates arguments and wires channels; ``executor.py`` decodes the
artifacts and ``run.run`` trains and exports.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Optional

from tfx import types
from tfx.components.util import udf_utils
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import declared
from components.sequence_batcher.component import SequenceBatches
from components.stateful_trainer import executor
from components.stateful import model_spec as ms
from components.stateful_trainer import settings


# One component parameter per ``settings.TrainConfig`` field (bools as 0/1
# ints, so that Kubeflow V2 carries them); every one optional: unset means
# the field's declared default.
TRAIN_SETTING_PARAMETERS = {
    f.name: ExecutionParameter(type=declared.parameter_kind(f), optional=True)
    for f in dataclasses.fields(settings.TrainConfig)
}


class StatefulTrainerSpec(types.ComponentSpec):
  """ComponentSpec of the StatefulTrainer.

  Booleans are ints (0/1) and dicts JSON text, so that every parameter is a
  primitive that Kubeflow V2 can carry.
  """

  PARAMETERS = {
      executor.MODULE_FILE_KEY: ExecutionParameter(type=str, optional=True),
      executor.MODULE_PATH_KEY: ExecutionParameter(type=str, optional=True),
      executor.CUSTOM_CONFIG_KEY: ExecutionParameter(type=str, optional=True),
      **TRAIN_SETTING_PARAMETERS,
      'train_split': ExecutionParameter(type=str),
      'eval_split': ExecutionParameter(type=str, optional=True),
      'task': ExecutionParameter(type=str, optional=True),
      'num_classes': ExecutionParameter(type=int, optional=True),
      'output_size': ExecutionParameter(type=int, optional=True),
      'checkpoint_dir': ExecutionParameter(type=str, optional=True),
      'fresh': ExecutionParameter(type=int, optional=True),
  }
  INPUTS = {
      executor.BATCHES_KEY: ChannelParameter(type=SequenceBatches),
      executor.TRANSFORM_GRAPH_KEY: ChannelParameter(
          type=standard_artifacts.TransformGraph, optional=True),
      executor.HYPERPARAMETERS_KEY: ChannelParameter(
          type=standard_artifacts.HyperParameters, optional=True),
  }
  OUTPUTS = {
      executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      executor.MODEL_RUN_KEY: ChannelParameter(
          type=standard_artifacts.ModelRun),
  }


class StatefulTrainer(base_component.BaseComponent):
  """Trains a stateful RNN on SequenceBatches with truncated BPTT.

  State is carried across batches lane by lane, zeroed where a sequence
  starts, at every epoch start and around evaluation. Outputs a standard
  ``Model`` (a SavedModel with ``serving_default`` and ``step`` signatures in
  ``Format-Serving``, plus ``stateful/`` for the StatefulEvaluator) and a
  ``ModelRun`` (TensorBoard logs, ``history.json``, checkpoints).

  Example::

    trainer = StatefulTrainer(
        batches=batcher.outputs['batches'],
        transform_graph=transform.outputs['transform_graph'],
        epochs=20, validation_fraction=0.2,
        custom_config={'hyperparameters': {'units': [64, 64],
                                           'learning_rate': 3e-3}})
  """

  SPEC_CLASS = StatefulTrainerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self,
               batches: types.BaseChannel,
               *,
               transform_graph: Optional[types.BaseChannel] = None,
               hyperparameters: Optional[types.BaseChannel] = None,
               module_file: Optional[str] = None,
               custom_config: Optional[Dict[str, Any]] = None,
               train_split: str = 'train',
               eval_split: Optional[str] = None,
               task: Optional[str] = None,
               num_classes: Optional[int] = None,
               output_size: Optional[int] = None,
               checkpoint_dir: Optional[str] = None,
               fresh: bool = False,
               **train_settings):
    """Constructs a StatefulTrainer.

    Args:
      batches: a ``SequenceBatches`` channel (the SequenceBatcher's output).
      transform_graph: optional ``TransformGraph``; the serving signatures
        then take raw feature values and apply it.
      hyperparameters: optional ``HyperParameters`` (e.g. the Tuner's best);
        its values override ``custom_config['hyperparameters']``.
      module_file: a Python file defining ``build_model(spec)`` (and
        optionally ``loss(spec)``, ``metrics(spec)``); default: the shipped
        stacked LSTM/GRU (``components/stateful/models/default_model.py``).
      custom_config: ``{'hyperparameters': {...}}``, passed to the module as
        ``spec.hyperparameters``; the trainer itself reads ``optimizer``,
        ``learning_rate``, ``clip_global_norm`` and ``momentum`` there.
      train_split: the split to train on.
      eval_split: the split to evaluate on; default ``eval`` when the
        batches have it; ``''`` for none.
      task: ``classification`` or ``regression``; default from the label
        dtype (int64: classification).
      num_classes: default ``max(label) + 1``.
      output_size: regression outputs per step (1).
      checkpoint_dir: a persistent folder (local or a bucket): the
        checkpoints of each set of inputs (batches, transform graph, module,
        every setting; ``fingerprint.py``) go to
        ``<checkpoint_dir>/<fingerprint>/``, a later execution with the same
        inputs resumes them, and they are removed once the model is
        exported. ``create_pipeline`` sets ``<pipeline_root>/
        StatefulTrainer/checkpoints``. Unset: ``<model_run>/checkpoints``,
        which only this execution sees.
      fresh: ignore (and remove) the checkpoints of an earlier execution
        with the same inputs.
      **train_settings: any field of ``settings.TrainConfig`` (``epochs``,
        ``seed``, ``label_scoring``, ``validation_fraction``, ...; see its
        help texts); unset fields take their declared defaults.
    """
    config = settings.TrainConfig.from_dict(train_settings)  # Validates.
    if task is not None and task not in ms.TASKS:
      raise ValueError(f'task must be one of {ms.TASKS}, got {task!r}')
    if num_classes is not None and (task == ms.REGRESSION or num_classes < 2):
      raise ValueError('num_classes must be >= 2 and is for classification, '
                       f'got {num_classes!r} (task {task!r})')
    if output_size is not None and (task == ms.CLASSIFICATION or
                                    output_size < 1):
      raise ValueError('output_size must be >= 1 and is for regression, got '
                       f'{output_size!r} (task {task!r})')
    config_text = json.dumps(custom_config) if custom_config else None
    executor.parse_custom_config(config_text)  # Fail at pipeline build.
    spec = StatefulTrainerSpec(
        batches=batches,
        transform_graph=transform_graph,
        hyperparameters=hyperparameters,
        module_file=module_file,
        custom_config=config_text,
        **{f.name: declared.to_parameter(f, getattr(config, f.name))
           for f in dataclasses.fields(config) if f.name in train_settings},
        train_split=train_split,
        eval_split=eval_split,
        task=task,
        num_classes=num_classes,
        output_size=output_size,
        checkpoint_dir=checkpoint_dir,
        fresh=1 if fresh else None,  # Unset when off: same cache key.
        model=types.Channel(type=standard_artifacts.Model),
        model_run=types.Channel(type=standard_artifacts.ModelRun))
    super().__init__(spec=spec)
    if module_file and udf_utils.should_package_user_modules():
      # As TFX's Trainer: package the module so remote workers get it.
      udf_utils.add_user_module_dependency(self, executor.MODULE_FILE_KEY,
                                           executor.MODULE_PATH_KEY)
