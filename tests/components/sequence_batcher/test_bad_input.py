"""Bad input (issue 2, section 4): a clear error naming the file or split and
the sequence key (and row / order value where there is one).

Most cases run the same decode -> group -> build path the pipeline runs, in
one process (``helpers.build_in_process``), because building a Beam pipeline
costs seconds; one case of every pipeline stage that raises (decoding,
building a sequence, planning) also runs through ``BatchSequences`` to show
that the error leaves the pipeline with its message intact.
"""

import math

import numpy as np
import pytest

from components.sequence_batcher import decode
from components.sequence_batcher import layout
from components.sequence_batcher import segments as segments_lib
from components.sequence_batcher import sequences
from components.sequence_batcher.sequences import InputDataError
from tests.components.sequence_batcher import helpers

SRC = "split 'train'"
SRC_RE = r"split 'train'"
COLUMNS = sequences.ColumnConfig()


def _rows(lengths=(4, 3), label_kind=layout.PER_SEQUENCE):
  """Rows in time order (not shuffled), so tests can edit a known row."""
  rows = []
  for s in helpers.make_data(list(lengths), label_kind):
    for j in range(s.length):
      rows.append({'seq_id': s.key, 't': int(s.order[j]),
                   'x0': float(s.features[j, 0]),
                   'x1': float(s.features[j, 1]), 'label': s.labels[j].item()})
  return rows


def _build_examples(rows, columns=COLUMNS, config=None):
  chunks = decode.decode_examples(helpers.examples(rows), columns, SRC)
  return helpers.build_in_process(chunks, columns, config)


def _build_csv(files, columns=COLUMNS, config=None,
               header=('seq_id', 't', 'x0', 'x1', 'label')):
  """files: {file name: rows}."""
  chunks = []
  for name, rows in files.items():
    chunks += decode.decode_csv_lines(helpers.csv_lines(rows, header),
                                      list(header), columns, name)
  return helpers.build_in_process(chunks, columns, config)


def _edit(rows, i, **changes):
  rows = [dict(r) for r in rows]
  rows[i].update(changes)
  return rows


# --- Missing key or order column ----------------------------------------------


def test_key_column_absent_from_examples():
  rows = [dict(r, seq_id=None) for r in _rows()]
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, SRC_RE,
                       r"key column 'seq_id' is not in the input")


def test_key_missing_in_some_example_rows():
  rows = _edit(_rows(), 2, seq_id=None)
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, SRC_RE,
                       r"no value for the key column 'seq_id'",
                       r"t=\[%d\]" % rows[2]['t'])


def test_key_missing_in_a_csv_line():
  rows = _edit(_rows(), 5, seq_id=None)
  with pytest.raises(InputDataError) as e:
    _build_csv({'/data/part-7.csv': rows})
  helpers.assert_error(e, InputDataError, r'/data/part-7\.csv',
                       r"no value for the key column 'seq_id'")


@pytest.mark.parametrize('column', ['seq_id', 't', 'label'])
def test_csv_header_without_a_named_column(tmp_path, column):
  from components.sequence_batcher import read_stage  # pylint: disable=g-import-not-at-top
  header = [h for h in ('seq_id', 't', 'x0', 'x1', 'label') if h != column]
  path = helpers.write_csv(_rows(), str(tmp_path / 'bad.csv'), header=header)
  with pytest.raises(InputDataError) as e:
    read_stage.read_csv_headers(str(tmp_path / '*.csv'), COLUMNS)
  helpers.assert_error(e, InputDataError, path,
                       rf"\['{column}'\] not in the header")


@pytest.mark.parametrize('drop', ['all', 'one'])
def test_order_value_missing(drop):
  rows = _rows()
  if drop == 'all':  # Sequence s01 has no order column at all.
    rows = [dict(r, t=None) if r['seq_id'] == 's01' else r for r in rows]
  else:
    rows = _edit(rows, 5, t=None)
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, SRC_RE, r"sequence 's01'",
                       r"no value for the order column 't'",
                       '3 of its rows' if drop == 'all' else '1 of its rows')


