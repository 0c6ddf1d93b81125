"""The label statistics the batcher records with the batches (``labels`` in
a split's ``metadata.json``) equal a scan of the written batches.

The reference is the trainer's label scan as it was before the batcher
recorded them (``components/stateful/batches.py: scan_labels`` at 9bd4d37),
its loop copied here unchanged over the batches read back as NumPy, plus a
count of each integer label: what the evaluator's no-skill scan counted.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from components.sequence_batcher import in_memory
from components.sequence_batcher import layout
from components.sequence_batcher import statistics
from tests.components.sequence_batcher import helpers


def scan_reference(batches):
  """``scan_labels`` of 9bd4d37 over NumPy batches in order, with
  ``class_counts`` for integer labels in [0, 65536)."""
  count, lo, hi, integral = 0, np.inf, -np.inf, True
  total = total_sq = 0.0
  counts, dtype_kind = [], None
  for batch in batches:
    dtype_kind = batch['labels'].dtype.kind
    values = batch['labels'][batch['label_weight'] > 0]
    if values.size == 0:
      continue
    count += values.size
    lo = min(lo, float(values.min()))
    hi = max(hi, float(values.max()))
    as_float = values.astype(np.float64)
    total += float(as_float.sum())
    total_sq += float((as_float * as_float).sum())
    if integral and values.dtype.kind == 'f':
      integral = bool(np.all(np.isfinite(values)) and
                      np.all(values == np.round(values)))
    if values.dtype.kind == 'i':
      counts.extend(int(v) for v in values)
  mean = total / count if count else float('nan')
  var = max(0.0, total_sq / count - mean * mean) if count else float('nan')
  out = {'count': count, 'min': lo, 'max': hi, 'mean': mean,
         'std': float(np.sqrt(var)), 'integral': integral}
  out['class_counts'] = (
      [int(c) for c in np.bincount(np.asarray(counts, np.int64))]
      if dtype_kind == 'i' else None)
  return out


def _as_json(stats):
  """The reference as ``metadata.json`` holds it (no labelled step: None)."""
  out = dict(stats)
  if not stats['count']:
    out.update(min=None, max=None, mean=None, std=None)
  return out


def _data(kind: str, label_kind: str, lengths, seed: int):
  """Sequences whose labels are classes (``kind`` ``classes``; per step:
  tagging) or float regression values (Gaussian, of scales 1e-5 to 1e4 so
  that the order of the float sums matters), per sequence or per step."""
  rng = np.random.default_rng(seed)
  data = helpers.make_data(lengths, layout.PER_STEP, seed=seed)
  for s in data:
    n = 1 if label_kind == layout.PER_SEQUENCE else s.length
    if kind == 'classes':
      values = rng.integers(0, 5, size=n).astype(np.int64)
    else:
      values = (rng.normal(size=n) * 10.0 ** rng.integers(-5, 5)
                ).astype(np.float32)
    s.labels = np.broadcast_to(values, (s.length,)).copy()
  return data


LENGTHS = [13, 2, 9, 7, 4, 4, 1, 5, 11, 3, 6, 8, 17, 2]

CASES = {
    # name: (label kind, labels, mode)
    'per_sequence_classification': (layout.PER_SEQUENCE, 'classes',
                                     layout.PACKED),
    'per_step_tagging': (layout.PER_STEP, 'classes', layout.DENSE),
    'per_step_regression': (layout.PER_STEP, 'floats', layout.BUCKETED),
    'per_sequence_regression': (layout.PER_SEQUENCE, 'floats',
                                layout.PACKED),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_recorded_statistics_equal_a_scan_of_the_batches(case, tmp_path):
  label_kind, labels, mode = CASES[case]
  # 40 feature bytes a batch: several chunks (chunk_bytes) and shards, so
  # the tallies of several workers are joined.
  config = layout.LayoutConfig(batch_size=3, num_unroll=4, mode=mode,
                               label_kind=label_kind, shard_bytes=300)
  data = _data(labels, label_kind, LENGTHS, seed=len(case))
  plan, ref_batches = helpers.reference(data, config)
  assert plan.num_shards >= 3
  dtype = np.int64 if labels != 'floats' else np.float32
  for b in ref_batches:  # As written.
    b['labels'] = b['labels'].astype(dtype)
  expected = _as_json(scan_reference(ref_batches))
  assert expected['count'] == sum(
      1 if label_kind == layout.PER_SEQUENCE else s.length for s in data)

  split_dir = str(tmp_path / 'beam' / 'Split-train')
  helpers.run_batcher(helpers.examples(helpers.rows_of(data)), split_dir,
                      config, expected={**helpers.expected_stats(plan),
                                        'labels': expected},
                      chunk_bytes=100)

  # Recorded == the scan of the written files, read back.
  meta = helpers.read_json(os.path.join(split_dir, 'metadata.json'))
  assert meta[statistics.LABELS_KEY] == _as_json(
      scan_reference(helpers.read_split(split_dir)))
  # The single-process writer records the same.
  written = in_memory.write_split(
      helpers.sequence_arrays(data), str(tmp_path / 'ref'), config=config,
      feature_names=list(helpers.FEATURES))
  assert written[statistics.LABELS_KEY] == expected
  if labels == 'floats':
    assert expected['class_counts'] is None and not expected['integral']
  else:
    assert sum(expected['class_counts']) == expected['count']


def test_floats_are_summed_in_batch_order():
  """The tally of batches split among workers and joined gives the floats
  one pass in batch order gives (a different order need not)."""
  rng = np.random.default_rng(3)
  batches = [{'labels': (rng.normal(size=(3, 4)) * 10.0 ** rng.integers(
      -6, 6)).astype(np.float32),
              'label_weight': (rng.random((3, 4)) > 0.3).astype(np.float32)}
             for _ in range(40)]
  whole = statistics.LabelTally()
  for b in batches:
    whole.add_batch(b['labels'], b['label_weight'])
  parts = [statistics.LabelTally() for _ in range(4)]
  for i, b in enumerate(batches):
    parts[i * 4 // len(batches)].add_batch(b['labels'], b['label_weight'])
  joined = statistics.LabelTally()
  for part in parts:
    joined.extend(part)
  assert joined.result() == whole.result() == _as_json(
      scan_reference(batches))
  # The order matters for these floats: added backwards, the mean differs.
  backwards = statistics.LabelTally()
  for b in batches[::-1]:
    backwards.add_batch(b['labels'], b['label_weight'])
  assert backwards.result()['mean'] != whole.result()['mean']


def test_no_labelled_step():
  tally = statistics.LabelTally()
  tally.add_batch(np.zeros((2, 3), np.int64), np.zeros((2, 3), np.float32))
  recorded = tally.result()
  assert recorded == {'count': 0, 'min': None, 'max': None, 'mean': None,
                      'std': None, 'integral': True, 'class_counts': []}
  json.dumps(recorded, allow_nan=False)  # Plain JSON.
  stats = statistics.label_statistics(recorded)
  ref = scan_reference([{'labels': np.zeros((2, 3), np.int64),
                         'label_weight': np.zeros((2, 3), np.float32)}])
  assert stats['min'] == ref['min'] == np.inf
  assert stats['max'] == ref['max'] == -np.inf
  assert np.isnan(stats['mean']) and np.isnan(stats['std'])


@pytest.mark.parametrize('labels, counted', [
    (np.array([[0, 3, 3]]), [1, 0, 0, 2]),
    (np.array([[-1, 2, 2]]), None),  # Not class ids.
    (np.array([[1, statistics.MAX_CLASS_COUNTS, 2]]), None),
    (np.array([[0.0, 1.0, 1.0]], np.float32), None),  # Float labels.
])
def test_class_counts(labels, counted):
  tally = statistics.LabelTally()
  tally.add_batch(labels, np.ones(labels.shape, np.float32))
  assert tally.result()['class_counts'] == counted
