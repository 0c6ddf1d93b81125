"""benchmarks/streams.py: the stream builders and the references (NumPy only;
no pipeline run)."""

import numpy as np
import pytest

from benchmarks import real_data
from benchmarks import streams
from benchmarks import ucr


def _recordings(n=21, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, 12, size=n)
  # Recording i: its steps are the values 1000 * i + 0, 1, ..., in channel
  # 0, so every step names its recording and its position.
  series = [np.stack([1000.0 * i + np.arange(L), rng.normal(size=L)], 1)
            for i, L in enumerate(lengths)]
  classes = rng.integers(0, 4, size=n)
  return series, classes


def test_tagging_streams_hold_every_step_once_with_its_class():
  series, classes = _recordings()
  out = streams.tagging_streams(series, classes, 'train', per_stream=8,
                                seed=3)
  assert [len(s.parts) for s in out] == [8, 8, 5]
  assert sorted(i for s in out for i in s.parts) == list(range(len(series)))
  assert len({s.key for s in out}) == len(out)
  seen = np.concatenate([s.x[:, 0] for s in out])
  expected = np.concatenate([x[:, 0] for x in series])
  assert sorted(seen) == sorted(expected)  # every step exactly once
  for s in out:
    # The recordings lie end to end in the stream, in their own order.
    np.testing.assert_array_equal(
        s.x, np.concatenate([series[i] for i in s.parts]))
    rec = (s.x[:, 0] // 1000).astype(int)
    np.testing.assert_array_equal(s.y, classes[rec])
    assert s.y.dtype == np.int64
  # Shuffled, and by the seed alone.
  again = streams.tagging_streams(series, classes, 'train', per_stream=8,
                                  seed=3)
  assert [s.parts for s in again] == [s.parts for s in out]
  assert [i for s in out for i in s.parts] != list(range(len(series)))


def test_tagging_streams_check_their_input():
  series, classes = _recordings(4)
  with pytest.raises(ValueError):
    streams.tagging_streams(series, classes[:3], 'eval')


def test_time_split_and_forecast_streams():
  x = np.stack([np.arange(100.0), -np.arange(100.0)], 1)
  train, evals = streams.time_split(x, 0.7)
  np.testing.assert_array_equal(train, x[:70])
  np.testing.assert_array_equal(evals, x[70:])
  out = streams.forecast_streams(train, 4, 'train')
  # 69 labelled steps (the last has no next value) -> 4 x 17, 1 dropped.
  assert [s.length for s in out] == [17] * 4
  np.testing.assert_array_equal(np.concatenate([s.x for s in out]),
                                train[:68])
  for s in out:
    np.testing.assert_array_equal(s.y, s.x[:, 0] + 1)  # the next value
  ev = streams.forecast_streams(evals, 2, 'eval')
  assert ev[0].x[0, 0] == 70 and ev[0].y[0] == 71
  with pytest.raises(ValueError):
    streams.time_split(x, 1.0)
  with pytest.raises(ValueError):
    streams.forecast_streams(x[:4], 4, 'eval')


def test_cut_long():
  s = streams.Stream('k', np.arange(50.0)[:, None], np.arange(50.0))
  out = streams.cut_long([s], limit=20)
  assert [p.length for p in out] == [17, 16, 17]
  assert [p.key for p in out] == ['kp0', 'kp1', 'kp2']
  np.testing.assert_array_equal(np.concatenate([p.x for p in out]), s.x)
  assert streams.cut_long([s], limit=50)[0] is s


def test_read_recording(tmp_path):
  p = tmp_path / 'r.csv'
  p.write_text('timestamp,a,b,is_anomaly\n0,1.5,2,0\n1,3,4,1\n')
  names, x = streams.read_recording(str(p))
  assert names == ['a', 'b']
  np.testing.assert_array_equal(x, [[1.5, 2], [3, 4]])
  p.write_text('timestamp,a,is_anomaly\n0,1,0\n1,zz,0\n')
  with pytest.raises(ucr.TsFormatError, match=r'r\.csv:3: not a number'):
    streams.read_recording(str(p))
  p.write_text('timestamp,a,is_anomaly\n0,1,0\n1,2\n')
  with pytest.raises(ucr.TsFormatError, match=r'r\.csv:3: 2 fields'):
    streams.read_recording(str(p))


def test_ar_recovers_an_ar2_process():
  rng = np.random.default_rng(0)
  n, a1, a2, c = 20000, 0.6, -0.3, 0.5
  x = np.zeros(n)
  for t in range(2, n):
    x[t] = c + a1 * x[t - 1] + a2 * x[t - 2] + 0.1 * rng.normal()
  # Rows as the benchmark holds them: features x0[t], label x0[t+1].
  seqs = [(x[i:i + 5000 - 1, None], x[i + 1:i + 5000])
          for i in range(0, n, 5000)]
  coef = real_data.ar_coefficients(seqs[:3], 16)
  np.testing.assert_allclose(coef[:2], [a1, a2], atol=0.03)
  np.testing.assert_allclose(coef[2:16], 0, atol=0.03)
  assert coef[16] == pytest.approx(c, abs=0.05)
  case = streams.StreamCase('AR2', kind=streams.FORECAST,
                            meta={'task': 'regression',
                                  'label_kind': 'per_step'})
  refs = streams.forecast_references(case, seqs[:3], seqs[3:])
  # AR(16) and AR(64) reach the noise (0.1^2); persistence does not.
  assert refs['ar16']['mse'] == pytest.approx(0.01, rel=0.1)
  assert refs['ar64']['mse'] == pytest.approx(0.01, rel=0.1)
  assert refs['persistence']['mse'] > 1.3 * refs['ar16']['mse']


def test_persistence_and_mean_by_hand():
  train = [(np.array([[1.0], [2.0]]), np.array([2.0, 4.0]))]
  evals = [(np.array([[1.0], [3.0], [0.0]]), np.array([3.0, 0.0, 2.0]))]
  case = streams.StreamCase('x', kind=streams.FORECAST,
                            meta={'task': 'regression',
                                  'label_kind': 'per_step'})
  refs = streams.forecast_references(case, train, evals)
  # Persistence errors 1-3, 3-0, 0-2 -> MSE (4 + 9 + 4) / 3, MAE 7 / 3.
  assert refs['persistence']['mse'] == pytest.approx(17 / 3)
  assert refs['persistence']['mae'] == pytest.approx(7 / 3)
  # Training mean 3: errors 0, 3, 1.
  assert refs['mean']['mse'] == pytest.approx(10 / 3)


def test_window_features_and_classifier():
  x = np.arange(10.0)[:, None]
  f = streams.window_features(x, np.array([0, 5, 9]), 4)
  # mean, std, min, max, last of x[max(0, t-3) : t+1]
  np.testing.assert_allclose(f[0], [0, 0, 0, 0, 0])
  np.testing.assert_allclose(f[1], [3.5, np.std([2, 3, 4, 5]), 2, 5, 5])
  np.testing.assert_allclose(f[2], [7.5, np.std([6, 7, 8, 9]), 6, 9, 9])
  # Classes told apart by the current level of their channels (the last
  # value is a feature): the window classifier finds them, the majority
  # class does not.
  rng = np.random.default_rng(1)
  levels = {0: (3.0, 0.0), 1: (0.0, 3.0), 2: (-3.0, -3.0)}
  series = [levels[k] + rng.normal(scale=0.3, size=(40, 2))
            for k in (0, 1, 2) * 8]
  classes = [0, 1, 2] * 8
  tr = streams.tagging_streams(series, classes, 'train', seed=0)
  ev = streams.tagging_streams(series[::-1], classes[::-1], 'eval', seed=1)
  case = streams.StreamCase('x', kind=streams.TAGGING,
                            meta={'num_classes': 3})
  refs = streams.tagging_references(case, [(s.x, s.y) for s in tr],
                                    [(s.x, s.y) for s in ev])
  assert refs['majority']['accuracy'] == pytest.approx(1 / 3)
  assert refs['window64']['accuracy'] > 0.9
  assert refs['window64']['train_steps'] == 24 * 40


def test_parse_cases():
  cases = streams.parse_cases('ACSF1:forecast, BasicMotions:tagging')
  assert [c.slug for c in cases] == ['ACSF1-forecast', 'BasicMotions-tagging']
  with pytest.raises(ValueError):
    streams.parse_cases('ACSF1')
