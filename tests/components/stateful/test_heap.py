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


def test_nested_unfreezes_at_the_outermost_exit():
  with heap.frozen_heap():
    outer = gc.get_freeze_count()
    with heap.frozen_heap():
      inside = _cycle()  # Made inside the inner block: still collected.
      gc.collect()
      assert inside() is None
    assert gc.get_freeze_count() >= outer > 0  # The outer block holds.
    after_inner = _cycle()
    gc.collect()
    assert after_inner() is None
  assert gc.get_freeze_count() == 0


def test_collection_paused_restores_the_state():
  assert gc.isenabled()
  with heap.collection_paused():
    assert not gc.isenabled()
    with heap.collection_paused():
      assert not gc.isenabled()
    assert not gc.isenabled()
  assert gc.isenabled()
  try:
    with heap.collection_paused():
      raise RuntimeError('boom')
  except RuntimeError:
    pass
  assert gc.isenabled()