def test_order_column_absent_from_all_csv_rows_is_caught_by_the_header(
    tmp_path):
  from components.sequence_batcher import read_stage  # pylint: disable=g-import-not-at-top
  (tmp_path / 'a.csv').write_text('seq_id,x0,label\na,1.0,0\n')
  with pytest.raises(InputDataError, match=r"a\.csv: column\(s\) \['t'\]"):
    read_stage.read_csv_headers(str(tmp_path / 'a.csv'), COLUMNS)


def test_non_numeric_order_value():
  # Text order values (e.g. from a CSV read as strings): one is not a number.
  rows = [dict(r, t=str(r['t']).encode()) for r in _rows()]
  rows = _edit(rows, 1, t=b'yesterday')
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, SRC_RE, r"sequence 's00'",
                       r"order column 't': the order value 'yesterday' is "
                       r"neither a number nor an ISO-8601 date-time")


# --- Non-numeric or missing feature values ------------------------------------


def test_non_numeric_feature_in_examples():
  # A text feature column (as ExampleGen gives for a column with text in it).
  rows = [dict(r, x1=repr(r['x1']).encode()) for r in _rows()]
  rows = _edit(rows, 2, x1=b'high')
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, SRC_RE, r"sequence 's00'",
                       r"at order value %d" % rows[2]['t'],
                       r"feature 'x1' has the non-numeric value b'high'")


def test_text_among_numbers_in_one_example_row_names_the_row():
  """One row's value is text where the column's other rows hold numbers."""
  rows = _edit(_rows(), 2, x1=b'high')
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, SRC_RE, r"sequence 's00'",
                       r'at order value %d' % rows[2]['t'],
                       r"feature 'x1' has the non-numeric value b'high'")


def _mixed_number_rows():
  """Rows where x0, t and the label are int64 in some rows, float in others."""
  rows = _rows(lengths=(6, 5, 4))
  rows = _edit(rows, 1, x0=7)          # An int among float features.
  rows = _edit(rows, 3, t=float(rows[3]['t']))  # A float among int orders.
  rows = _edit(rows, 8, label=float(rows[8]['label']))  # Float label, s01.
  return rows


def test_int_and_float_in_one_example_bundle_are_promoted_to_float():
  rows = _mixed_number_rows()
  seqs = {s.key: s for s in _build_examples(rows)}
  assert seqs['s00'].features[1, 0] == 7.0
  assert seqs['s00'].labels.dtype == np.int64
  assert seqs['s01'].labels.dtype == np.float32  # Its rows: int and float.
  assert seqs['s02'].labels.dtype == np.int64


def test_non_numeric_feature_in_csv():
  rows = _rows()
  rows = _edit(rows, 6, x0='n/a')
  with pytest.raises(InputDataError) as e:
    _build_csv({'/data/a.csv': rows[:3], '/data/b.csv': rows[3:]})
  helpers.assert_error(e, InputDataError, r'/data/b\.csv', r"sequence 's01'",
                       r"at order value %d" % rows[6]['t'],
                       r"feature 'x0' has the non-numeric value 'n/a'")


@pytest.mark.parametrize('column', ['x0', 'x1'])
def test_missing_feature_value_in_examples(column):
  rows = _edit(_rows(), 5, **{column: None})
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, SRC_RE, r"sequence 's01'",
                       r"at order value %d" % rows[5]['t'],
                       rf"no value for feature '{column}' \(1 of 3 rows")


def test_missing_feature_value_in_csv():
  rows = _edit(_rows(), 3, x1=None)
  with pytest.raises(InputDataError) as e:
    _build_csv({'/data/a.csv': rows})
  helpers.assert_error(e, InputDataError, r'/data/a\.csv', r"sequence 's00'",
                       r"at order value %d" % rows[3]['t'],
                       r"no value for feature 'x1'")


def test_feature_absent_from_one_sequence():
  """A feature the other sequences have is missing from every row of one."""
  rows = [dict(r, x1=None) if r['seq_id'] == 's01' else r for r in _rows()]
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, r"sequence 's01'",
                       r"no value for feature 'x1' \(3 of 3 rows")


def test_missing_label_value():
  rows = _edit(_rows(), 6, label=None)
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, SRC_RE, r"sequence 's01'",
                       r"at order value %d" % rows[6]['t'],
                       r"no value for the label column 'label'")


