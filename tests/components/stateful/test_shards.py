"""Fit-time statistics across workers (``shards.py``): R workers, each
reading its own lanes, fit the weights one process fits on every lane.

The workers are threads here, exchanging through a barrier in place of the
collectives of ``MultiWorkerMirroredStrategy`` (which the 2-process tests
in ``tests/components/stateful_trainer/test_replicas.py`` run for real).
"""

import threading

import numpy as np
import pytest

from components.stateful.models import conv_adapt
from components.stateful.models import head_rows
from components.stateful.models import row_sampling
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful.distribution import shards

B, T = 4, 8


class _Exchange:
  """Every worker's value, to every worker (an all-gather)."""

  def __init__(self, n):
    self._slots = [None] * n
    self._barrier = threading.Barrier(n, timeout=120)

  def all(self, index, value):
    self._slots[index] = value
    self._barrier.wait()
    out = list(self._slots)
    self._barrier.wait()
    return out


class ThreadShard(shards.Shard):
  """A worker of ``count`` threads."""

  def __init__(self, index, count, batch_size, exchange):
    super().__init__(index, count, batch_size, strategy=object())
    self._exchange = exchange

  def sum(self, array):
    return np.sum(np.stack(self._exchange.all(self.index, np.asarray(array))),
                  axis=0)

  def concat(self, rows):
    return np.concatenate(self._exchange.all(self.index, np.asarray(rows)))


def _on_workers(count, fn):
  """``fn(shard)`` on ``count`` threaded workers; their results."""
  exchange = _Exchange(count)
  out, errors = [None] * count, []

  def work(i):
    try:
      out[i] = fn(ThreadShard(i, count, B, exchange))
    except BaseException as e:  # pylint: disable=broad-except
      errors.append(e)
      exchange._barrier.abort()  # pylint: disable=protected-access

  threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  if errors:
    raise errors[0]
  return out


@pytest.mark.parametrize('workers', [2, 4])
@pytest.mark.parametrize('max_rows', [None, 1000, 37])
def test_a_sample_over_workers_is_the_sample_of_one_process(workers,
                                                            max_rows):
  rng = np.random.default_rng(0)
  masks = [rng.random((B, T)) < 0.6 for _ in range(9)]
  values = [rng.normal(size=(B, T, 3)) for _ in range(9)]
  one = row_sampling.uniform(shards.Shard(), [v[m] for v, m in
                                              zip(values, masks)],
                             np.random.default_rng(1), max_rows)

  def sample(shard):
    local = [shard.local({'v': v, 'm': m}) for v, m in zip(values, masks)]
    return row_sampling.uniform(shard, [d['v'][d['m']] for d in local],
                                np.random.default_rng(1), max_rows)

  for got in _on_workers(workers, sample):
    np.testing.assert_array_equal(got, one)
  assert one.shape[0] == min(sum(int(m.sum()) for m in masks),
                             max_rows or 10**9)


def _spec(**changes):
  base = dict(batch_size=B, num_unroll=T, stateful=True,
              feature_names=('a', 'b'), task='classification', num_classes=3,
              hyperparameters={'kernels': 16, 'lags': 2}, seed=3,
              typical_length=3 * T)
  base.update(changes)
  return ms.ModelSpec(**base)


def _batches(spec, rng, n_batches=12):
  """Sequences of 3 segments per lane, ``dense`` resets in lanes 1 and 2
  mid-segment; per-step regression labels (the next value of feature 0)
  or a per-sequence class on the last step."""
  f = len(spec.feature_names)
  out = []
  for i in range(n_batches):
    x = rng.normal(size=(B, T, f)).astype(np.float32)
    reset = np.zeros((B, T), np.int64)
    if i % 3 == 0:
      reset[:, 0] = 1
    reset[1:3, 5] = 1
    if spec.task == 'regression':
      labels = np.roll(x[..., 0], -1, axis=1) + 0.1 * rng.normal(size=(B, T))
      weight = np.ones((B, T), np.float32)
    else:
      labels = np.repeat(rng.integers(0, 3, size=(B, 1)), T, axis=1)
      weight = np.zeros((B, T), np.float32)
      weight[:, -1] = float(i % 3 == 2)
      weight[1:3, 4] = 1.0  # Before the mid-segment resets.
    mask = np.ones((B, T), np.float32)
    mask[3, 6:] = 0.0  # A short lane.
    weight = weight * mask
    out.append({'features': x * mask[..., None], 'reset': reset,
                'mask': mask, 'label_weight': weight,
                'labels': labels.astype(np.float32 if spec.task ==
                                        'regression' else np.int64)})
  return out


