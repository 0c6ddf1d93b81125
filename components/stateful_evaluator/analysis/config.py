"""The ``tfma.EvalConfig`` the evaluator runs: names, defaults, completion.

The evaluator's settings are a ``tfma.EvalConfig``, as for TFX's own
Evaluator. Its model specs are set here, because the "models" are features
of the extracts (``extracts.py``): ``candidate`` (``prediction``) and
``baseline`` (``baseline_prediction``, ``is_baseline``; only when there is a
comparable baseline). Every metrics spec of the user's config (or of
``default_eval_config``) applies to the candidate, with its thresholds; a
copy without thresholds computes the same metrics for the baseline, so
TFMA's diffs (candidate minus baseline) and its validation result concern
the candidate only, and ``tfma.load_eval_result(uri)`` without a model name
gives the candidate. The no-skill predictors (``no_skill_prediction``,
``last_value_prediction``) are not TFMA models: the gate's paired test
scores them (``checks/no_skill_gate.py``). The config is completed by
``config_util.update_eval_config_with_defaults``, as TFMA completes its own.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Union

import tensorflow_model_analysis as tfma
from google.protobuf import json_format
from tensorflow_model_analysis.utils import config_util

from components.stateful import model_spec as ms
from components.stateful_evaluator.extraction import extracts as ex
from components.stateful_evaluator.analysis import metrics as tfma_metrics

CANDIDATE = 'candidate'
BASELINE = 'baseline'
NO_SKILL = 'no_skill'
LAST_VALUE = 'last_value'

ACCURACY = 'sparse_categorical_accuracy'
MSE = 'mean_squared_error'
MAE = 'mean_absolute_error'


class EvalConfigError(ValueError):
  """The evaluator's ``eval_config`` cannot be used."""


def primary_metric(task: str) -> str:
  """The metric of the no-skill gate and the headline: accuracy or MSE."""
  return ACCURACY if task == ms.CLASSIFICATION else MSE


def higher_is_better(metric: str) -> bool:
  return metric in (ACCURACY, 'auc', 'recall', 'precision')


def coerce(config: Union[tfma.EvalConfig, Mapping[str, Any], str, None]
          ) -> Optional[tfma.EvalConfig]:
  """A ``tfma.EvalConfig`` from the proto, its dict or its JSON text; None
  stays None (the default config is built from the task at run time)."""
  if config is None or config == '':
    return None
  if isinstance(config, tfma.EvalConfig):
    return config
  try:
    if isinstance(config, str):
      return json_format.Parse(config, tfma.EvalConfig())
    return json_format.ParseDict(dict(config), tfma.EvalConfig())
  except json_format.ParseError as e:
    raise EvalConfigError(f'eval_config is not a tfma.EvalConfig: '
                          f'{str(e).splitlines()[0]}') from None


def to_json(config: Optional[tfma.EvalConfig]) -> str:
  return '' if config is None else json_format.MessageToJson(
      config, sort_keys=True)


def default_eval_config(task: str, num_classes: Optional[int],
                        label_kind: str = ms.PER_SEQUENCE
                       ) -> tfma.EvalConfig:
  """The config used when none is given.

  Classification: example counts, accuracy, cross-entropy, recall and
  precision per class by arg-max (top-1: a step counts for the class of its
  highest probability, as in the confusion matrix), one-vs-rest AUC per
  class, the multi-class confusion matrix plot; for ``per_step`` labels
  without cross-entropy and AUC, whose extracts are groups of steps with
  the same label and arg-max (``extracts.py``: the arg-max metrics are
  exact over the groups, metrics of the probabilities would not be).
  Example counts then count groups, weighted counts steps. Regression: counts, MSE,
  MAE. Slices: overall and by length bucket. One change threshold on the
  primary metric, checked when there is a baseline: accuracy may not drop by
  more than 0.01; MSE may not rise by more than 1%.
  """
  cfg = tfma.EvalConfig()
  spec = cfg.metrics_specs.add()
  for name in ('ExampleCount', 'WeightedExampleCount'):
    spec.metrics.add(class_name=name)
  if task == ms.CLASSIFICATION:
    acc = spec.metrics.add(class_name='SparseCategoricalAccuracy')
    acc.threshold.change_threshold.direction = (
        tfma.MetricDirection.HIGHER_IS_BETTER)
    acc.threshold.change_threshold.absolute.value = -0.01
    by_step = label_kind == ms.PER_STEP
    if not by_step:
      spec.metrics.add(class_name='SparseCategoricalCrossentropy')
    spec.metrics.add(class_name='MultiClassConfusionMatrixPlot')
    per_class = cfg.metrics_specs.add()
    # Per class by arg-max (top-1), as the confusion matrix counts: without
    # top_k, TFMA binarises each class's probability at 0.5.
    per_class.metrics.add(class_name='Recall', config='{"top_k": 1}')
    per_class.metrics.add(class_name='Precision', config='{"top_k": 1}')
    if not by_step:
      per_class.metrics.add(class_name='AUC')
    per_class.binarize.class_ids.values.extend(range(int(num_classes)))
  else:
    mse = spec.metrics.add(class_name='MeanSquaredError')
    mse.threshold.change_threshold.direction = (
        tfma.MetricDirection.LOWER_IS_BETTER)
    mse.threshold.change_threshold.relative.value = 0.01
    spec.metrics.add(class_name='MeanAbsoluteError')
  cfg.slicing_specs.add()
  cfg.slicing_specs.add(feature_keys=[ex.LENGTH_BUCKET])
  return cfg


PREDICTION_KEYS = {CANDIDATE: ex.PREDICTION, BASELINE: ex.BASELINE_PREDICTION,
                   NO_SKILL: ex.NO_SKILL_PREDICTION,
                   LAST_VALUE: ex.LAST_VALUE_PREDICTION}


