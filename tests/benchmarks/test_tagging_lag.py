"""benchmarks/tagging_lag.py: positions in the recording and the buckets
(NumPy only; no pipeline run)."""

import numpy as np
import pytest

from benchmarks import streams
from benchmarks import tagging_lag


def test_positions_restart_at_every_recording():
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, 12, size=13)
  # Channel 0 of recording i holds 1000 * i + its step: the position is
  # the value modulo 1000 at every step of every stream.
  series = [np.stack([1000.0 * i + np.arange(n)], 1)
            for i, n in enumerate(lengths)]
  built = streams.tagging_streams(series, rng.integers(0, 3, size=13),
                                  'eval', per_stream=4, seed=1)
  for s in built:
    where = tagging_lag.positions(s, series)
    assert where.shape == (s.length,)
    np.testing.assert_array_equal(where, s.x[:, 0] % 1000)


def test_buckets_cover_every_step_once():
  position = np.array([0, 1, 5, 9, 20, 40, 70, 130, 300])
  correct = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1], bool)
  prefix = {t: t / 400 for t in tagging_lag._prefix_lengths(301)}  # pylint: disable=protected-access
  rows = tagging_lag.bucket_rows({'position': position, 'correct': correct},
                                 prefix, 0.9, 301)
  assert sum(r['share'] for r in rows) == pytest.approx(1.0)
  assert [r['bucket'] for r in rows][-1] == '256-300'
  first = rows[0]  # Positions 0-3: steps 0 and 1, one of them right.
  assert first['ours'] == 0.5 and first['bucket'] == '0-3'
  assert first['prefix_ceiling'] == pytest.approx(np.mean([1, 2, 3, 4]) / 400)


def test_prefix_lengths_dense_then_a_grid():
  ts = tagging_lag._prefix_lengths(100)  # pylint: disable=protected-access
  assert ts[:64] == list(range(1, 65)) and ts[64:] == [80, 96]
  assert tagging_lag._prefix_lengths(7) == list(range(1, 8))  # pylint: disable=protected-access


def test_every_step_prefix_weighs_each_step_of_each_recording_once():
  # Recordings of 2 and 3 steps: steps at t = 1, 2 (both) and 3 (one).
  prefix = {1: 0.0, 2: 0.5, 3: 1.0}
  got = tagging_lag.every_step_prefix(prefix, [2, 3])
  assert got == pytest.approx((2 * 0.0 + 2 * 0.5 + 1 * 1.0) / 5)
  # Between measured lengths the largest measured one below is used.
  assert tagging_lag.every_step_prefix({1: 0.2, 3: 0.8}, [4]) == (
      pytest.approx((0.2 + 0.2 + 0.8 + 0.8) / 4))
