"""Samples of rows that do not depend on how the lanes are spread over
workers (the default conv model's ``adapt``, ``conv_adapt.py``).

* ``Uniform`` (and ``uniform``, on rows already held): rows of several
  batches in lane order, thinned to a uniform sample of at most
  ``max_rows`` drawn on the rows' global positions, so R workers keep what
  one process reading every lane keeps; drawn from the row counts before
  a pass, which then copies only the sampled rows;
* ``row_keys`` / ``row_priorities`` / ``BottomK`` / ``union_sample``: a
  bottom-k sample. Each row gets a pseudo-random priority fixed by the seed
  and its (batch, lane, step) key; each worker keeps its rows of smallest
  priority, and the union keeps the smallest over every worker.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from components.stateful.distribution import shards


class Uniform:
  """A uniform sample of at most ``max_rows`` rows of several batches, in
  lane order over every worker, drawn before the rows exist: from this
  worker's row count per batch (``[n_i]``), on the rows' global positions,
  so R workers keep what one process reading every lane keeps. A pass then
  hands each batch's rows to ``add``, which copies only the chosen ones,
  and ``gather`` returns them (the unsampled rows are never held).
  """

  def __init__(self, shard: shards.Shard, counts: Sequence[int],
               rng: Optional[np.random.Generator], max_rows: Optional[int]):
    self._shard = shard
    self._counts = np.asarray(counts, np.int64)
    ids, self.total = shard.global_ids(self._counts)
    self._starts = np.cumsum(self._counts) - self._counts
    if max_rows is None or self.total <= max_rows:  # Every row.
      self._kept, self._positions, self._size = None, ids, None
    else:
      pick = np.sort(rng.choice(self.total, max_rows, replace=False))
      self._kept = np.isin(ids, pick, assume_unique=True)
      self._positions = np.searchsorted(pick, ids[self._kept])
      self._size = max_rows
    self._rows: Optional[np.ndarray] = None  # This worker's, [kept, ...].
    self._added = 0

  @property
  def size(self) -> int:
    """The rows in the sample (every worker's)."""
    return self.total if self._size is None else self._size

  def add(self, index: int, rows: np.ndarray,
          at: Optional[np.ndarray] = None) -> None:
    """Batch ``index``'s rows: ``rows[at]`` (``at``: the positions of its
    ``n_index`` rows in ``rows``; default: every row of ``rows``). Batches
    are added in order."""
    count = self._counts[index]
    if (rows.shape[0] if at is None else at.size) != count:
      raise ValueError(f'batch {index}: {count} rows planned, got '
                       f'{rows.shape[0] if at is None else at.size}')
    if self._kept is not None:
      kept = self._kept[self._starts[index]:self._starts[index] + count]
      at = np.flatnonzero(kept) if at is None else at[kept]
    if self._rows is None:
      size = self._positions.size
      self._rows = np.empty((size,) + rows.shape[1:], rows.dtype)
    n = count if at is None else at.size
    self._rows[self._added:self._added + n] = rows if at is None else rows[at]
    self._added += n

  def gather(self) -> np.ndarray:
    """The sample, in lane order over every worker (after every batch's
    ``add``)."""
    if self._rows is None or self._added != self._positions.size:
      raise ValueError(f'{self._added if self._rows is not None else 0} of '
                       f'{self._positions.size} sampled rows added')
    return self._shard.in_lane_order(self._rows, self._positions,
                                     self._size)


def uniform(shard: shards.Shard, per_batch: Sequence[np.ndarray],
            rng: Optional[np.random.Generator],
            max_rows: Optional[int]) -> np.ndarray:
  """Rows of several batches (this worker's, ``[n_i, ...]`` per batch) in
  lane order over every worker, thinned to a uniform sample of at most
  ``max_rows`` (``Uniform``, on rows already held)."""
  sample = Uniform(shard, [len(r) for r in per_batch], rng, max_rows)
  for i, rows in enumerate(per_batch):
    sample.add(i, rows)
  return sample.gather()


_MIX = (np.uint64(0xbf58476d1ce4e5b9), np.uint64(0x94d049bb133111eb))


def _mix(z: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser (a bijection of uint64 that scatters bits)."""
  z = (z ^ (z >> np.uint64(30))) * _MIX[0]
  z = (z ^ (z >> np.uint64(27))) * _MIX[1]
  return z ^ (z >> np.uint64(31))


def row_keys(batch_index: int, lanes: np.ndarray,
             steps: np.ndarray) -> np.ndarray:
  """int64 keys of rows (batch, global lane, step) that sort in lane
  order."""
  return ((np.int64(batch_index) << np.int64(40)) +
          (lanes.astype(np.int64) << np.int64(20)) + steps.astype(np.int64))


def row_priorities(seed: int, keys: np.ndarray) -> np.ndarray:
  """A pseudo-random float64 in [0, 1) per row key, fixed by the seed: a
  row's chance to be sampled does not depend on the worker that reads it
  or on the rows before it."""
  with np.errstate(over='ignore'):
    z = _mix(keys.astype(np.uint64) ^ _mix(np.array(seed, np.uint64)))
  return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _smallest(priority: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
  """Indices of the ``n`` rows of smallest (priority, key)."""
  if priority.size <= n:
    return np.arange(priority.size)
  return np.lexsort((keys, priority))[:n]


class BottomK:
  """The rows of smallest ``row_priorities`` among those added: the ``cap``
  smallest are always among those kept (later rows must beat the cut)."""

  def __init__(self, cap: int):
    self.cap = cap
    self.parts: List[Tuple[np.ndarray, ...]] = []
    self.kept, self.seen, self.cut = 0, 0, np.inf

  def add(self, x, y, g, keys, priority) -> None:
    self.seen += x.shape[0]
    pick = priority < self.cut
    self.parts.append((x[pick], y[pick], g[pick], keys[pick], priority[pick]))
    self.kept += int(pick.sum())
    cap = self.cap
    if self.kept > cap + cap // 2:  # The cap smallest; later must beat them.
      joined = [np.concatenate(p) for p in zip(*self.parts)]
      pick = _smallest(joined[4], joined[3], cap)
      self.parts, self.kept = [tuple(a[pick] for a in joined)], cap
      self.cut = float(joined[4][pick].max())


def union_sample(pools: Sequence[BottomK], shard: shards.Shard, dim: int,
             labels: np.ndarray):
  """(x, y, groups, seen): the ``cap`` rows of smallest priority of the
  union of ``pools`` (this worker's) over every worker, in lane order."""
  cap = pools[0].cap
  parts = [p for pool in pools for p in pool.parts]
  seen = sum(pool.seen for pool in pools)
  if parts:
    x, y, g, keys, priority = [np.concatenate(p) for p in zip(*parts)]
  else:  # Every worker takes part in the collectives below.
    x, g = np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
    y = np.zeros((0,) + labels.shape[2:], labels.dtype)
    keys, priority = np.zeros(0, np.int64), np.zeros(0)
  pick = _smallest(priority, keys, cap)
  x, y, g, keys, priority = x[pick], y[pick], g[pick], keys[pick], priority[
      pick]
  # Over every worker: the cap smallest, in lane order.
  all_keys = shard.concat(keys)
  chosen = np.sort(all_keys[_smallest(shard.concat(priority), all_keys,
                                      cap)])
  mine = np.isin(keys, chosen, assume_unique=True)
  order = np.searchsorted(chosen, keys[mine])
  seen = int(shard.sum(np.array([seen], np.int64))[0])
  if not chosen.size:
    raise ValueError('adapt: no labelled step in the train split')
  return (shard.in_lane_order(x[mine], order, chosen.size),
          shard.in_lane_order(y[mine], order, chosen.size),
          shard.in_lane_order(g[mine], order, chosen.size), seen)