def test_several_values_for_one_step():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ex = tf.train.Example.FromString(helpers.example(_rows()[0]))
  ex.features.feature['x0'].float_list.value.append(2.0)
  with pytest.raises(InputDataError) as e:
    decode.decode_examples([ex.SerializeToString()], COLUMNS, SRC)
  helpers.assert_error(e, InputDataError, SRC_RE, r"2 values for 'x0'",
                       r"seq_id=\[b's00'\]")


# --- NaN and infinity ---------------------------------------------------------


@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize('column', ['x0', 'x1'])
def test_non_finite_feature_in_examples(value, column):
  rows = _edit(_rows(), 4, **{column: value})
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, SRC_RE, r"sequence 's01'",
                       r"at order value %d" % rows[4]['t'],
                       rf"feature '{column}' is -?(nan|inf)",
                       'NaN and infinity are not allowed')


@pytest.mark.parametrize('text', ['nan', 'inf', '-inf', 'NaN'])
def test_non_finite_feature_in_csv(text):
  lines = helpers.csv_lines(_rows())
  fields = lines[2].split(',')
  fields[2] = text
  lines[2] = ','.join(fields)
  chunks = decode.decode_csv_lines(lines, ['seq_id', 't', 'x0', 'x1', 'label'],
                                   COLUMNS, '/data/a.csv')
  with pytest.raises(InputDataError) as e:
    helpers.build_in_process(chunks)
  helpers.assert_error(e, InputDataError, r'/data/a\.csv', r"sequence 's00'",
                       r"feature 'x0' is -?(nan|inf)")


def test_non_finite_order_value():
  rows = [dict(r, t=float(r['t'])) for r in _rows()]  # Float timestamps.
  rows = _edit(rows, 1, t=math.nan)
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, r"sequence 's00'",
                       r"order column 't': the order value nan is not finite")


def test_non_finite_per_step_label():
  rows = _edit(_rows(label_kind=layout.PER_STEP), 2, label=math.inf)
  with pytest.raises(InputDataError) as e:
    _build_examples(rows, config=layout.LayoutConfig(
        label_kind=layout.PER_STEP))
  helpers.assert_error(e, InputDataError, r"sequence 's00'",
                       r"label 'label' is inf")


# --- Duplicate rows -----------------------------------------------------------


def test_duplicate_key_and_order_rows():
  rows = _rows()
  rows.append(dict(rows[5], x0=-1.0))
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, SRC_RE,
                       r"sequence 's01' has duplicate rows",
                       r"t=%d" % rows[5]['t'])


def test_duplicate_rows_in_two_csv_files_name_both_files():
  rows = _rows()
  with pytest.raises(InputDataError) as e:
    _build_csv({'/data/a.csv': rows, '/data/b.csv': rows[:2]})
  helpers.assert_error(e, InputDataError, r'/data/a\.csv, /data/b\.csv',
                       r"sequence 's00' has duplicate rows",
                       r'\(2 duplicates in all\)')


def test_duplicate_sequence_example_keys_are_rejected_by_the_plan():
  data = helpers.make_data([3, 5], layout.PER_SEQUENCE)
  data[1].key = data[0].key
  chunks = [decode.decode_sequence_example(
      helpers.sequence_example(s, layout.PER_SEQUENCE), COLUMNS, SRC)
            for s in data]
  seqs = [sequences.build_sequence(c.key, [c], ['x0', 'x1'], COLUMNS,
                                   layout.LayoutConfig()) for c in chunks]
  with pytest.raises(layout.LayoutError, match=r"sequence key 's00' appears"):
    layout.plan_lanes(((s.key, s.length) for s in seqs), layout.LayoutConfig())


# --- Per-sequence label that changes ------------------------------------------


def test_per_sequence_label_that_changes():
  rows = _rows()
  rows = _edit(rows, 6, label=rows[6]['label'] + 1)
  with pytest.raises(InputDataError) as e:
    _build_examples(rows)
  helpers.assert_error(e, InputDataError, SRC_RE, r"sequence 's01'",
                       r"per-sequence label 'label' changes",
                       r"at order value %d" % rows[6]['t'],
                       'use label_kind=per_step')
  # The same rows are fine as a per-step target.
  built = _build_examples(rows, config=layout.LayoutConfig(
      label_kind=layout.PER_STEP))
  assert built[1].labels.tolist() == [1, 1, 2]


