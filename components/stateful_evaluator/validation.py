"""Threshold validation with TFMA's semantics. Plain Python.

Mirrors ``tensorflow_model_analysis/evaluators/metrics_validator.py``:

* ``GenericValueThreshold``: passes when ``lower_bound <= value <=
  upper_bound`` (a missing bound is infinite).
* ``GenericChangeThreshold``: with ``diff = candidate - baseline``, the
  ``absolute`` part passes when ``diff >= absolute`` (HIGHER_IS_BETTER) or
  ``diff <= absolute`` (LOWER_IS_BETTER); the ``relative`` part uses
  ``ratio = diff / baseline`` (NaN when the baseline is close to 0, which
  fails every comparison) the same way; both given parts must pass.
* Without a baseline the change thresholds are not checked ("rubber stamp")
  and only value thresholds decide.
* A threshold whose metric has no value (not computed, or undefined on the
  slice, e.g. an empty length bucket) is a failure, as TFMA treats unchecked
  thresholds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional

from components.stateful_evaluator import config as config_lib

SlicedMetrics = Mapping[str, Mapping[str, Optional[float]]]

VALUE = 'value'
CHANGE = 'change'


@dataclasses.dataclass(frozen=True)
class ThresholdCheck:
  """The outcome of one value or change threshold.

  Attributes:
    metric: the metric name.
    slice: the slice name.
    kind: ``value`` or ``change``.
    passed: whether it held.
    value: the candidate's value (None when missing).
    baseline: the baseline's value (change checks).
    threshold: the threshold as a dict.
    message: why it failed (empty when it passed).
  """
  metric: str
  slice: str
  kind: str
  passed: bool
  value: Optional[float]
  baseline: Optional[float]
  threshold: Dict[str, Any]
  message: str = ''

  def to_dict(self) -> Dict[str, Any]:
    out = dataclasses.asdict(self)
    for key in ('value', 'baseline'):
      if out[key] is not None and not math.isfinite(out[key]):
        out[key] = str(out[key])  # JSON has no NaN/inf.
    return out


@dataclasses.dataclass(frozen=True)
class ValidationResult:
  """All threshold checks of one evaluation.

  Attributes:
    ok: every checked threshold passed.
    rubber_stamped: there was no baseline, so change thresholds were skipped.
    checks: every check done, passed or failed.
    skipped: change thresholds not checked for lack of a baseline.
  """
  ok: bool
  rubber_stamped: bool
  checks: List[ThresholdCheck]
  skipped: List[Dict[str, Any]]

  @property
  def failures(self) -> List[ThresholdCheck]:
    return [c for c in self.checks if not c.passed]

  def to_dict(self) -> Dict[str, Any]:
    return {'ok': self.ok, 'rubber_stamped': self.rubber_stamped,
            'checks': [c.to_dict() for c in self.checks],
            'failures': [c.to_dict() for c in self.failures],
            'skipped': list(self.skipped)}


def _get(metrics: Optional[SlicedMetrics], slice_name: str,
         metric: str) -> Optional[float]:
  if metrics is None:
    return None
  value = metrics.get(slice_name, {}).get(metric)
  if value is None:
    return None
  value = float(value)
  return None if math.isnan(value) else value


def check_value(value: Optional[float],
                threshold: config_lib.ValueThreshold) -> (bool, str):
  """``(passed, message)`` of a GenericValueThreshold."""
  if value is None:
    return False, 'metric has no value'
  lower = -math.inf if threshold.lower_bound is None else threshold.lower_bound
  upper = math.inf if threshold.upper_bound is None else threshold.upper_bound
  if lower <= value <= upper:
    return True, ''
  if value < lower:
    return False, f'{value:.6g} < lower_bound {lower:.6g}'
  return False, f'{value:.6g} > upper_bound {upper:.6g}'


def check_change(value: Optional[float], baseline: Optional[float],
                 threshold: config_lib.ChangeThreshold) -> (bool, str):
  """``(passed, message)`` of a GenericChangeThreshold."""
  if value is None or baseline is None:
    which = 'candidate' if value is None else 'baseline'
    return False, f'{which} metric has no value'
  diff = value - baseline
  higher = threshold.direction == config_lib.HIGHER_IS_BETTER
  problems = []
  if threshold.absolute is not None:
    ok = diff >= threshold.absolute if higher else diff <= threshold.absolute
    if not ok:
      problems.append(f'change {diff:+.6g} {"<" if higher else ">"} absolute '
                      f'{threshold.absolute:+.6g} ({threshold.direction})')
  if threshold.relative is not None:
    ratio = math.nan if math.isclose(baseline, 0.0) else diff / baseline
    ok = ratio >= threshold.relative if higher else (
        ratio <= threshold.relative)
    if not ok:
      if math.isnan(ratio):
        problems.append('relative change undefined: the baseline is 0')
      else:
        problems.append(
            f'relative change {ratio:+.6g} {"<" if higher else ">"} '
            f'relative {threshold.relative:+.6g} ({threshold.direction})')
  return not problems, '; '.join(problems)


def validate(config: config_lib.EvalConfig, candidate: SlicedMetrics,
             baseline: Optional[SlicedMetrics]) -> ValidationResult:
  """Checks every threshold of ``config``.

  Args:
    config: the thresholds.
    candidate: ``{slice: {metric: value}}`` of the candidate model.
    baseline: the same for the baseline model, or None when there is none.

  Returns:
    A ``ValidationResult``; ``ok`` is True when no check failed (also when
    there are no thresholds).
  """
  checks: List[ThresholdCheck] = []
  skipped = []
  for t in config.thresholds:
    value = _get(candidate, t.slice, t.metric)
    if t.value is not None:
      passed, message = check_value(value, t.value)
      checks.append(ThresholdCheck(
          metric=t.metric, slice=t.slice, kind=VALUE, passed=passed,
          value=value, baseline=None, threshold=t.value.to_dict(),
          message=message))
    if t.change is not None:
      if baseline is None:
        skipped.append({'metric': t.metric, 'slice': t.slice,
                        'kind': CHANGE, 'threshold': t.change.to_dict(),
                        'reason': 'no baseline model'})
        continue
      base = _get(baseline, t.slice, t.metric)
      passed, message = check_change(value, base, t.change)
      checks.append(ThresholdCheck(
          metric=t.metric, slice=t.slice, kind=CHANGE, passed=passed,
          value=value, baseline=base, threshold=t.change.to_dict(),
          message=message))
  return ValidationResult(ok=all(c.passed for c in checks),
                          rubber_stamped=baseline is None, checks=checks,
                          skipped=skipped)
