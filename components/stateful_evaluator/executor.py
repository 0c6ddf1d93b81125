"""Executor of the StatefulEvaluator: artifacts -> typed args -> core.

The work is in ``evaluation.py``; this file decodes artifacts and
properties, calls ``evaluation.evaluate`` (TFMA runs in process up to
``tfma_in_process_max_examples`` extracts, else on the pipeline's Beam
runner and options) and writes the two outputs:

* ``evaluation`` (``ModelEvaluation``): TFMA's metrics, plots, validations and
  ``eval_config.json`` (the stock Evaluator's layout), plus
  ``extracts.tfrecord.gz``, ``stateful_evaluation.json`` and ``report.html``.
* ``blessing`` (``ModelBlessing``): exactly as TFX's own Evaluator writes it
  (``tfx/components/evaluator/executor.py``): custom properties
  ``current_model``/``current_model_id``, ``baseline_model``/
  ``baseline_model_id`` (when there is a baseline), ``component_id`` (when
  the orchestrator passes ``current_component_id``) and ``blessed`` (1 or 0),
  and an empty ``BLESSED`` or ``NOT_BLESSED`` file in its URI; plus the
  reason in ``blessing_message`` (a key TFX defines in its evaluator
  constants). The stock Pusher reads ``blessed``.

Unlike TFX's Evaluator, which writes no blessing when no threshold is
configured, this one always writes it: the chunking equivalence check and the
no-skill gate are always validations.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.components.evaluator import constants
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import path_utils

from components.stateful import heap
from components.stateful_evaluator import evaluation
from components.stateful_evaluator import settings as settings_lib
from components.stateful_evaluator.analysis import config as tfma_config

_LOG = logging.getLogger(__name__)

MODEL_KEY = standard_component_specs.MODEL_KEY  # 'model'
BASELINE_MODEL_KEY = standard_component_specs.BASELINE_MODEL_KEY
BATCHES_KEY = 'batches'
EVALUATION_KEY = standard_component_specs.EVALUATION_KEY  # 'evaluation'
BLESSING_KEY = standard_component_specs.BLESSING_KEY  # 'blessing'
SPLIT_KEY = 'split'
EVAL_CONFIG_KEY = 'eval_config'
SETTINGS_KEY = 'settings'
DEFAULT_SPLIT = 'eval'


@dataclasses.dataclass(frozen=True)
class EvaluatorArgs:
  """Everything the evaluation needs, decoded from artifacts and properties."""
  model_uri: str
  serving_dir: str
  baseline_uri: Optional[str]
  batches_uri: str
  split: str
  eval_config: Optional[tfma_config.tfma.EvalConfig]
  settings: settings_lib.StatefulSettings
  evaluation_uri: str


def _single(input_dict: Dict[str, List[types.Artifact]],
            key: str) -> Optional[types.Artifact]:
  artifacts = input_dict.get(key) or []
  if len(artifacts) > 1:
    raise ValueError(f'{key}: expected at most one artifact, got '
                     f'{len(artifacts)}')
  return artifacts[0] if artifacts else None


def args_from_artifacts(input_dict: Dict[str, List[types.Artifact]],
                        output_dict: Dict[str, List[types.Artifact]],
                        exec_properties: Dict[str, Any]) -> EvaluatorArgs:
  """Decodes and validates the component's inputs."""
  model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
  batches = artifact_utils.get_single_instance(input_dict[BATCHES_KEY])
  baseline = _single(input_dict, BASELINE_MODEL_KEY)
  split = exec_properties.get(SPLIT_KEY) or DEFAULT_SPLIT
  try:
    names = batches.split_names
  except AttributeError:  # An artifact type without the property.
    names = ''
  if names:
    splits = artifact_utils.decode_split_names(names)
    if split not in splits:
      raise ValueError(f'SequenceBatches {batches.uri} has splits {splits}; '
                       f'split {split!r} was asked for')
  eval_config = tfma_config.coerce(exec_properties.get(EVAL_CONFIG_KEY))
  settings = settings_lib.coerce(exec_properties.get(SETTINGS_KEY) or None)
  evaluation_out = artifact_utils.get_single_instance(
      output_dict[EVALUATION_KEY])
  return EvaluatorArgs(
      model_uri=model.uri,
      serving_dir=path_utils.serving_model_path(
          model.uri, path_utils.is_old_model_artifact(model)),
      baseline_uri=baseline.uri if baseline is not None else None,
      batches_uri=batches.uri, split=split, eval_config=eval_config,
      settings=settings, evaluation_uri=evaluation_out.uri)


def write_blessing(blessing: types.Artifact, model: types.Artifact,
                   baseline: Optional[types.Artifact], blessed: bool,
                   message: str, exec_properties: Dict[str, Any]) -> None:
  """Marks ``blessing`` the way TFX's Evaluator does (see module docstring)."""
  blessing.set_string_custom_property(
      constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
  blessing.set_int_custom_property(
      constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
  if baseline is not None:
    blessing.set_string_custom_property(
        constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline.uri)
    blessing.set_int_custom_property(
        constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baseline.id)
  if 'current_component_id' in exec_properties:
    blessing.set_string_custom_property(
        'component_id', exec_properties['current_component_id'])
  blessing.set_string_custom_property(
      constants.ARTIFACT_PROPERTY_BLESSING_MESSAGE_KEY, message)
  if blessed:
    io_utils.write_string_file(
        os.path.join(blessing.uri, constants.BLESSED_FILE_NAME), '')
    blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY,
                                     constants.BLESSED_VALUE)
  else:
    io_utils.write_string_file(
        os.path.join(blessing.uri, constants.NOT_BLESSED_FILE_NAME), '')
    blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY,
                                     constants.NOT_BLESSED_VALUE)


class Executor(base_beam_executor.BaseBeamExecutor):
  """Evaluates the model statefully on the eval batches and blesses it."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    args = args_from_artifacts(input_dict, output_dict, exec_properties)
    with heap.frozen_heap():
      outcome = self._evaluate(args)
    _LOG.info('StatefulEvaluator: %s', outcome.message)
    evaluation.write_outputs(outcome, args.evaluation_uri)
    model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    write_blessing(
        artifact_utils.get_single_instance(output_dict[BLESSING_KEY]), model,
        _single(input_dict, BASELINE_MODEL_KEY), outcome.blessed,
        outcome.message, exec_properties)

  def _evaluate(self, args: EvaluatorArgs) -> evaluation.EvaluationOutcome:
    return evaluation.evaluate(
        model_uri=args.model_uri, batches_uri=args.batches_uri,
        split=args.split, output_dir=args.evaluation_uri,
        eval_config=args.eval_config, settings=args.settings,
        serving_dir=args.serving_dir, baseline_uri=args.baseline_uri,
        make_pipeline=self._make_beam_pipeline)
