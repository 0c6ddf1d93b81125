"""``EvalConfig``: what the StatefulEvaluator computes and what it requires.

Plain Python (no TensorFlow, no TFX). The component takes it as JSON text
(``EvalConfig.to_json()``); the executor reads it back with
``EvalConfig.from_json``. Every dataclass is frozen and validated when built,
so a bad setting fails when the pipeline is defined, not when it runs.

Example::

  EvalConfig(
      thresholds=(
          MetricThreshold('accuracy', value=ValueThreshold(lower_bound=0.7)),
          MetricThreshold('loss', change=ChangeThreshold(
              direction=LOWER_IS_BETTER, absolute=0.05)),
          MetricThreshold('accuracy', slice='length:long',
                          value=ValueThreshold(lower_bound=0.6)),
      ),
      equivalence_tolerance=1e-4)

and as JSON::

  {"thresholds": [
     {"metric": "accuracy", "value": {"lower_bound": 0.7}},
     {"metric": "loss",
      "change": {"direction": "LOWER_IS_BETTER", "absolute": 0.05}}]}

Metric names (computed per slice; see ``metrics.py``):

* always: ``loss`` (the model's training loss, weighted by
  ``label_weight``), ``weighted_count`` (sum of ``label_weight``),
  ``num_sequences``;
* classification: ``accuracy``, ``precision/<class>``, ``recall/<class>``,
  ``macro_precision``, ``macro_recall``, ``auc`` (binary only) and
  ``top_<k>_accuracy`` (more than two classes, one per ``k`` in ``top_k``
  with ``k < num_classes``);
* regression: ``mae``, ``rmse``.

Slice names: ``overall``; ``length:<bucket>`` with buckets ``short``,
``medium``, ``long`` (``length_buckets=3``, by quantiles of the eval
sequences' lengths); ``segment:first`` (steps in a sequence's first segment,
where the state starts from zero) and ``segment:later`` (steps that depend on
carried state).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Dict, Mapping, Optional, Tuple

HIGHER_IS_BETTER = 'HIGHER_IS_BETTER'
LOWER_IS_BETTER = 'LOWER_IS_BETTER'
DIRECTIONS = (HIGHER_IS_BETTER, LOWER_IS_BETTER)

OVERALL = 'overall'
SEGMENT_FIRST = 'segment:first'
SEGMENT_LATER = 'segment:later'
LENGTH_PREFIX = 'length:'

# Metric families a user may select in ``EvalConfig.metrics``.
CLASSIFICATION_FAMILIES = ('accuracy', 'precision', 'recall', 'auc',
                           'top_k_accuracy')
REGRESSION_FAMILIES = ('mae', 'rmse')
FAMILIES = CLASSIFICATION_FAMILIES + REGRESSION_FAMILIES

_METRIC_NAME = re.compile(
    r'^(loss|weighted_count|num_sequences|accuracy|auc|mae|rmse|'
    r'macro_precision|macro_recall|precision/\d+|recall/\d+|'
    r'top_(\d+)_accuracy)$')

# What the chunking equivalence check compares with.
AUTO = 'auto'
SIGNATURE = 'signature'
TWIN = 'twin'
REFERENCES = (AUTO, SIGNATURE, TWIN)

CONFIG_VERSION = 1


class EvalConfigError(ValueError):
  """An invalid evaluation setting."""


def _number(value: Any, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise EvalConfigError(f'{name} must be a number, got {value!r}')
  value = float(value)
  if not math.isfinite(value):
    raise EvalConfigError(f'{name} must be finite, got {value}')
  return value


def _int(value: Any, name: str, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise EvalConfigError(f'{name} must be an int >= {minimum}, got '
                          f'{value!r}')
  return value


def _from_mapping(cls, data: Any, where: str) -> Dict[str, Any]:
  """Checks ``data`` is a mapping with only ``cls``'s field names."""
  if not isinstance(data, Mapping):
    raise EvalConfigError(f'{where} must be a JSON object, got {data!r}')
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - names)
  if unknown:
    raise EvalConfigError(f'{where}: unknown field(s) {unknown}; known: '
                          f'{sorted(names)}')
  return dict(data)


