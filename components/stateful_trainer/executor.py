"""Executor of the StatefulTrainer: artifacts -> ``TrainerArgs`` -> ``run``.

No maths here: ``args_from_artifacts`` decodes and validates, and
``run.run`` does the work.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from typing import Any, Dict, List, Mapping, Optional

from tfx import types
from tfx.components.util import udf_utils
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import io_utils
from tfx.utils import path_utils

from components import declared
from components.stateful import heap
from components.stateful import model_io
from components.stateful_trainer import run as trainer_run
from components.stateful_trainer import settings

_LOG = logging.getLogger(__name__)

# Keys of the component (see component.StatefulTrainerSpec).
BATCHES_KEY = 'batches'
TRANSFORM_GRAPH_KEY = 'transform_graph'
HYPERPARAMETERS_KEY = 'hyperparameters'
MODEL_KEY = 'model'
MODEL_RUN_KEY = 'model_run'
MODULE_FILE_KEY = 'module_file'
MODULE_PATH_KEY = 'module_path'
CUSTOM_CONFIG_KEY = 'custom_config'

# The Model artifact's custom property with the training fingerprint's
# digest (``fingerprint.py``): equal digests, equal training inputs.
FINGERPRINT_PROPERTY = 'training_fingerprint'

# custom_config keys the trainer reads.
CUSTOM_CONFIG_KEYS = ('hyperparameters',)


def parse_custom_config(text: Optional[str]) -> Dict[str, Any]:
  """Decodes and checks ``custom_config`` (JSON text or None)."""
  config = json.loads(text) if text else {}
  if config is None:
    return {}
  if not isinstance(config, dict):
    raise ValueError(f'custom_config must be a dict, got {config!r}')
  unknown = sorted(set(config) - set(CUSTOM_CONFIG_KEYS))
  if unknown:
    raise ValueError(
        f'custom_config keys {unknown} are not used by the StatefulTrainer; '
        f'it reads {list(CUSTOM_CONFIG_KEYS)}. Put model settings under '
        "custom_config['hyperparameters'] (they reach build_model as "
        'spec.hyperparameters).')
  hp = config.get('hyperparameters') or {}
  if not isinstance(hp, dict):
    raise ValueError(f"custom_config['hyperparameters'] must be a dict, got "
                     f'{hp!r}')
  return config


def read_hyperparameters_artifact(uri: str) -> Dict[str, Any]:
  """The values of a Tuner's ``best_hyperparameters`` artifact.

  The Tuner writes ``keras_tuner.HyperParameters.get_config()`` as JSON
  (``{'space': [...], 'values': {...}}``); a plain JSON dict is also read.
  """
  path = io_utils.get_only_uri_in_dir(uri)
  with fileio.open(path, 'r') as f:
    config = json.loads(f.read())
  if isinstance(config, dict) and isinstance(config.get('values'), dict):
    return dict(config['values'])
  if not isinstance(config, dict):
    raise ValueError(f'{path}: hyperparameters must be a JSON dict')
  return config


def _resolve_module(props: Mapping[str, Any]):
  """The model module (user module file / packaged module, or default)."""
  if props.get(MODULE_FILE_KEY) or props.get(MODULE_PATH_KEY):
    build_model = udf_utils.get_fn(dict(props), 'build_model')
    return sys.modules[build_model.__module__]
  return model_io.resolve_module()


def args_from_artifacts(input_dict: Dict[str, List[types.Artifact]],
                        output_dict: Dict[str, List[types.Artifact]],
                        exec_properties: Dict[str, Any]
                       ) -> trainer_run.TrainerArgs:
  """Decodes and validates the component's inputs into ``TrainerArgs``."""
  batches = artifact_utils.get_single_instance(input_dict[BATCHES_KEY])
  splits = artifact_utils.decode_split_names(batches.split_names)
  train_split = exec_properties.get('train_split') or 'train'
  if train_split not in splits:
    raise ValueError(f'SequenceBatches {batches.uri} has no split '
                     f'{train_split!r}; it has {splits}')
  eval_split = exec_properties.get('eval_split')
  if eval_split is None:
    eval_split = 'eval' if 'eval' in splits else None
    if eval_split is None:
      _LOG.warning('no eval split in %s (%s): training without evaluation',
                   batches.uri, splits)
  elif eval_split == '':
    eval_split = None
  elif eval_split not in splits:
    raise ValueError(f'SequenceBatches {batches.uri} has no split '
                     f'{eval_split!r}; it has {splits}')
  config = parse_custom_config(exec_properties.get(CUSTOM_CONFIG_KEY))
  hyperparameters = dict(config.get('hyperparameters') or {})
  if input_dict.get(HYPERPARAMETERS_KEY):
    hyperparameters.update(read_hyperparameters_artifact(
        artifact_utils.get_single_uri(input_dict[HYPERPARAMETERS_KEY])))
  transform_uri = None
  if input_dict.get(TRANSFORM_GRAPH_KEY):
    transform_uri = artifact_utils.get_single_uri(
        input_dict[TRANSFORM_GRAPH_KEY])
  model_uri = artifact_utils.get_single_uri(output_dict[MODEL_KEY])
  model_run_uri = artifact_utils.get_single_uri(output_dict[MODEL_RUN_KEY])
  train_config = train_config_from(exec_properties)
  num_classes = exec_properties.get('num_classes')
  output_size = exec_properties.get('output_size')
  return trainer_run.TrainerArgs(
      batches_uri=batches.uri,
      model_uri=model_uri,
      serving_model_dir=path_utils.serving_model_dir(model_uri),
      model_run_dir=model_run_uri,
      module=_resolve_module(exec_properties),
      train_split=train_split,
      eval_split=eval_split,
      task=exec_properties.get('task') or None,
      num_classes=int(num_classes) if num_classes else None,
      output_size=int(output_size) if output_size else None,
      hyperparameters=hyperparameters,
      train=train_config,
      transform_graph_uri=transform_uri,
      # The component's checkpoint_dir is a root: each set of inputs gets
      # <checkpoint_dir>/<fingerprint>/ (resumed by a later execution).
      checkpoint_root=exec_properties.get('checkpoint_dir') or None,
      fresh=bool(int(exec_properties.get('fresh') or 0)))


def train_config_from(exec_properties: Mapping[str, Any]
                     ) -> settings.TrainConfig:
  """The ``TrainConfig`` of the set trainer parameters (bools come as 0/1);
  unset ones keep their declared defaults."""
  values = {}
  for f in dataclasses.fields(settings.TrainConfig):
    value = declared.from_parameter(f, exec_properties.get(f.name))
    if value is not None:
      values[f.name] = value
  return settings.TrainConfig.from_dict(values)


class Executor(base_executor.BaseExecutor):
  """Trains statefully and exports the ``Model``; logs to ``ModelRun``."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    # Progress lines are INFO records of this package's loggers (and of the
    # default model module's: why it scores a label where it does).
    for name in ('components.stateful_trainer', 'components.stateful'):
      logging.getLogger(name).setLevel(logging.INFO)
    args = args_from_artifacts(input_dict, output_dict, exec_properties)
    with heap.frozen_heap():
      result = trainer_run.run(args)
    model = artifact_utils.get_single_instance(output_dict[MODEL_KEY])
    model.set_string_custom_property(FINGERPRINT_PROPERTY,
                                     result.fingerprint.digest)
    final = result.fit.final_eval
    _LOG.info('StatefulTrainer done: %d steps%s', result.fit.steps,
              f', final eval {final}' if final else '')
