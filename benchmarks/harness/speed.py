"""Shared by the speed benchmarks: generated CSV of a given size, the
forecast data's settings, this process's peak RSS, and one epoch of a
compiled step over batches held in memory."""

from __future__ import annotations

import resource
import time
from typing import Callable

from benchmarks.harness import data

# data/generate.py's defaults (median 200, 30% short) give a mean length of
# about 230, so 4,400 sequences ~ 1M time steps (CSV rows).
SEQUENCES_PER_MILLION = 4400
NUM_SHARDS = 8
NUM_FEATURES = 5
# The generated per-step forecasting data of training_speed and evaluation.
FORECAST = dict(target='forecast', median_length=300, max_length=3000,
                short_fraction=0.3, min_length=2)


def csv_of(directory: str, steps: int, minimum: int = 0, log=None) -> str:
  """``data.generated_csv`` of about ``steps`` time steps (at least
  ``minimum`` sequences), generated once under ``directory``."""
  return data.generated_csv(
      directory, max(minimum, int(round(steps * SEQUENCES_PER_MILLION / 1e6))),
      num_shards=NUM_SHARDS, num_features=NUM_FEATURES, log=log)


def maxrss() -> int:
  """This process's peak RSS (``ru_maxrss``) in bytes."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def held_epoch(model, step: Callable, batches) -> float:
  """Seconds of ``step(batch)`` over ``batches`` from zero state, the last
  output waited for (a dict's first value)."""
  from components.stateful.state import protocol as state  # pylint: disable=g-import-not-at-top
  state.zero_all(model)
  t0 = time.perf_counter()
  out = None
  for batch in batches:
    out = step(batch)
  (next(iter(out.values())) if isinstance(out, dict) else out).numpy()
  return time.perf_counter() - t0

