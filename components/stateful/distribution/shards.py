"""Fit-time statistics across workers: the lanes a worker's ``adapt`` reads,
and the collectives that combine what the workers found, so R workers fit
the model one process fits.

With R workers and B lanes, worker r owns lanes ``[r * b, (r + 1) * b)`` of
every batch (``b = B / R``), as its replica does in training
(the lane rule, ``lanes.lanes_of``). A model module's ``adapt`` hook that
takes a ``shard`` keyword is given this worker's lanes of every train batch
(``Shard.local``) and a ``Shard``; what it fits from them is combined with

* ``sum(array)``: the element-wise sum over the workers (counts, sums,
  Gram matrices);
* ``concat(rows)``: every worker's rows, worker by worker;
* ``global_ids(counts)`` and ``in_lane_order(rows, ids, total)``: rows of
  several batches put back in the order one process reads them (``lane
  order``: batch by batch, lane by lane, step by step, the order of
  ``array[mask > 0]`` over ``[B, T]`` batches), from each worker's rows,
  its per-batch row counts and the positions they give.

In one process ``Shard()`` (one worker, every lane) makes each of these the
identity, so a hook has one code path. Every worker must make the same
calls in the same order (they are collectives).

``agree(weights)`` (the trainer calls it after ``adapt`` on several workers)
gives every worker the chief's weights and fails when a worker's differ by
more than rounding: a hook that fits from its own lanes without combining
would otherwise start each worker from a different model.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from components.stateful.distribution import lanes as lanes_lib

# A worker's adapted weights may differ from the chief's by this much
# (relative to the largest weight) before ``agree`` fails: rounding of sums
# taken in another order.
AGREE_RTOL = 1e-4


class ShardError(RuntimeError):
  """The workers did not fit the same model."""


class Shard:
  """This process's part of the fit-time statistics.

  Args:
    index: this worker's replica id (its lanes).
    count: the workers, R.
    batch_size: B (needed when ``count`` > 1).
    strategy: the ``MultiWorkerMirroredStrategy`` (when ``count`` > 1).
  """

  def __init__(self, index: int = 0, count: int = 1,
               batch_size: Optional[int] = None,
               strategy: Optional[tf.distribute.Strategy] = None):
    self.index, self.count = int(index), int(count)
    self.lanes: Optional[Tuple[int, int]] = None
    if self.count > 1:
      if strategy is None or batch_size is None:
        raise ValueError('a Shard of several workers needs the strategy and '
                         'the batch size')
      self.lanes = lanes_lib.lanes_of(self.index, self.count, batch_size)
      # In functions: eager collectives warn at every call.
      self._sum = tf.function(
          lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(
              tf.identity, args=(t,)), axis=None),
          autograph=False, reduce_retracing=True)
      self._gather = tf.function(
          lambda t: strategy.gather(strategy.run(tf.identity, args=(t,)),
                                    axis=0),
          autograph=False, reduce_retracing=True)

  @property
  def lane_offset(self) -> int:
    """The global lane of this worker's first lane."""
    return self.lanes[0] if self.lanes else 0

  def __repr__(self) -> str:
    return (f'Shard(worker {self.index} of {self.count}, lanes '
            f'{self.lanes or "all"})')

  def local(self, batch: Mapping[str, Any]) -> Mapping[str, Any]:
    """``batch`` (numpy: per-lane arrays ``[B, ...]``, and scalars such as
    ``batch_index``) with the per-lane arrays cut to this worker's lanes."""
    if self.lanes is None:
      return batch
    start, stop = self.lanes
    return {k: v[start:stop] if np.ndim(v) else v for k, v in batch.items()}

  def sum(self, array) -> np.ndarray:
    """The element-wise sum of ``array`` over the workers."""
    array = np.asarray(array)
    if self.count == 1:
      return array
    return self._sum(tf.constant(array)).numpy()

  def concat(self, rows) -> np.ndarray:
    """Every worker's ``rows`` (``[n_r, ...]``, the same trailing shape and
    dtype on every worker), concatenated in worker order."""
    rows = np.asarray(rows)
    if self.count == 1:
      return rows
    return self._gather(tf.constant(rows)).numpy()

  def global_ids(self, counts: Sequence[int]) -> Tuple[np.ndarray, int]:
    """(the lane-order position of each of this worker's rows, the rows of
    every worker), given this worker's row count per batch."""
    counts = np.asarray(counts, np.int64)
    every = self.concat(counts[None, :])  # [R, batches]
    flat = every.T.reshape(-1)  # (batch, worker), in lane order.
    starts = (np.cumsum(flat) - flat).reshape(-1, self.count)[:, self.index]
    ids = [s + np.arange(c) for s, c in zip(starts, counts)]
    return (np.concatenate(ids) if ids else np.zeros(0, np.int64),
            int(every.sum()))

  def in_lane_order(self, rows: np.ndarray, ids: np.ndarray,
                    total: Optional[int] = None) -> np.ndarray:
    """Every worker's ``rows`` placed at their lane-order positions ``ids``
    (each worker's rows, with their positions among the ``total`` rows
    kept; default: every row)."""
    ids = np.asarray(ids, np.int64)
    if self.count == 1 and (total is None or _every_position(ids, total)):
      return rows  # Already in lane order.
    all_rows = self.concat(rows)
    all_ids = self.concat(ids)
    total = all_ids.size if total is None else int(total)
    if all_ids.size != total:
      raise ValueError(f'in_lane_order: {all_ids.size} rows for {total} '
                       'positions')
    out = np.empty((total,) + all_rows.shape[1:], all_rows.dtype)
    out[all_ids] = all_rows
    return out

  def agree(self, weights: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
    """The chief's (worker 0's) ``weights``, on every worker.

    Raises:
      ShardError: the workers' largest differences from the chief's
        weights sum to more than ``AGREE_RTOL`` of the largest weight.
    """
    if self.count == 1:
      return weights
    flat = np.concatenate([np.asarray(w, np.float64).ravel()
                           for w in weights] or [np.zeros(0)])
    chief = self.sum(flat if self.index == 0 else np.zeros_like(flat))
    scale = max(float(np.max(np.abs(chief))) if chief.size else 0.0, 1e-12)
    diff = float(np.max(np.abs(chief - flat))) if flat.size else 0.0
    # Summed over the workers, so that every worker raises or none does.
    worst = float(self.sum(np.array([diff / scale]))[0])
    if worst > AGREE_RTOL:
      raise ShardError(
          f'the workers fitted different weights before training (their '
          f'largest differences from the chief\'s sum to {worst:.3g} of the '
          'largest weight): an adapt hook that takes `shard` must '
          'combine what it fits from its lanes across the workers '
          '(components.stateful.distribution.shards.Shard)')
    out, at = [], 0
    for w in weights:
      w = np.asarray(w)
      out.append(chief[at:at + w.size].reshape(w.shape).astype(w.dtype))
      at += w.size
    return out


def _every_position(ids: np.ndarray, total: int) -> bool:
  """Whether ``ids`` are ``0, 1, ..., total - 1``, in that order."""
  if ids.size != total:
    return False
  return not total or (ids[0] == 0 and ids[-1] == total - 1 and
                       bool(np.all(ids[1:] > ids[:-1])))


def of(strategy: Optional[tf.distribute.Strategy], num_workers: int,
       batch_size: int) -> Shard:
  """The ``Shard`` of this process: one worker of ``num_workers`` (its
  index is its replica id in ``strategy``), or ``Shard()`` for one
  process (local replicas included: one process fits on every lane)."""
  if num_workers <= 1 or strategy is None:
    return Shard()
  replica = strategy.run(
      lambda: tf.distribute.get_replica_context().replica_id_in_sync_group)
  index = int(strategy.experimental_local_results(replica)[0])
  return Shard(index, num_workers, batch_size, strategy)
