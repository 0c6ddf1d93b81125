"""frozen_heap: what is alive on entry is frozen out of the cyclic garbage
collector until exit; cycles made inside are still collected."""

import gc
import weakref

from components.stateful import heap


class _Node:
  pass


def _cycle():
  a, b = _Node(), _Node()
  a.other, b.other = b, a
  return weakref.ref(a)


def test_frozen_inside_unfrozen_after():
  before = _cycle()  # Garbage already on entry: collected on entry.
  with heap.frozen_heap():
    assert before() is None
    assert gc.get_freeze_count() > 0
    inside = _cycle()
    gc.collect()
    assert inside() is None
  assert gc.get_freeze_count() == 0


def test_unfreezes_on_error():
  try:
    with heap.frozen_heap():
      raise RuntimeError('boom')
  except RuntimeError:
    pass
  assert gc.get_freeze_count() == 0
