"""EvalConfig: defaults, JSON round trip and validation when built."""

from __future__ import annotations

import json

import pytest

from components.stateful_evaluator import config as C


def _full() -> C.EvalConfig:
  return C.EvalConfig(
      metrics=('accuracy', 'recall', 'top_k_accuracy'),
      top_k=(3, 2, 3),
      thresholds=(
          C.MetricThreshold('accuracy', value=C.ValueThreshold(
              lower_bound=0.6)),
          C.MetricThreshold('loss', slice='length:long',
                            change=C.ChangeThreshold(
                                C.LOWER_IS_BETTER, relative=-0.05)),
          C.MetricThreshold('recall/1', slice='segment:later',
                            value=C.ValueThreshold(0.1, 0.9),
                            change=C.ChangeThreshold(C.HIGHER_IS_BETTER,
                                                     absolute=-0.01)),
          C.MetricThreshold('top_3_accuracy', value=C.ValueThreshold(
              upper_bound=1)),
      ),
      length_buckets=3, position_bins=7, equivalence_tolerance=1e-5,
      equivalence_sample_size=4, equivalence_seed=9,
      serving_signature='serving_transformed')


def test_defaults():
  config = C.EvalConfig()
  assert config.equivalence_tolerance == 1e-4
  assert config.thresholds == ()
  assert config.slice_names() == ('overall', 'length:short', 'length:medium',
                                  'length:long', 'segment:first',
                                  'segment:later')


def test_json_round_trip_keeps_every_field():
  config = _full()
  text = config.to_json()
  again = C.EvalConfig.from_json(text)
  assert again == config
  assert again.top_k == (2, 3)  # Sorted, deduplicated.
  data = json.loads(text)
  assert data['thresholds'][1] == {
      'metric': 'loss', 'slice': 'length:long',
      'change': {'direction': 'LOWER_IS_BETTER', 'relative': -0.05}}
  assert C.EvalConfig.from_json('') == C.EvalConfig()
  assert C.coerce(data) == config
  assert C.coerce(None) == C.EvalConfig()


def test_bucket_names_follow_the_count():
  assert C.EvalConfig(length_buckets=2).slice_names()[1:3] == (
      'length:short', 'length:long')
  assert C.EvalConfig(length_buckets=4).length_bucket_names() == (
      'q0', 'q1', 'q2', 'q3')
  assert C.EvalConfig(length_buckets=0, slice_by_segment=False
                     ).slice_names() == ('overall',)


@pytest.mark.parametrize('build, match', [
    (lambda: C.ValueThreshold(), 'lower_bound and/or upper_bound'),
    (lambda: C.ValueThreshold(lower_bound=2, upper_bound=1), 'no value can'),
    (lambda: C.ValueThreshold(lower_bound='0.5'), 'must be a number'),
    (lambda: C.ValueThreshold(lower_bound=float('nan')), 'finite'),
    (lambda: C.ChangeThreshold('UP', absolute=0), 'direction'),
    (lambda: C.ChangeThreshold(C.HIGHER_IS_BETTER), 'absolute and/or'),
    (lambda: C.MetricThreshold('acuracy', value=C.ValueThreshold(0)),
     'unknown metric'),
    (lambda: C.MetricThreshold('accuracy'), 'neither'),
    (lambda: C.EvalConfig(thresholds=(C.MetricThreshold(
        'accuracy', slice='length:huge', value=C.ValueThreshold(0)),)),
     'slices are'),
    (lambda: C.EvalConfig(length_buckets=0, thresholds=(C.MetricThreshold(
        'accuracy', slice='length:short', value=C.ValueThreshold(0)),)),
     'slices are'),
    (lambda: C.EvalConfig(thresholds=(C.MetricThreshold(
        'top_7_accuracy', value=C.ValueThreshold(0)),)), 'not in top_k'),
    (lambda: C.EvalConfig(thresholds=(
        C.MetricThreshold('mae', value=C.ValueThreshold(upper_bound=1)),
        C.MetricThreshold('mae', change=C.ChangeThreshold(
            C.LOWER_IS_BETTER, absolute=0)))), 'two thresholds'),
    (lambda: C.EvalConfig(metrics=('accuracy', 'f1')), 'unknown metric fam'),
    (lambda: C.EvalConfig(metrics='accuracy'), 'not a string'),
    (lambda: C.EvalConfig(length_buckets=1), 'at least 2'),
    (lambda: C.EvalConfig(equivalence_tolerance=-1e-3), '>= 0'),
    (lambda: C.EvalConfig(equivalence_sample_size=0), '>= 1'),
    (lambda: C.EvalConfig(top_k=(0,)), '>= 1'),
    (lambda: C.EvalConfig.from_json('{"tolerance": 1e-3}'), 'unknown field'),
    (lambda: C.EvalConfig.from_json('{"thresholds": [{"metric": "mae", '
                                    '"value": {"upper": 1}}]}'),
     'unknown field'),
    (lambda: C.EvalConfig.from_json('{"config_version": 7}'), 'not support'),
    (lambda: C.EvalConfig.from_json('{nope'), 'not valid JSON'),
    (lambda: C.coerce(3), 'must be an EvalConfig'),
])
def test_invalid_settings_fail_when_built(build, match):
  with pytest.raises(C.EvalConfigError, match=match):
    build()
