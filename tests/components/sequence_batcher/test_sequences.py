"""Decoding (``decode.py``), rows -> sequences (``sequences.py``); no Beam."""

import numpy as np
import pytest

from components.sequence_batcher import decode
from components.sequence_batcher import layout
from components.sequence_batcher import segments as segments_lib
from components.sequence_batcher import sequences
from tests.components.sequence_batcher import helpers

LABEL_KINDS = (layout.PER_SEQUENCE, layout.PER_STEP)
SRC = "split 'train'"


def _assert_sequences_equal(built, data):
  assert [s.key for s in built] == sorted(s.key for s in data)
  by_key = {s.key: s for s in data}
  for s in built:
    want = by_key[s.key]
    np.testing.assert_array_equal(s.features, want.features)
    np.testing.assert_array_equal(s.labels, want.labels)
    assert s.features.dtype == np.float32
    assert s.labels.dtype == want.labels.dtype
    assert s.truncated == 0


@pytest.mark.parametrize('label_kind', LABEL_KINDS)
def test_examples_to_sequences(label_kind):
  data = helpers.make_data([6, 1, 9, 3], label_kind)
  records = helpers.examples(helpers.rows_of(data))
  config = layout.LayoutConfig(label_kind=label_kind)
  # Several bundles: a sequence's rows arrive in several chunks.
  chunks = []
  for i in range(0, len(records), 5):
    chunks += decode.decode_examples(records[i:i + 5],
                                     sequences.ColumnConfig(), SRC)
  assert len(chunks) > len(data)
  built = helpers.build_in_process(chunks, config=config)
  _assert_sequences_equal(built, data)


@pytest.mark.parametrize('label_kind', LABEL_KINDS)
def test_csv_lines_to_sequences(label_kind):
  data = helpers.make_data([6, 1, 9, 3], label_kind, seed=2)
  header = ['label', 'x1', 't', 'seq_id', 'x0']
  lines = helpers.csv_lines(helpers.rows_of(data), header)
  chunks = decode.decode_csv_lines(lines, header, sequences.ColumnConfig(),
                                   'a.csv')
  assert {c.source for c in chunks} == {'a.csv'}
  built = helpers.build_in_process(
      chunks, config=layout.LayoutConfig(label_kind=label_kind))
  _assert_sequences_equal(built, data)


@pytest.mark.parametrize('label_kind', LABEL_KINDS)
def test_sequence_examples_to_sequences(label_kind):
  data = helpers.make_data([6, 1, 9, 3], label_kind, seed=4)
  chunks = [decode.decode_sequence_example(
      helpers.sequence_example(s, label_kind, reverse_steps=True),
      sequences.ColumnConfig(), SRC) for s in data]
  built = helpers.build_in_process(
      chunks, config=layout.LayoutConfig(label_kind=label_kind))
  _assert_sequences_equal(built, data)


def test_sequence_example_without_order_column_keeps_list_order():
  data = helpers.make_data([5, 2], layout.PER_STEP, seed=6)
  columns = sequences.ColumnConfig(order_column=None, exclude_columns=('t',))
  chunks = [decode.decode_sequence_example(
      helpers.sequence_example(s, layout.PER_STEP), columns, SRC)
            for s in data]
  built = helpers.build_in_process(
      chunks, columns, layout.LayoutConfig(label_kind=layout.PER_STEP))
  _assert_sequences_equal(built, data)
  # Stored backwards, they stay backwards.
  chunks = [decode.decode_sequence_example(
      helpers.sequence_example(s, layout.PER_STEP, reverse_steps=True),
      columns, SRC) for s in data]
  built = helpers.build_in_process(
      chunks, columns, layout.LayoutConfig(label_kind=layout.PER_STEP))
  np.testing.assert_array_equal(built[0].features, data[0].features[::-1])


def test_float_timestamps_order_the_rows():
  rows = [{'seq_id': 'a', 't': t, 'x0': x, 'x1': 0.0, 'label': 1}
          for t, x in [(2.5, 3.0), (0.25, 1.0), (1.0, 2.0), (10.0, 4.0)]]
  built, = helpers.build_in_process(
      decode.decode_examples(helpers.examples(rows), sequences.ColumnConfig(),
                             SRC))
  np.testing.assert_array_equal(built.features[:, 0], [1, 2, 3, 4])