# --- SequenceExample ----------------------------------------------------------


def test_sequence_example_feature_lists_of_different_lengths():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  s = helpers.make_data([4], layout.PER_SEQUENCE)[0]
  ex = tf.train.SequenceExample.FromString(
      helpers.sequence_example(s, layout.PER_SEQUENCE))
  del ex.feature_lists.feature_list['x1'].feature[-1]
  with pytest.raises(InputDataError) as e:
    decode.decode_sequence_example(ex.SerializeToString(), COLUMNS, SRC)
  helpers.assert_error(e, InputDataError, SRC_RE, r"SequenceExample 's00'",
                       'feature lists of different lengths',
                       r"'x1': 3")


def _with_context(**extra):
  """A SequenceExample of 4 steps with extra context features."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  s = helpers.make_data([4], layout.PER_SEQUENCE)[0]
  ex = tf.train.SequenceExample.FromString(
      helpers.sequence_example(s, layout.PER_SEQUENCE))
  for name, vals in extra.items():
    feature = ex.context.feature[name]
    if vals and isinstance(vals[0], bytes):
      feature.bytes_list.value.extend(vals)
    else:
      feature.float_list.value.extend(vals)
  return s, ex.SerializeToString()


def test_sequence_example_context_features_are_copied_to_every_step():
  s, record = _with_context(site=[2.5])
  chunk = decode.decode_sequence_example(record, COLUMNS, SRC)
  assert chunk.columns['site'].tolist() == [2.5] * 4
  built = helpers.build_in_process([chunk], COLUMNS)
  assert built[0].features.shape == (4, 3)  # site, x0, x1 (sorted).
  np.testing.assert_array_equal(built[0].features[:, 0], [2.5] * 4)
  np.testing.assert_allclose(built[0].features[:, 1:], s.features)
  # Excluded, or left out of named feature_columns, it is not read.
  for columns in (sequences.ColumnConfig(exclude_columns=('site',)),
                  sequences.ColumnConfig(feature_columns=('x0', 'x1'))):
    built = helpers.build_in_process(
        [decode.decode_sequence_example(record, columns, SRC)], columns)
    np.testing.assert_allclose(built[0].features, s.features)


@pytest.mark.parametrize('extra, message', [
    ({'site': [1.0, 2.0]}, r"has 2 values for context feature 'site'; one "
     r'is expected'),
    ({'site': [b'north']}, r"feature 'site' has the non-numeric value "
     r"b'north'"),
    ({'x0': [1.0]}, r"'x0' is both a context feature and a feature list"),
])
def test_sequence_example_context_feature_errors(extra, message):
  _, record = _with_context(**extra)
  with pytest.raises(InputDataError) as e:
    helpers.build_in_process(
        [decode.decode_sequence_example(record, COLUMNS, SRC)], COLUMNS)
  err = helpers.assert_error(e, InputDataError, SRC_RE, r"'s00'", message)
  assert '\n' not in str(err)
  # Excluded, an unusable context feature is ignored.
  if 'x0' not in extra:
    columns = sequences.ColumnConfig(exclude_columns=('site',))
    assert helpers.build_in_process(
        [decode.decode_sequence_example(record, columns, SRC)], columns)


def test_sequence_example_without_key():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  s = helpers.make_data([4], layout.PER_SEQUENCE)[0]
  ex = tf.train.SequenceExample.FromString(
      helpers.sequence_example(s, layout.PER_SEQUENCE))
  del ex.context.feature['seq_id']
  with pytest.raises(InputDataError) as e:
    decode.decode_sequence_example(ex.SerializeToString(), COLUMNS, SRC)
  helpers.assert_error(e, InputDataError, SRC_RE,
                       r"no context feature 'seq_id' \(the key\)")


def test_sequence_example_without_steps():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ex = tf.train.SequenceExample()
  ex.context.feature['seq_id'].bytes_list.value.append(b'empty')
  ex.context.feature['label'].int64_list.value.append(1)
  chunk = decode.decode_sequence_example(ex.SerializeToString(), COLUMNS, SRC)
  with pytest.raises(InputDataError) as e:
    sequences.build_sequence(chunk.key, [chunk], ['x0'], COLUMNS,
                             layout.LayoutConfig())
  helpers.assert_error(e, InputDataError, SRC_RE,
                       r"sequence 'empty' has no time steps")


# --- Empty input --------------------------------------------------------------


def test_empty_input_in_memory():
  assert decode.decode_examples([], COLUMNS, SRC) == []
  assert decode.decode_csv_lines([], ['seq_id', 't'], COLUMNS, 'a.csv') == []
  with pytest.raises(layout.LayoutError, match='no sequences to lay out'):
    segments_lib.layout_in_memory([], layout.LayoutConfig())


def test_empty_csv_file_and_no_files(tmp_path):
  from components.sequence_batcher import read_stage  # pylint: disable=g-import-not-at-top
  (tmp_path / 'empty.csv').write_text('')
  with pytest.raises(InputDataError, match=r'empty\.csv: empty file'):
    read_stage.read_csv_headers(str(tmp_path / 'empty.csv'), COLUMNS)
  with pytest.raises(InputDataError, match=r"no file matches '.*nothing-\*'"):
    read_stage.read_csv_headers(str(tmp_path / 'nothing-*'), COLUMNS)
  (tmp_path / 'dup.csv').write_text('seq_id,t,x0,x0,label\n')
  with pytest.raises(InputDataError, match=r"dup\.csv: duplicate column names "
                     r"\['x0'\]"):
    read_stage.read_csv_headers(str(tmp_path / 'dup.csv'), COLUMNS)


# --- batch_size / num_unroll below 1 ------------------------------------------


@pytest.mark.parametrize('kwargs', [{'batch_size': 0}, {'num_unroll': 0},
                                    {'batch_size': -2}, {'num_unroll': -1}])
def test_sizes_below_one(kwargs):
  (name, value), = kwargs.items()
  with pytest.raises(ValueError) as e:
    layout.LayoutConfig(**kwargs)
  helpers.assert_error(e, layout.LayoutError,
                       rf'{name} must be at least 1, got {value}')


# --- max_sequence_length ------------------------------------------------------


def test_too_long_sequence_is_an_error_by_default():
  config = layout.LayoutConfig(max_sequence_length=3)
  with pytest.raises(InputDataError) as e:
    _build_examples(_rows((3, 4, 2)), config=config)
  helpers.assert_error(e, InputDataError, SRC_RE, r"sequence 's01' has 4 steps",
                       'more than max_sequence_length=3',
                       'set truncate=True')
  # Exactly the limit is fine.
  assert [s.length for s in _build_examples(_rows((3, 2)), config=config)] == [
      3, 2]


# --- Through the Beam transform -----------------------------------------------


def _run(records, tmp_path, config=None, **kwargs):
  config = config or layout.LayoutConfig(batch_size=2, num_unroll=3)
  helpers.run_batcher(records, str(tmp_path / 'Split-train'), config,
                      **kwargs)


def test_beam_missing_key_column(tmp_path):
  rows = [dict(r, seq_id=None) for r in _rows()]
  with pytest.raises(Exception) as e:
    _run(helpers.examples(rows), tmp_path)
  helpers.assert_error(e, InputDataError, SRC_RE,
                       r"key column 'seq_id' is not in the input")


def test_beam_non_numeric_csv_feature_names_the_file(tmp_path):
  rows = _edit(_rows(), 5, x1='??')
  helpers.write_csv(rows[:4], str(tmp_path / 'a.csv'))
  path = helpers.write_csv(rows[4:], str(tmp_path / 'b.csv'))
  with pytest.raises(Exception) as e:
    _run(None, tmp_path, csv_pattern=str(tmp_path / '*.csv'))
  helpers.assert_error(e, InputDataError, path, r"sequence 's01'",
                       r"at order value %d" % rows[5]['t'],
                       r"feature 'x1' has the non-numeric value '\?\?'")


def test_beam_empty_input(tmp_path):
  with pytest.raises(Exception) as e:
    _run([], tmp_path)
  helpers.assert_error(e, InputDataError, SRC_RE, 'the input has no rows')


def test_beam_empty_csv_split(tmp_path):
  (tmp_path / 'eval.csv').write_text('seq_id,t,x0,x1,label\n')
  with pytest.raises(Exception) as e:
    helpers.run_batcher(None, str(tmp_path / 'Split-eval'),
                        layout.LayoutConfig(batch_size=2, num_unroll=3),
                        split='eval', csv_pattern=str(tmp_path / '*.csv'))
  helpers.assert_error(e, InputDataError, r"split 'eval'",
                       'the input has no rows')


def test_beam_sequence_example_lists_of_different_lengths(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data = helpers.make_data([4, 3], layout.PER_SEQUENCE)
  records = [helpers.sequence_example(s, layout.PER_SEQUENCE) for s in data]
  ex = tf.train.SequenceExample.FromString(records[1])
  ex.feature_lists.feature_list['t'].feature.add().int64_list.value.append(99)
  records[1] = ex.SerializeToString()
  with pytest.raises(Exception) as e:
    _run(records, tmp_path, input_format='sequence_example')
  helpers.assert_error(e, InputDataError, SRC_RE, r"SequenceExample 's01'",
                       'feature lists of different lengths', r"'t': 4")


@pytest.mark.parametrize('edit', ['numbers', 'text'])
def test_mixed_types_give_the_same_outcome_in_any_bundling(tmp_path, edit):
  """A column int64 in some rows and float (or text) in others: the outcome
  does not depend on how many rows the runner decodes at once (one, or all
  in one bundle): int64 and float are promoted to float with byte-identical
  output, text among numbers is the same error naming the key and row."""
  rows = _mixed_number_rows()
  if edit == 'text':
    rows = _edit(rows, 12, x1=b'high')
  outcomes = []
  for sizes in ((1, 1), (10000, 10000)):
    split_dir = str(tmp_path / f'bundle-{sizes[0]}' / 'Split-train')
    if edit == 'numbers':
      helpers.run_batcher(helpers.examples(rows), split_dir,
                          layout.LayoutConfig(batch_size=2, num_unroll=3),
                          decode_batch_sizes=sizes)
      outcomes.append(helpers.list_files(split_dir))
    else:
      with pytest.raises(Exception) as e:
        helpers.run_batcher(helpers.examples(rows), split_dir,
                            layout.LayoutConfig(batch_size=2, num_unroll=3),
                            decode_batch_sizes=sizes)
      err = helpers.assert_error(
          e, InputDataError, SRC_RE, r"sequence 's02'",
          r'at order value %d' % rows[12]['t'],
          r"feature 'x1' has the non-numeric value b'high'")
      outcomes.append(str(err).split(' [while running')[0])
  assert outcomes[0] == outcomes[1]
  if edit == 'numbers':
    batches = helpers.read_split(str(tmp_path / 'bundle-1' / 'Split-train'))
    assert batches[0]['labels'].dtype == np.float32  # s01's float label.
    steps = sum(b['mask'].sum() for b in batches)
    assert steps == len(rows)


def test_beam_truncation_is_counted(tmp_path):
  from tests.components.sequence_batcher import test_beam  # pylint: disable=g-import-not-at-top
  mode, label_kind = layout.PACKED, layout.PER_SEQUENCE
  config = layout.LayoutConfig(batch_size=2, num_unroll=3, mode=mode,
                               label_kind=label_kind, max_sequence_length=5,
                               truncate=True)
  data = helpers.make_data([9, 3, 5, 7, 2], label_kind, seed=9)
  cut = [helpers.SeqData(s.key, s.order[:5], s.features[:5], s.labels[:5])
         for s in data]
  truncated = 4 + 2
  assert sum(s.length for s in data) - sum(s.length for s in cut) == truncated
  plan, _ = helpers.reference(cut, config)
  split_dir = str(tmp_path / 'Split-train')
  helpers.run_batcher(
      helpers.examples(helpers.rows_of(data)), split_dir, config,
      expected=dict(helpers.expected_stats(plan, truncated),
                    input_timesteps=sum(s.length for s in data)))
  _, meta = test_beam.check_output(split_dir, cut, config, truncated)
  assert meta['truncated_timesteps'] == 6
  assert meta['input_timesteps'] == meta['real_timesteps'] + 6 == 26
  assert meta['max_length'] == 5
  # The kept steps are the first five (checked value by value above), and
  # per-sequence labels weigh the last kept step.
  assert np.isclose(meta['efficiency'], 20 / (meta['num_batches'] * 2 * 3))