@pytest.mark.parametrize('task', ['classification', 'regression'])
def test_adapt_on_two_workers_fits_the_model_of_one_process(task,
                                                            monkeypatch):
  # Small caps: every statistic is a sample, the head's rows too.
  monkeypatch.setattr(conv_adapt, 'ADAPT_MAX_ROWS', 50)
  monkeypatch.setattr(head_rows, 'HEAD_MAX_ROWS', 20)
  spec = _spec() if task == 'classification' else _spec(
      task='regression', num_classes=None, output_size=1,
      label_kind='per_step')
  batches = _batches(spec, np.random.default_rng(5))
  module = model_io.resolve_module()
  one = model_io.build_stateful(module, spec)
  initial = one.get_weights()
  summary = module.adapt(one, spec, batches, shard=shards.Shard())
  assert summary['labelled_steps'] > head_rows.HEAD_MAX_ROWS
  assert summary['head_rows'] == head_rows.HEAD_MAX_ROWS
  local_spec = spec.replace(batch_size=B // 2)
  models = [model_io.build_stateful(module, local_spec) for _ in range(2)]
  for m in models:
    m.set_weights(initial)

  def adapt(shard):
    return module.adapt(models[shard.index], local_spec,
                        [shard.local(b) for b in batches], shard=shard)

  summaries = _on_workers(2, adapt)
  assert summaries[0] == summaries[1] == summary
  for m in models:  # Bit for bit (steps.exact_arithmetic).
    for got, want in zip(m.get_weights(), one.get_weights()):
      np.testing.assert_array_equal(got, want)
  assert any(not np.array_equal(a, b)
             for a, b in zip(initial, one.get_weights())), 'nothing fitted'


def test_agree_hands_out_the_chiefs_weights_and_fails_when_they_differ():
  weights = [np.arange(6.0).reshape(2, 3), np.ones(2, np.float32)]
  got = _on_workers(2, lambda shard: shard.agree(
      [w + 1e-9 * shard.index for w in weights]))
  for out in got:
    for a, b in zip(out, weights):
      np.testing.assert_array_equal(a, b)
      assert a.dtype == b.dtype
  with pytest.raises(shards.ShardError, match='combine'):
    _on_workers(2, lambda shard: shard.agree(
        [w + 0.1 * shard.index for w in weights]))


def test_one_process_is_a_shard_of_every_lane():
  shard = shards.Shard()
  batch = {'features': np.zeros((B, T, 2))}
  assert shard.local(batch) is batch and shard.lane_offset == 0
  ids, total = shard.global_ids([3, 0, 2])
  np.testing.assert_array_equal(ids, np.arange(5))
  assert total == 5
  with pytest.raises(ValueError, match='cannot be shared'):
    shards.Shard(0, 3, B, strategy=object())


def test_one_process_puts_rows_in_lane_order():
  shard = shards.Shard()
  rows = np.arange(8.0).reshape(4, 2)
  assert shard.in_lane_order(rows, np.arange(4), 4) is rows  # No copy.
  np.testing.assert_array_equal(
      shard.in_lane_order(rows, np.array([2, 0, 3, 1]), 4),
      rows[[1, 3, 0, 2]])
  with pytest.raises(ValueError, match='3 rows for 4'):
    shard.in_lane_order(rows[:3], np.arange(3), 4)
