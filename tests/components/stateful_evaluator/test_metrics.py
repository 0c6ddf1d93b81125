"""Metric maths and slicing (NumPy only), against hand and brute-force
answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from components.stateful_evaluator import config as C
from components.stateful_evaluator import metrics as M


def _records(labels, outputs, *, weights=None, lengths=None, segments=None,
             positions=None, ids=None) -> M.StepRecords:
  n = len(labels)
  return M.StepRecords(
      labels=np.asarray(labels),
      outputs=np.asarray(outputs, np.float32).reshape(n, -1),
      weights=np.asarray(weights if weights is not None else [1.0] * n,
                         np.float32),
      losses=np.arange(n, dtype=np.float32),
      sequence_ids=np.asarray(ids if ids is not None else range(n), np.int64),
      sequence_lengths=np.asarray(lengths if lengths is not None else [1] * n,
                                  np.int64),
      segment_index=np.asarray(segments if segments is not None else [0] * n,
                               np.int64),
      position=np.asarray(positions if positions is not None else [0] * n,
                          np.int64),
      sequence_keys=[f'k{i}' for i in range(n)])


def _brute_auc(scores, positive, weights):
  num = den = 0.0
  for i, j in itertools.product(range(len(scores)), repeat=2):
    if positive[i] and not positive[j]:
      w = weights[i] * weights[j]
      den += w
      num += w * (1.0 if scores[i] > scores[j] else
                  0.5 if scores[i] == scores[j] else 0.0)
  return num / den


@pytest.mark.parametrize('seed', range(4))
def test_auc_matches_pairwise_count_with_ties_and_weights(seed):
  rng = np.random.default_rng(seed)
  scores = rng.integers(0, 5, size=30).astype(np.float64)  # Many ties.
  positive = rng.random(30) < 0.4
  weights = rng.integers(1, 4, size=30).astype(np.float64)
  assert M.binary_auc(scores, positive, weights) == pytest.approx(
      _brute_auc(scores, positive, weights), abs=1e-12)


def test_auc_is_none_without_both_classes():
  assert M.binary_auc(np.array([0.1, 0.2]), np.array([True, True]),
                      np.ones(2)) is None


def test_classification_metrics_by_hand():
  # Labels and argmax predictions:
  #   label 0 0 1 1 2 2
  #   pred  0 1 1 1 0 2   -> 4/6 correct
  labels = [0, 0, 1, 1, 2, 2]
  onehot = np.eye(3)[[0, 1, 1, 1, 0, 2]] * 2.0
  # Second-best class: label 0 row 1 has 0 second -> top-2 hit; row 4 (label
  # 2, pred 0) has 2 as second best -> hit.
  onehot[1, 0] = 1.0
  onehot[4, 2] = 1.0
  rec = _records(labels, onehot)
  settings = M.MetricSettings.for_task('classification', 3, 3, C.EvalConfig())
  m = M.compute_metrics(rec, settings)
  assert m['accuracy'] == pytest.approx(4 / 6)
  assert m['precision/0'] == pytest.approx(1 / 2)   # pred 0: rows 0, 4
  assert m['precision/1'] == pytest.approx(2 / 3)   # pred 1: rows 1, 2, 3
  assert m['precision/2'] == pytest.approx(1.0)
  assert m['recall/0'] == pytest.approx(1 / 2)
  assert m['recall/1'] == pytest.approx(1.0)
  assert m['recall/2'] == pytest.approx(1 / 2)
  assert m['macro_recall'] == pytest.approx((0.5 + 1 + 0.5) / 3)
  assert m['top_2_accuracy'] == pytest.approx(1.0)
  assert 'top_5_accuracy' not in m  # k >= num_classes is skipped.
  assert 'auc' not in m
  assert m['loss'] == pytest.approx(np.mean(np.arange(6)))
  assert m['weighted_count'] == 6 and m['num_sequences'] == 6


def test_weights_scale_each_step_and_zero_denominators_give_none():
  rec = _records([1, 0, 1], [[0, 1], [0, 1], [1, 0]], weights=[3, 1, 1])
  settings = M.MetricSettings.for_task('classification', 2, 2, C.EvalConfig())
  m = M.compute_metrics(rec, settings)
  assert m['accuracy'] == pytest.approx(3 / 5)
  assert m['precision/1'] == pytest.approx(3 / 4)
  assert m['auc'] == pytest.approx(_brute_auc([1, 1, -1], [1, 0, 1],
                                              [3, 1, 1]))
  empty = M.compute_metrics(rec.subset(np.zeros(3, bool)), settings)
  assert empty['accuracy'] is None and empty['precision/0'] is None
  assert empty['weighted_count'] == 0


def test_top_k_counts_ties_at_the_boundary_as_hits():
  # Label 2 ties with class 1 for second place: in the top 2 (in_top_k).
  rec = _records([2], [[3.0, 1.0, 1.0, 0.0]])
  settings = M.MetricSettings.for_task(
      'classification', 4, 4, C.EvalConfig(metrics=('top_k_accuracy',),
                                            top_k=(1, 2)))
  m = M.compute_metrics(rec, settings)
  assert m['top_1_accuracy'] == 0.0 and m['top_2_accuracy'] == 1.0


def test_regression_metrics():
  rec = _records([1.0, 2.0, -1.0], [[1.5], [0.0], [-1.0]], weights=[1, 2, 1])
  settings = M.MetricSettings.for_task('regression', None, 1, C.EvalConfig())
  m = M.compute_metrics(rec, settings)
  assert m['mae'] == pytest.approx((0.5 + 2 * 2.0) / 4)
  assert m['rmse'] == pytest.approx(np.sqrt((0.25 + 2 * 4.0) / 4))


@pytest.mark.parametrize('task, classes, units, config, match', [
    ('classification', 3, 3, C.EvalConfig(metrics=('auc',)), 'binary'),
    ('classification', 2, 2, C.EvalConfig(metrics=('mae',)), 'do not apply'),
    ('regression', None, 1, C.EvalConfig(metrics=('accuracy',)),
     'do not apply'),
    ('regression', None, 2, C.EvalConfig(), 'one output per step'),
])
def test_metric_families_that_do_not_apply_are_errors(task, classes, units,
                                                       config, match):
  with pytest.raises(C.EvalConfigError, match=match):
    M.MetricSettings.for_task(task, classes, units, config)


def test_length_buckets_by_quantile_and_segment_slices():
  # Nine sequences of lengths 1..9, one labelled step each.
  lengths = np.arange(1, 10)
  rec = _records([0.0] * 9, [[0.0]] * 9, lengths=lengths,
                 segments=[0, 0, 0, 1, 1, 2, 0, 3, 1])
  slices = M.define_slices(rec, C.EvalConfig())
  # Cut points at the 1/3 and 2/3 quantiles: 3.67 and 6.33.
  assert slices.length_edges == pytest.approx((11 / 3, 19 / 3))
  assert slices.length_ranges == {'length:short': (1, 3),
                                  'length:medium': (4, 6),
                                  'length:long': (7, 9)}
  got = {name: lengths[slices.rows(name, rec)].tolist()
         for name in slices.names}
  assert got['length:short'] == [1, 2, 3]
  assert got['length:long'] == [7, 8, 9]
  assert got['segment:first'] == [1, 2, 3, 7]
  assert got['segment:later'] == [4, 5, 6, 8, 9]
  assert got['overall'] == lengths.tolist()


def test_length_buckets_use_sequences_not_steps_and_may_be_empty():
  # One long sequence with many labelled steps must not pull the cut points.
  rec = _records([0.0] * 6, [[0.0]] * 6, ids=[0, 1, 2, 2, 2, 2],
                 lengths=[2, 2, 50, 50, 50, 50])
  slices = M.define_slices(rec, C.EvalConfig())
  assert slices.length_edges == pytest.approx((2.0, 18.0))
  assert slices.length_ranges['length:medium'] == (None, None)
  settings = M.MetricSettings.for_task('regression', None, 1, C.EvalConfig())
  sliced = M.sliced_metrics(rec, slices, settings)
  assert sliced['length:medium']['mae'] is None
  assert sliced['length:long']['num_sequences'] == 1
  assert sliced['length:long']['weighted_count'] == 4


@pytest.mark.parametrize('max_position, bins, edges', [
    (3, 10, [0, 1, 2, 3, 4]),
    (9, 10, list(range(11))),
    (19, 4, [0, 5, 10, 15, 20]),
    (10, 3, [0, 4, 8, 11]),
])
def test_position_edges(max_position, bins, edges):
  assert M.position_edges(max_position, bins) == edges


def test_error_by_position():
  rec = _records([1.0, 1.0, 1.0, 0.0], [[1.0], [3.0], [2.0], [0.5]],
                 positions=[0, 1, 1, 5])
  out = M.by_position(rec, [0, 1, 2, 6], 'regression')
  assert out['weight'] == [1.0, 2.0, 1.0]
  assert out['error'] == pytest.approx([0.0, 1.5, 0.5])
  assert out['loss'] == pytest.approx([0.0, 1.5, 3.0])