def no_skill_models(spec: ms.ModelSpec) -> List[str]:
  """The no-skill predictors of the gate (extract features, scored by
  ``checks/no_skill_gate.py``, not TFMA models)."""
  names = [NO_SKILL]
  if spec.task == ms.REGRESSION and spec.label_kind == ms.PER_STEP:
    names.append(LAST_VALUE)
  return names


def reference_models(with_baseline: bool) -> List[str]:
  """The TFMA models beside the candidate: the baseline, when there is a
  comparable one. (The no-skill predictors are not TFMA models: TFMA then
  evaluates one model, or one model with diffs, and ``tfma.load_eval_result``
  without a model name gives the candidate.)"""
  return [BASELINE] if with_baseline else []


def complete_config(user: Optional[tfma.EvalConfig], spec: ms.ModelSpec,
                    with_baseline: bool) -> tfma.EvalConfig:
  """The config TFMA runs: model specs for the extracts, the user's metrics
  on the candidate, threshold-free copies for the reference models, the
  primary metric always computed (see the module docstring)."""
  base = user if user is not None else default_eval_config(
      spec.task, spec.num_classes, spec.label_kind)
  cfg = tfma.EvalConfig()
  cfg.CopyFrom(base)
  del cfg.model_specs[:]
  refs = reference_models(with_baseline)
  for name in [CANDIDATE] + refs:
    cfg.model_specs.add(name=name, label_key=ex.LABEL,
                        prediction_key=PREDICTION_KEYS[name],
                        example_weight_key=ex.WEIGHT,
                        is_baseline=(name == BASELINE))
  del cfg.metrics_specs[:]
  for user_spec in base.metrics_specs:
    unknown = set(user_spec.model_names) - {CANDIDATE}
    if unknown:
      raise EvalConfigError(
          f'metrics_specs name models {sorted(unknown)}: the StatefulEvaluator '
          f'sets the model specs itself; name none or {CANDIDATE!r}')
    mine = cfg.metrics_specs.add()
    mine.CopyFrom(user_spec)
    del mine.model_names[:]
    mine.model_names.append(CANDIDATE)
    if not refs:
      continue
    ref = cfg.metrics_specs.add()
    ref.CopyFrom(user_spec)
    del ref.model_names[:]
    ref.model_names.extend(refs)
    for metric in ref.metrics:
      metric.ClearField('threshold')
      metric.ClearField('per_slice_thresholds')
      metric.ClearField('cross_slice_thresholds')
    ref.ClearField('thresholds')
  gate = cfg.metrics_specs.add(model_names=[CANDIDATE] + refs)
  gate.metrics.add(class_name='SparseCategoricalAccuracy'
                   if spec.task == ms.CLASSIFICATION else 'MeanSquaredError')
  if not cfg.slicing_specs:
    cfg.slicing_specs.add()
  if not any(not s.feature_keys and not s.feature_values
             for s in cfg.slicing_specs):
    cfg.slicing_specs.add()  # Overall: the gate and the headline read it.
  if not with_baseline:
    _drop_change_thresholds(cfg)
  for metrics_spec in cfg.metrics_specs:
    for metric in metrics_spec.metrics:
      _use_native(metric)
  # With one model (no baseline) TFMA names it '' (its single-model
  # layout: tfma.load_eval_result(uri)); ``load`` reads it as the candidate.
  return config_util.update_eval_config_with_defaults(
      cfg, has_baseline=with_baseline, rubber_stamp=not with_baseline)


# Metrics computed by the vectorised numpy metrics of ``metrics``
# (same names, same values; no traced TensorFlow function per combiner for
# the Keras two, no Python loop over label elements for TFMA's two).
NATIVE_METRICS = {
    'SparseCategoricalAccuracy': 'SparseCategoricalAccuracy',
    'SparseCategoricalCrossentropy': 'SparseCategoricalCrossentropy',
    # TFMA's own classes win over ``module`` by class name: renamed.
    'MeanSquaredError': 'ElementwiseMeanSquaredError',
    'MeanAbsoluteError': 'ElementwiseMeanAbsoluteError',
}


def _use_native(metric: tfma.MetricConfig) -> None:
  """Points a ``NATIVE_METRICS`` config (no module, no settings but its
  name) at ``metrics``."""
  if metric.class_name not in NATIVE_METRICS or metric.module:
    return
  try:
    settings = json.loads(metric.config or '{}')
  except ValueError:
    return  # TFMA reports a bad config itself.
  if isinstance(settings, dict) and set(settings) <= {'name'}:
    metric.class_name = NATIVE_METRICS[metric.class_name]
    metric.module = tfma_metrics.MODULE


def _drop_change_thresholds(cfg: tfma.EvalConfig) -> None:
  """Without a baseline there is nothing to change from: the change
  thresholds are dropped (TFMA would report them as missing), the value
  thresholds kept."""
  def strip(threshold):
    threshold.ClearField('change_threshold')

  for spec in cfg.metrics_specs:
    for metric in spec.metrics:
      if metric.HasField('threshold'):
        strip(metric.threshold)
        if not metric.threshold.HasField('value_threshold'):
          metric.ClearField('threshold')
      for per in metric.per_slice_thresholds:
        strip(per.threshold)
    for key in list(spec.thresholds):
      strip(spec.thresholds[key])
      if not spec.thresholds[key].HasField('value_threshold'):
        del spec.thresholds[key]
    for key in list(spec.per_slice_thresholds):
      for per in spec.per_slice_thresholds[key].thresholds:
        strip(per.threshold)


def describe(config: tfma.EvalConfig) -> Dict[str, Any]:
  """The config as a JSON-able dict (for the documents)."""
  return json.loads(json_format.MessageToJson(config, sort_keys=True))
