"""``frozen_heap``: the objects alive on entry stay out of Python's cyclic
garbage collection until exit (``gc.freeze``).

Under the LocalDagRunner every component runs in one process: by the
trainer's or the evaluator's turn the heap holds over a million objects from
the earlier components (TFX, Beam, the Transform graph). Building and tracing
a model makes enough garbage to start full collections, and each full
collection walks all of them. Objects made inside are collected as usual; on exit the frozen ones are
collectable again.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
  gc.collect()
  gc.freeze()
  try:
    yield
  finally:
    gc.unfreeze()
