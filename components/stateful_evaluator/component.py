"""TFX component: StatefulEvaluator (Model + SequenceBatches -> ModelEvaluation,
ModelBlessing).

Validates arguments and wires channels; the work is in ``executor.py`` and
``evaluation.py``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components.sequence_batcher.component import SequenceBatches
from components.stateful_evaluator import executor
from components.stateful_evaluator import settings as settings_lib
from components.stateful_evaluator.analysis import config as tfma_config


class StatefulEvaluatorSpec(types.ComponentSpec):
  """ComponentSpec of the StatefulEvaluator."""

  PARAMETERS = {
      executor.SPLIT_KEY: ExecutionParameter(type=str),
      # A tfma.EvalConfig as JSON text ('' : the default for the task).
      executor.EVAL_CONFIG_KEY: ExecutionParameter(type=str),
      # StatefulSettings.to_json().
      executor.SETTINGS_KEY: ExecutionParameter(type=str),
  }
  INPUTS = {
      executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      executor.BATCHES_KEY: ChannelParameter(type=SequenceBatches),
      executor.BASELINE_MODEL_KEY: ChannelParameter(
          type=standard_artifacts.Model, optional=True),
  }
  OUTPUTS = {
      executor.EVALUATION_KEY: ChannelParameter(
          type=standard_artifacts.ModelEvaluation),
      executor.BLESSING_KEY: ChannelParameter(
          type=standard_artifacts.ModelBlessing),
  }


class StatefulEvaluator(base_component.BaseComponent):
  """Evaluates a stateful sequence model chunk by chunk, as it was trained,
  compares it with a baseline and blesses it for the stock Pusher.

  Example::

    latest_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id('latest_blessed_model_resolver')
    evaluator = StatefulEvaluator(
        model=trainer.outputs['model'],
        batches=batcher.outputs['batches'],
        baseline_model=latest_blessed.outputs['model'],
        eval_config=tfma.EvalConfig(metrics_specs=[tfma.MetricsSpec(
            metrics=[tfma.MetricConfig(
                class_name='SparseCategoricalAccuracy',
                threshold=tfma.MetricThreshold(
                    value_threshold=tfma.GenericValueThreshold(
                        lower_bound={'value': 0.6})))])]),
        settings=StatefulSettings(no_skill_margin=0.02))
    pusher = tfx.components.Pusher(
        model=trainer.outputs['model'],
        model_blessing=evaluator.outputs['blessing'], push_destination=...)
  """

  SPEC_CLASS = StatefulEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self,
               model: types.BaseChannel,
               batches: types.BaseChannel,
               baseline_model: Optional[types.BaseChannel] = None,
               *,
               split: str = executor.DEFAULT_SPLIT,
               eval_config: Union[tfma_config.tfma.EvalConfig,
                                  Mapping[str, Any], str, None] = None,
               settings: Union[settings_lib.StatefulSettings,
                               Mapping[str, Any], str, None] = None):
    """Constructs a StatefulEvaluator.

    Args:
      model: a ``Model`` channel written by the StatefulTrainer.
      batches: the ``SequenceBatches`` channel of the SequenceBatcher.
      baseline_model: optional ``Model`` channel (e.g. the latest blessed
        model from a resolver). Without it, change thresholds are skipped.
      split: the split of ``batches`` to evaluate on.
      eval_config: a ``tfma.EvalConfig`` (its dict or JSON text), as for
        TFX's Evaluator; its model specs are set by the evaluator (see
        ``analysis/config.py``). None: ``config.default_eval_config`` for the
        model's task. Parsed here.
      settings: ``StatefulSettings`` (or its dict / JSON): the chunked ==
        whole check and the no-skill gate. None: the defaults.
    """
    if not isinstance(split, str) or not split:
      raise ValueError(f'split must be a non-empty string, got {split!r}')
    config = tfma_config.coerce(eval_config)
    stateful = settings_lib.coerce(settings)
    spec = StatefulEvaluatorSpec(
        model=model,
        batches=batches,
        baseline_model=baseline_model,
        split=split,
        eval_config=tfma_config.to_json(config),
        settings=stateful.to_json(),
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing))
    super().__init__(spec=spec)
