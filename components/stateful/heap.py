"""``frozen_heap``: the objects alive on entry stay out of Python's cyclic
garbage collection until exit (``gc.freeze``).

Under the LocalDagRunner every component runs in one process: by the
trainer's or the evaluator's turn the heap holds over a million objects from
the earlier components (TFX, Beam, the Transform graph). Building and tracing
a model makes enough garbage to start full collections, and each full
collection walks all of them. Objects made inside are collected as usual; on exit the frozen ones are
collectable again.

Nested, an inner ``frozen_heap`` freezes what is alive on its entry too, and
only the outermost exit unfreezes (``gc.unfreeze`` unfreezes every object):
the local runner holds one around the whole pipeline run (the imported
TensorFlow, Beam and TFX), and the trainer's and the evaluator's own stay
cheap inside it.

``collection_paused``: no automatic collection inside (``gc.disable``), for
a start-up that imports TensorFlow, Beam and TFX: each import grows the
heap, which starts full collections that walk all of it and find next to
no garbage; the ``frozen_heap`` that follows collects once.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

_depth = 0  # How many frozen_heap blocks are open (one thread runs them).


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
  global _depth
  gc.collect()
  gc.freeze()
  _depth += 1
  try:
    yield
  finally:
    _depth -= 1
    if not _depth:
      gc.unfreeze()


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()