@dataclasses.dataclass(frozen=True)
class ValueThreshold:
  """TFMA ``GenericValueThreshold``: ``lower_bound <= value <= upper_bound``.

  Either bound may be None (unbounded on that side), not both.
  """
  lower_bound: Optional[float] = None
  upper_bound: Optional[float] = None

  def __post_init__(self):
    if self.lower_bound is None and self.upper_bound is None:
      raise EvalConfigError('a value threshold needs lower_bound and/or '
                            'upper_bound')
    for name in ('lower_bound', 'upper_bound'):
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, _number(value, name))
    if (self.lower_bound is not None and self.upper_bound is not None and
        self.lower_bound > self.upper_bound):
      raise EvalConfigError(f'lower_bound {self.lower_bound} > upper_bound '
                            f'{self.upper_bound}: no value can pass')

  def to_dict(self) -> Dict[str, float]:
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> 'ValueThreshold':
    return cls(**_from_mapping(cls, data, 'value threshold'))


@dataclasses.dataclass(frozen=True)
class ChangeThreshold:
  """TFMA ``GenericChangeThreshold`` against the baseline model.

  With ``diff = candidate - baseline``:

  * ``absolute``: HIGHER_IS_BETTER passes when ``diff >= absolute``;
    LOWER_IS_BETTER passes when ``diff <= absolute``.
  * ``relative``: with ``ratio = diff / baseline`` (NaN, hence a failure,
    when the baseline is 0), HIGHER_IS_BETTER passes when
    ``ratio >= relative``; LOWER_IS_BETTER when ``ratio <= relative``.

  Both, when given, must pass. E.g. "accuracy may drop by at most 0.01":
  ``ChangeThreshold(HIGHER_IS_BETTER, absolute=-0.01)``; "loss must improve
  by 5%": ``ChangeThreshold(LOWER_IS_BETTER, relative=-0.05)``.
  Ignored (rubber stamp) when there is no baseline model.
  """
  direction: str
  absolute: Optional[float] = None
  relative: Optional[float] = None

  def __post_init__(self):
    if self.direction not in DIRECTIONS:
      raise EvalConfigError(f'direction must be one of {DIRECTIONS}, got '
                            f'{self.direction!r}')
    if self.absolute is None and self.relative is None:
      raise EvalConfigError('a change threshold needs absolute and/or '
                            'relative')
    for name in ('absolute', 'relative'):
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, _number(value, name))

  def to_dict(self) -> Dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> 'ChangeThreshold':
    return cls(**_from_mapping(cls, data, 'change threshold'))


@dataclasses.dataclass(frozen=True)
class MetricThreshold:
  """Thresholds on one metric of one slice.

  Attributes:
    metric: a metric name (see the module docstring), e.g. ``accuracy``,
      ``recall/1``, ``top_3_accuracy``.
    slice: ``overall`` (default), ``length:<bucket>``, ``segment:first`` or
      ``segment:later``.
    value: an absolute requirement, checked always.
    change: a requirement relative to the baseline, checked when there is
      one.
  """
  metric: str
  slice: str = OVERALL
  value: Optional[ValueThreshold] = None
  change: Optional[ChangeThreshold] = None

  def __post_init__(self):
    if not isinstance(self.metric, str) or not _METRIC_NAME.match(self.metric):
      raise EvalConfigError(
          f'unknown metric {self.metric!r}: use loss, weighted_count, '
          'num_sequences, accuracy, auc, mae, rmse, macro_precision, '
          'macro_recall, precision/<class>, recall/<class> or '
          'top_<k>_accuracy')
    if not isinstance(self.slice, str):
      raise EvalConfigError(f'slice must be a string, got {self.slice!r}')
    if self.value is None and self.change is None:
      raise EvalConfigError(f'threshold on {self.metric!r} has neither a '
                            'value nor a change threshold')
    if self.value is not None and not isinstance(self.value, ValueThreshold):
      raise EvalConfigError(f'value must be a ValueThreshold, got '
                            f'{self.value!r}')
    if self.change is not None and not isinstance(self.change,
                                                  ChangeThreshold):
      raise EvalConfigError(f'change must be a ChangeThreshold, got '
                            f'{self.change!r}')

  def to_dict(self) -> Dict[str, Any]:
    out = {'metric': self.metric, 'slice': self.slice}
    if self.value is not None:
      out['value'] = self.value.to_dict()
    if self.change is not None:
      out['change'] = self.change.to_dict()
    return out

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> 'MetricThreshold':
    kwargs = _from_mapping(cls, data, 'threshold')
    if kwargs.get('value') is not None:
      kwargs['value'] = ValueThreshold.from_dict(kwargs['value'])
    if kwargs.get('change') is not None:
      kwargs['change'] = ChangeThreshold.from_dict(kwargs['change'])
    return cls(**kwargs)


