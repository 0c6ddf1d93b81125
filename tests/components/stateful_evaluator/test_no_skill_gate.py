"""The no-skill gate's one-sided tests (checks/no_skill_gate.py): a predictor that
carries no signal passes at most about as often as the level says, on
balanced and on imbalanced classes and on regression; a real gain passes."""

from __future__ import annotations

import numpy as np
import pytest

from components.stateful_evaluator.checks import no_skill_gate as K

ALPHA = 0.05
SEEDS = range(200)


def _probs(classes, k):
  return np.eye(k)[np.asarray(classes)]


def _classification(labels, predicted, k, majority):
  return [{'label': np.array([y]), 'weight': np.ones(1),
           'prediction': _probs([p], k), 'ref': _probs([majority], k)}
          for y, p in zip(labels, predicted)]


def _pass_rate(make):
  passed = [K.paired_tests(*make(np.random.default_rng(seed)))['ref']
            .p_value <= ALPHA for seed in SEEDS]
  return float(np.mean(passed))


@pytest.mark.parametrize('share', [0.5, 0.8])
def test_no_signal_classifier_passes_at_most_at_the_level(share):
  """Labels independent of the predictions: balanced (a coin flip against
  the majority class) and imbalanced (80% majority; the candidate guesses
  in proportion)."""
  def make(rng):
    labels = (rng.random(300) >= share).astype(int)
    guesses = (rng.random(300) >= share).astype(int)
    return ('classification', _classification(labels, guesses, 2, 0),
            ['ref'])
  # 200 seeds: the binomial(200, 0.05) upper 99.9% point is about 0.11.
  assert _pass_rate(make) <= 0.11


def test_chance_level_hair_above_majority_is_not_significant():
  """0.503 against 0.5 on 1,000 balanced examples (the case that was
  blessed at margin 0): not significant."""
  labels = np.array([0, 1] * 500)
  predicted = labels.copy()
  predicted[:497] = 1 - predicted[:497]  # 503 right, 497 wrong.
  seqs = _classification(labels, predicted, 2, 0)
  test = K.paired_tests('classification', seqs, ['ref'])['ref']
  assert test.test == 'sign'
  assert test.p_value > 0.4


def test_clear_gain_is_significant():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 60)
  predicted = labels.copy()
  predicted[:6] = 1 - predicted[:6]  # 90% right against about 50%.
  test = K.paired_tests('classification', _classification(
      labels, predicted, 2, 0), ['ref'])['ref']
  assert test.p_value < 1e-4 and test.better > test.worse


def test_sign_test_is_the_exact_binomial_tail():
  test = K.one_sided_test(np.array([1, 1, 1, 1, 0, -1.0]), True)
  # 4 better, 1 worse: P(X >= 4), X ~ Binomial(5, 1/2) = 6/32.
  assert test.p_value == pytest.approx(6 / 32)
  assert (test.better, test.worse, test.blocks) == (4, 1, 6)


def test_no_signal_regression_passes_at_most_at_the_level():
  """Per-step regression: the candidate is noise around the training mean,
  scored on blocks of 256 steps of 20 sequences of 600 steps."""
  def make(rng):
    seqs = []
    for _ in range(20):
      y = rng.normal(size=600)
      seqs.append({'label': y, 'weight': np.ones(600),
                   'prediction': rng.normal(scale=0.05, size=600),
                   'ref': np.zeros(600)})
    return 'regression', seqs, ['ref']
  assert _pass_rate(make) <= 0.11


def test_regression_gain_is_significant_and_blocks_are_counted():
  rng = np.random.default_rng(1)
  seqs = []
  for n in (600, 100, 300):
    y = rng.normal(size=n)
    seqs.append({'label': y, 'weight': np.ones(n),
                 'prediction': y + rng.normal(scale=0.3, size=n),
                 'ref': np.zeros(n)})
  test = K.paired_tests('regression', seqs, ['ref'], block_steps=256)['ref']
  assert test.test == 't' and test.blocks == 3 + 1 + 2
  assert test.p_value < 0.01


def test_one_block_shows_nothing():
  assert K.one_sided_test(np.array([5.0]), False).p_value == 1.0
  assert K.one_sided_test(np.zeros(0), True).p_value == 1.0
  assert K.one_sided_test(np.array([2.0, 2.0]), False).p_value == 0.0


def test_block_sums():
  np.testing.assert_array_equal(K.block_sums(np.arange(7.0), 3),
                                [3.0, 12.0, 6.0])


def test_point_sample_is_bounded_and_uniform():
  sample = K.PointSample(size=500, seed=1)
  for start in range(0, 10_000, 700):
    values = np.arange(start, min(start + 700, 10_000), dtype=float)
    sample.offer(values, values * 2)
  points = np.array(sample.points())
  assert sample.offered == 10_000 and points.shape == (500, 2)
  np.testing.assert_array_equal(points[:, 1], points[:, 0] * 2)
  assert len(set(points[:, 0])) == 500
  # Uniform over the offers: about half from the first half.
  assert 200 < np.sum(points[:, 0] < 5_000) < 300
