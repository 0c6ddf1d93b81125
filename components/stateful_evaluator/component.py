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
from components.stateful_evaluator import config as config_lib
from components.stateful_evaluator import executor


class StatefulEvaluatorSpec(types.ComponentSpec):
  """ComponentSpec of the StatefulEvaluator."""

  PARAMETERS = {
      executor.SPLIT_KEY: ExecutionParameter(type=str),
      # EvalConfig.to_json() (structured settings are passed as JSON text).
      executor.EVAL_CONFIG_KEY: ExecutionParameter(type=str),
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
        eval_config=EvalConfig(thresholds=(
            MetricThreshold('accuracy', value=ValueThreshold(lower_bound=0.6),
                            change=ChangeThreshold(HIGHER_IS_BETTER,
                                                   absolute=-0.01)),)))
    pusher = tfx.components.Pusher(
        model=trainer.outputs['model'],
        model_blessing=evaluator.outputs['blessing'], push_destination=...)
  """

  SPEC_CLASS = StatefulEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self,
               model: types.BaseChannel,
               batches: types.BaseChannel,
               baseline_model: Optional[types.BaseChannel] = None,
               *,
               split: str = executor.DEFAULT_SPLIT,
               eval_config: Union[config_lib.EvalConfig, Mapping[str, Any],
                                  str, None] = None):
    """Constructs a StatefulEvaluator.

    Args:
      model: a ``Model`` channel written by the StatefulTrainer.
      batches: the ``SequenceBatches`` channel of the SequenceBatcher.
      baseline_model: optional ``Model`` channel (e.g. the latest blessed
        model from a resolver). Without it, change thresholds are skipped.
      split: the split of ``batches`` to evaluate on.
      eval_config: an ``EvalConfig``, its dict or its JSON text; None for
        the defaults (no thresholds: blessed iff the chunking equivalence
        check passes). Validated here.
    """
    if not isinstance(split, str) or not split:
      raise ValueError(f'split must be a non-empty string, got {split!r}')
    config = config_lib.coerce(eval_config)
    spec = StatefulEvaluatorSpec(
        model=model,
        batches=batches,
        baseline_model=baseline_model,
        split=split,
        eval_config=config.to_json(),
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing))
    super().__init__(spec=spec)