def length_bucket_names(count: int) -> Tuple[str, ...]:
  """``short``/``medium``/``long`` for 3 buckets, ``short``/``long`` for 2,
  ``q0``..``q<n-1>`` otherwise."""
  if count == 2:
    return ('short', 'long')
  if count == 3:
    return ('short', 'medium', 'long')
  return tuple(f'q{i}' for i in range(count))


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Settings of the StatefulEvaluator. Frozen; validated when built.

  Attributes:
    metrics: metric families to compute besides ``loss`` and the counts:
      any of ``accuracy``, ``precision``, ``recall``, ``auc``,
      ``top_k_accuracy`` (classification), ``mae``, ``rmse`` (regression).
      None (default): every family that applies to the model's task. Naming
      a family that does not apply (``mae`` for a classifier, ``auc`` for
      more than two classes) is an error when the model is evaluated.
    top_k: the k of ``top_<k>_accuracy`` (classification with more than
      two classes; values ``>= num_classes`` are skipped).
    thresholds: value and change thresholds (``MetricThreshold``).
    length_buckets: number of sequence-length slices, cut at equally spaced
      quantiles of the eval sequences' lengths (3: short/medium/long).
      0 disables length slicing.
    slice_by_segment: add the ``segment:first``/``segment:later`` slices.
    position_bins: at most this many bins of "position in the sequence"
      for the error-by-position figures.
    equivalence_tolerance: the largest allowed absolute difference between
      the chunked stateful outputs and the serving signature on whole
      sequences; above it the model is not blessed.
    equivalence_sample_size: how many eval sequences the check runs on
      (sequences spanning several segments first, then seeded at random).
    equivalence_seed: seed of that sample.
    serving_signature: the SavedModel signature the check calls: it must
      take ``features`` float32[N, L, F] (the features as in the batches)
      and ``lengths`` int[N].
    equivalence_reference: what the chunked outputs are compared with:
      ``signature`` (``serving_signature`` of the exported SavedModel),
      ``twin`` (the non-stateful serving twin rebuilt from the model's
      ``stateful/`` folder, i.e. the Keras model inside that signature) or
      ``auto`` (default): the signature, unless the SavedModel applies a
      Transform graph to raw features (the eval batches hold transformed
      ones), then the twin.
  """
  metrics: Optional[Tuple[str, ...]] = None
  top_k: Tuple[int, ...] = (2, 5)
  thresholds: Tuple[MetricThreshold, ...] = ()
  length_buckets: int = 3
  slice_by_segment: bool = True
  position_bins: int = 20
  equivalence_tolerance: float = 1e-4
  equivalence_sample_size: int = 16
  equivalence_seed: int = 0
  serving_signature: str = 'serving_default'
  equivalence_reference: str = AUTO

  def __post_init__(self):
    if self.metrics is not None:
      if isinstance(self.metrics, str):
        raise EvalConfigError('metrics must be a list of family names, not a '
                              'string')
      metrics = tuple(self.metrics)
      unknown = [m for m in metrics if m not in FAMILIES]
      if unknown:
        raise EvalConfigError(f'unknown metric families {unknown}; known: '
                              f'{list(FAMILIES)}')
      if len(set(metrics)) != len(metrics):
        raise EvalConfigError(f'metrics has duplicates: {list(metrics)}')
      object.__setattr__(self, 'metrics', metrics)
    top_k = tuple(self.top_k)
    for k in top_k:
      _int(k, 'top_k values', 1)
    object.__setattr__(self, 'top_k', tuple(sorted(set(top_k))))
    thresholds = tuple(self.thresholds)
    for t in thresholds:
      if not isinstance(t, MetricThreshold):
        raise EvalConfigError(f'thresholds must be MetricThreshold objects, '
                              f'got {t!r}')
    object.__setattr__(self, 'thresholds', thresholds)
    _int(self.length_buckets, 'length_buckets', 0)
    if self.length_buckets == 1:
      raise EvalConfigError('length_buckets must be 0 (no length slices) or '
                            'at least 2')
    if not isinstance(self.slice_by_segment, bool):
      raise EvalConfigError(f'slice_by_segment must be a bool, got '
                            f'{self.slice_by_segment!r}')
    _int(self.position_bins, 'position_bins', 1)
    tol = _number(self.equivalence_tolerance, 'equivalence_tolerance')
    if tol < 0:
      raise EvalConfigError(f'equivalence_tolerance must be >= 0, got {tol}')
    object.__setattr__(self, 'equivalence_tolerance', tol)
    _int(self.equivalence_sample_size, 'equivalence_sample_size', 1)
    _int(self.equivalence_seed, 'equivalence_seed', 0)
    if not isinstance(self.serving_signature, str) or not (
        self.serving_signature):
      raise EvalConfigError('serving_signature must be a non-empty string')
    if self.equivalence_reference not in REFERENCES:
      raise EvalConfigError(f'equivalence_reference must be one of '
                            f'{REFERENCES}, got '
                            f'{self.equivalence_reference!r}')
    known_slices = set(self.slice_names())
    seen = set()
    for t in thresholds:
      if t.slice not in known_slices:
        raise EvalConfigError(
            f'threshold on {t.metric!r} names slice {t.slice!r}; the slices '
            f'are {sorted(known_slices)}')
      match = _METRIC_NAME.match(t.metric)
      if match.group(2) is not None and int(match.group(2)) not in self.top_k:
        raise EvalConfigError(
            f'threshold on {t.metric!r}: {match.group(2)} is not in top_k '
            f'{list(self.top_k)}')
      if (t.metric, t.slice) in seen:
        raise EvalConfigError(f'two thresholds on {t.metric!r} in slice '
                              f'{t.slice!r}: put value and change in one')
      seen.add((t.metric, t.slice))

  def length_bucket_names(self) -> Tuple[str, ...]:
    return (length_bucket_names(self.length_buckets)
            if self.length_buckets else ())

  def slice_names(self) -> Tuple[str, ...]:
    """Every slice reported, in report order."""
    names = [OVERALL]
    names += [LENGTH_PREFIX + b for b in self.length_bucket_names()]
    if self.slice_by_segment:
      names += [SEGMENT_FIRST, SEGMENT_LATER]
    return tuple(names)

  def to_dict(self) -> Dict[str, Any]:
    return {
        'config_version': CONFIG_VERSION,
        'metrics': list(self.metrics) if self.metrics is not None else None,
        'top_k': list(self.top_k),
        'thresholds': [t.to_dict() for t in self.thresholds],
        'length_buckets': self.length_buckets,
        'slice_by_segment': self.slice_by_segment,
        'position_bins': self.position_bins,
        'equivalence_tolerance': self.equivalence_tolerance,
        'equivalence_sample_size': self.equivalence_sample_size,
        'equivalence_seed': self.equivalence_seed,
        'serving_signature': self.serving_signature,
        'equivalence_reference': self.equivalence_reference,
    }

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=1, sort_keys=True)

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> 'EvalConfig':
    data = dict(data)
    version = data.pop('config_version', CONFIG_VERSION)
    if version != CONFIG_VERSION:
      raise EvalConfigError(f'config_version {version} is not supported (this '
                            f'code reads {CONFIG_VERSION})')
    kwargs = _from_mapping(cls, data, 'eval_config')
    if 'thresholds' in kwargs:
      if not isinstance(kwargs['thresholds'], (list, tuple)):
        raise EvalConfigError('thresholds must be a list')
      kwargs['thresholds'] = tuple(
          MetricThreshold.from_dict(t) for t in kwargs['thresholds'])
    for name in ('metrics', 'top_k'):
      if kwargs.get(name) is not None:
        if not isinstance(kwargs[name], (list, tuple)):
          raise EvalConfigError(f'{name} must be a list, got '
                                f'{kwargs[name]!r}')
        kwargs[name] = tuple(kwargs[name])
    return cls(**kwargs)

  @classmethod
  def from_json(cls, text: Optional[str]) -> 'EvalConfig':
    """Parses ``to_json()`` output; empty text gives the defaults."""
    if not text:
      return cls()
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise EvalConfigError(f'eval_config is not valid JSON: {e}') from None
    return cls.from_dict(data)


def coerce(config: Any) -> EvalConfig:
  """An ``EvalConfig`` from an ``EvalConfig``, a dict, JSON text or None."""
  if config is None:
    return EvalConfig()
  if isinstance(config, EvalConfig):
    return config
  if isinstance(config, str):
    return EvalConfig.from_json(config)
  if isinstance(config, Mapping):
    return EvalConfig.from_dict(config)
  raise EvalConfigError(f'eval_config must be an EvalConfig, a dict or JSON '
                        f'text, got {type(config).__name__}')
