"""Threshold validation, table-driven, with TFMA's semantics."""

from __future__ import annotations

import math

import pytest

from components.stateful_evaluator import config as C
from components.stateful_evaluator import validation as V

HIGHER, LOWER = C.HIGHER_IS_BETTER, C.LOWER_IS_BETTER


def _metrics(**values):
  return {'overall': dict(values), 'length:long': {'accuracy': 0.5}}


def _value(lower=None, upper=None, metric='accuracy', slice_='overall'):
  return C.MetricThreshold(metric, slice=slice_,
                           value=C.ValueThreshold(lower, upper))


def _change(direction, absolute=None, relative=None, metric='accuracy'):
  return C.MetricThreshold(metric, change=C.ChangeThreshold(
      direction, absolute=absolute, relative=relative))


# (name, threshold, candidate value, baseline value or None, expected ok)
CASES = [
    # Value thresholds: bounds are inclusive.
    ('value lower pass', _value(lower=0.8), 0.85, None, True),
    ('value lower equal passes', _value(lower=0.8), 0.8, None, True),
    ('value lower fail', _value(lower=0.8), 0.79, None, False),
    ('value upper pass', _value(upper=0.3, metric='loss'), 0.25, None, True),
    ('value upper fail', _value(upper=0.3, metric='loss'), 0.31, None, False),
    ('value band fail above', _value(0.2, 0.4), 0.5, None, False),
    ('value band pass', _value(0.2, 0.4), 0.3, None, True),
    ('value checked with baseline too', _value(lower=0.8), 0.7, 0.6, False),
    # Absolute change, higher is better: diff = cand - base >= absolute.
    ('abs higher pass improved', _change(HIGHER, absolute=0.0), 0.81, 0.80,
     True),
    ('abs higher pass allowed drop', _change(HIGHER, absolute=-0.02), 0.79,
     0.80, True),
    ('abs higher fail drop too big', _change(HIGHER, absolute=-0.02), 0.77,
     0.80, False),
    ('abs higher fail needs gain', _change(HIGHER, absolute=0.05), 0.82, 0.80,
     False),
    # Absolute change, lower is better: diff <= absolute.
    ('abs lower pass', _change(LOWER, absolute=0.0, metric='loss'), 0.4, 0.5,
     True),
    ('abs lower fail worse', _change(LOWER, absolute=0.0, metric='loss'), 0.6,
     0.5, False),
    ('abs lower pass within slack', _change(LOWER, absolute=0.1,
                                            metric='loss'), 0.55, 0.5, True),
    # Relative change: ratio = diff / baseline.
    ('rel higher pass', _change(HIGHER, relative=0.1), 0.67, 0.6, True),
    ('rel higher fail', _change(HIGHER, relative=0.1), 0.65, 0.6, False),
    ('rel lower pass', _change(LOWER, relative=-0.1, metric='loss'), 0.44,
     0.5, True),
    ('rel lower fail', _change(LOWER, relative=-0.1, metric='loss'), 0.46,
     0.5, False),
    ('rel zero baseline fails (NaN ratio)', _change(HIGHER, relative=-1.0),
     0.5, 0.0, False),
    ('abs and rel both must pass', C.MetricThreshold('accuracy', change=(
        C.ChangeThreshold(HIGHER, absolute=-0.1, relative=0.5))), 0.7, 0.6,
     False),
    # No baseline: change thresholds are skipped (rubber stamp).
    ('no baseline skips change', _change(HIGHER, absolute=0.5), 0.1, None,
     True),
]


@pytest.mark.parametrize('name, threshold, value, base, ok', CASES,
                         ids=[c[0] for c in CASES])
def test_threshold_cases(name, threshold, value, base, ok):
  del name
  config = C.EvalConfig(thresholds=(threshold,))
  cand = _metrics(**{threshold.metric: value})
  baseline = None if base is None else _metrics(**{threshold.metric: base})
  result = V.validate(config, cand, baseline)
  assert result.ok is ok
  assert result.rubber_stamped is (base is None)
  assert all(c.message for c in result.failures)
  assert not any(c.message for c in result.checks if c.passed)


def test_value_and_change_on_one_metric_are_two_checks():
  config = C.EvalConfig(thresholds=(C.MetricThreshold(
      'accuracy', value=C.ValueThreshold(lower_bound=0.5),
      change=C.ChangeThreshold(HIGHER, absolute=0.0)),))
  result = V.validate(config, _metrics(accuracy=0.6), _metrics(accuracy=0.7))
  assert [(c.kind, c.passed) for c in result.checks] == [('value', True),
                                                         ('change', False)]
  failure = result.failures[0]
  assert failure.value == 0.6 and failure.baseline == 0.7
  assert 'HIGHER_IS_BETTER' in failure.message
  # Without the baseline only the value threshold counts, and passes.
  alone = V.validate(config, _metrics(accuracy=0.6), None)
  assert alone.ok and [c.kind for c in alone.checks] == ['value']
  assert alone.skipped[0]['reason'] == 'no baseline model'


@pytest.mark.parametrize('cand, base', [
    (None, 0.5), (float('nan'), 0.5), (0.5, None)])
def test_missing_or_nan_metrics_fail(cand, base):
  config = C.EvalConfig(thresholds=(C.MetricThreshold(
      'accuracy', value=C.ValueThreshold(lower_bound=0.0),
      change=C.ChangeThreshold(HIGHER, absolute=-1.0)),))
  result = V.validate(config, _metrics(accuracy=cand),
                      _metrics(accuracy=base))
  assert not result.ok
  assert any('no value' in c.message for c in result.failures)


def test_thresholds_apply_to_their_slice_only():
  config = C.EvalConfig(thresholds=(_value(lower=0.6, slice_='length:long'),))
  # Overall accuracy is high, the long bucket's 0.5 fails.
  result = V.validate(config, _metrics(accuracy=0.9), None)
  assert not result.ok
  assert result.failures[0].slice == 'length:long'
  assert result.failures[0].value == 0.5


def test_no_thresholds_is_ok_and_serialisable():
  result = V.validate(C.EvalConfig(), _metrics(accuracy=0.1), None)
  assert result.ok and result.checks == []
  nan = V.ThresholdCheck('a', 'overall', 'value', False, math.nan, None, {})
  assert nan.to_dict()['value'] == 'nan'
