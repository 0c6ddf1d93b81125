"""The lane rule, for every replica and every worker (plain Python).

With R parts (the replicas of a strategy in training, the workers of a
multi-worker run in ``adapt``) and B lanes, ``b = B / R``: part r owns lanes
``[r * b, (r + 1) * b)`` of every batch for the whole run, so a lane's state
never crosses a part. ``lanes_of`` is that rule, and ``LaneLayoutError`` its
one error (B not a multiple of R). ``lane_multiple`` is what the
SequenceBatcher must make B a multiple of for a run of ``replicas`` replicas
on each of ``workers`` workers.
"""

from __future__ import annotations

from typing import Tuple


class LaneLayoutError(ValueError):
  """The lanes cannot be shared out among the replicas (or workers)."""


def lanes_of(index, count: int, batch_size: int) -> Tuple:
  """``[start, stop)``: the lanes part ``index`` of ``count`` owns of a
  batch of ``batch_size`` lanes (``index`` may be a tensor: a replica id
  inside a replicated step).

  Raises:
    LaneLayoutError: ``batch_size`` is not a multiple of ``count``.
  """
  count, batch_size = int(count), int(batch_size)
  if count < 1 or batch_size % count:
    raise LaneLayoutError(
        f'{batch_size} lanes cannot be shared by {count} replicas or '
        'workers: batch_size must be a multiple of their count (the '
        'SequenceBatcher rounds it up when given the replica and worker '
        'counts)')
  b = batch_size // count
  return index * b, (index + 1) * b


def lane_multiple(replicas: int, workers: int = 1) -> int:
  """What B must be a multiple of: every replica of every worker owns the
  same number of lanes."""
  return int(replicas) * int(workers)