def test_unlabeled_input_gets_zero_labels():
  columns = sequences.ColumnConfig(label_column=None)
  rows = [{'seq_id': 'a', 't': t, 'x0': float(t)} for t in (3, 1, 2)]
  built, = helpers.build_in_process(
      decode.decode_examples(helpers.examples(rows), columns, SRC), columns)
  np.testing.assert_array_equal(built.labels, [0, 0, 0])
  assert built.labels.dtype == np.int64
  np.testing.assert_array_equal(built.features[:, 0], [1, 2, 3])
  assert not built.labeled
  # Nothing to weigh: label_weight is zero everywhere, whatever the kind.
  for kind in LABEL_KINDS:
    config = layout.LayoutConfig(num_unroll=2, label_kind=kind,
                                 max_sequence_length=2, truncate=True)
    cut, = helpers.build_in_process(
        decode.decode_examples(helpers.examples(rows), columns, SRC), columns,
        config)
    assert not cut.labeled and cut.truncated == 1
    seg, = segments_lib.cut_segments(cut, 0, 0, config)
    assert seg.mask.sum() == 2 and not seg.label_weight.any()
  labeled, = helpers.build_in_process(decode.decode_examples(
      helpers.examples([dict(r, label=1) for r in rows]),
      sequences.ColumnConfig(), SRC))
  assert labeled.labeled


def test_keys_compare_as_text():
  assert sequences.key_to_str(b'abc') == sequences.key_to_str('abc') == 'abc'
  assert sequences.key_to_str(7) == sequences.key_to_str(7.0) == '7'
  assert sequences.key_to_str(np.int64(7)) == '7'
  assert sequences.key_to_str(2.5) == '2.5'


def test_per_step_labels_may_change():
  data = helpers.make_data([5], layout.PER_STEP)
  built, = helpers.build_in_process(
      decode.decode_examples(helpers.examples(helpers.rows_of(data)),
                             sequences.ColumnConfig(), SRC),
      config=layout.LayoutConfig(label_kind=layout.PER_STEP))
  assert len(set(built.labels.tolist())) == 5


def test_truncation_keeps_the_first_steps():
  data = helpers.make_data([7, 3], layout.PER_STEP)
  config = layout.LayoutConfig(label_kind=layout.PER_STEP,
                               max_sequence_length=4, truncate=True)
  long_seq, short_seq = helpers.build_in_process(
      decode.decode_examples(helpers.examples(helpers.rows_of(data)),
                             sequences.ColumnConfig(), SRC), config=config)
  assert long_seq.length == 4 and long_seq.truncated == 3
  np.testing.assert_array_equal(long_seq.features, data[0].features[:4])
  np.testing.assert_array_equal(long_seq.labels, data[0].labels[:4])
  assert short_seq.length == 3 and short_seq.truncated == 0


@pytest.mark.parametrize('kwargs, pattern', [
    ({'key_column': ''}, 'key_column must be set'),
    ({'feature_columns': ()}, 'must not be empty'),
    ({'feature_columns': ('x0', 't')}, r"\['t'\] cannot be both a feature"),
    ({'feature_columns': ('label',)}, r"\['label'\] cannot be both"),
])
def test_column_config_validation(kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    sequences.ColumnConfig(**kwargs)


def test_candidate_features_skip_reserved_columns():
  columns = sequences.ColumnConfig(exclude_columns=['note'])
  assert columns.exclude_columns == ('note',)
  assert columns.candidate_features(['x1', 'label', 't', 'note', 'x0']) == [
      'x0', 'x1']


def test_named_feature_columns_in_their_order_and_integer_keys():
  data = helpers.make_data([4, 2], layout.PER_SEQUENCE)
  rows = [dict(r, seq_id=int(r['seq_id'][1:]) + 10, extra=1.0)
          for r in helpers.rows_of(data)]
  columns = sequences.ColumnConfig(feature_columns=('x1', 'x0'))
  built = helpers.build_in_process(
      decode.decode_examples(helpers.examples(rows), columns, SRC), columns)
  assert [s.key for s in built] == ['10', '11']
  for s, want in zip(built, data):
    np.testing.assert_array_equal(s.features, want.features[:, ::-1])
