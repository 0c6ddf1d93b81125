"""Order values keep their exact order and distinctness (no float on the
way): integers of any size, decimal seconds, ISO-8601 date-times."""

from __future__ import annotations

import numpy as np
import pytest

from components.sequence_batcher import layout
from components.sequence_batcher import order_values
from components.sequence_batcher import sequences as seqlib


def _keys(texts):
  keys, kind = order_values.sort_keys(np.array(texts, dtype=object))
  return keys, kind


def test_float_seconds_a_minute_apart_stay_distinct_and_ordered():
  # float32's spacing near 1.7e9 is 128 s: these would collide there.
  texts = [f'{1700000000 + 60 * i}.0' for i in range(20)][::-1]
  keys, kind = _keys(texts)
  assert kind == 'number'
  assert len(set(keys.tolist())) == 20
  assert [texts[i] for i in np.argsort(keys, kind='stable')] == texts[::-1]


def test_decimals_compare_exactly():
  keys, _ = _keys(['1700000000.000000001', '1700000000.000000002', '1.5'])
  assert list(np.argsort(keys)) == [2, 0, 1]
  keys, _ = _keys(['1.50', '1.5'])
  assert keys[0] == keys[1]  # The same number, written twice.


def test_integers_of_any_size():
  ns = [1733548720123456789, 1733548720123456788]  # Nanoseconds: > 2**53.
  keys, _ = _keys([str(v) for v in ns])
  assert keys.dtype == np.int64 and keys[1] < keys[0]
  huge = ['123456789012345678901234567890', '123456789012345678901234567891']
  keys, _ = _keys(huge)
  assert keys[0] < keys[1]


@pytest.mark.parametrize('text, expected', [
    ('1970-01-01T00:00:00Z', 0),
    ('1970-01-01', 0),
    ('1970-01-01 00:00:01', 10**9),  # No zone: UTC.
    ('1970-01-01T01:00:00+01:00', 0),
    ('1970-01-01T00:00:00-0130', 5400 * 10**9),
    ('1970-01-01T00:00:00.000000001Z', 1),
    ('2026-12-07T05:18:40Z', 1796620720 * 10**9),
])
def test_iso_date_times(text, expected):
  assert order_values.iso_nanoseconds(text) == expected


@pytest.mark.parametrize('text', ['2026-13-01', '2026-02-30T00:00:00',
                                  '2026-12-07T25:00:00', 'yesterday',
                                  '2026-12-07T05:18:40 UTC'])
def test_not_a_date_time(text):
  assert order_values.iso_nanoseconds(text) is None


def test_mixed_kinds_and_words_are_refused():
  with pytest.raises(order_values.OrderValueError, match='one kind') as e:
    _keys(['1', '2026-12-07T05:18:40Z'])
  assert e.value.index == 1
  for word in ('nan', 'inf', 'later'):
    with pytest.raises(order_values.OrderValueError, match='neither'):
      _keys(['1', word])


def test_build_sequence_orders_iso_rows_across_zones():
  chunk = seqlib.RowChunk(key='k', source='f.csv', columns={
      't': np.array(['2026-12-07T06:00:30+01:00', '2026-12-07T05:00:00Z',
                     '2026-12-07T05:00:10'], dtype=object),
      'x': np.array([3.0, 1.0, 2.0]),
      'label': np.array([1, 1, 1])})
  seq = seqlib.build_sequence('k', [chunk], ['x'], seqlib.ColumnConfig(),
                              layout.LayoutConfig(batch_size=1, num_unroll=1))
  assert seq.features[:, 0].tolist() == [1.0, 2.0, 3.0]
