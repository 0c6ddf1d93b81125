"""``BatchSequences`` in Beam ``TestPipeline``s, checked against the reference.

Each test asserts the metadata PCollection inside the pipeline, then reads
the written files with ``read_batches`` and checks the file-level invariants
and equality with ``layout.layout_in_memory``, batch by batch.
"""

import os

import numpy as np
import pytest

from components.sequence_batcher import layout
from components.sequence_batcher import sequences
from tests.components.sequence_batcher import helpers

MODES = (layout.PACKED, layout.BUCKETED)
LABEL_KINDS = (layout.PER_SEQUENCE, layout.PER_STEP)


def _config(mode, label_kind, **kwargs):
  kwargs.setdefault('batch_size', helpers.B)
  kwargs.setdefault('num_unroll', helpers.T)
  return layout.LayoutConfig(mode=mode, label_kind=label_kind, **kwargs)


def _check_output(split_dir, data, config, truncated=0):
  """File-level checks of one written split; returns its batches."""
  plan, expected = helpers.reference(data, config)
  batches = helpers.read_split(split_dir)
  meta = helpers.read_json(os.path.join(split_dir, 'metadata.json'))
  helpers.check_layout(batches, data, config)
  helpers.check_metadata(meta, batches, data, config)
  assert meta['input_timesteps'] == plan.real_timesteps + truncated
  assert meta['truncated_timesteps'] == truncated
  assert sorted(os.listdir(split_dir)) == sorted(meta['files'] +
                                                 ['metadata.json'])
  helpers.assert_same_batches(batches, expected)
  return batches, meta


@pytest.mark.parametrize('label_kind', LABEL_KINDS)
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('case', sorted(helpers.BOUNDARY_CASES))
def test_boundary_cases(tmp_path, case, mode, label_kind):
  config = _config(mode, label_kind)
  data = helpers.make_data(helpers.BOUNDARY_CASES[case], label_kind)
  plan, _ = helpers.reference(data, config)
  split_dir = str(tmp_path / 'Split-train')
  helpers.run_batcher(helpers.examples(helpers.rows_of(data)), split_dir,
                      config, expected=helpers.expected_stats(plan))
  batches, meta = _check_output(split_dir, data, config)
  assert meta['label_dtype'] == ('int64' if label_kind == layout.PER_SEQUENCE
                                 else 'float32')
  if case == 'one_far_longer':
    # The long sequence (11 segments) sets the number of batches.
    assert len(batches) == 11 if mode == layout.PACKED else len(batches) == 12
  if case in ('exactly_B', 'length_T'):
    assert len(batches) == -(-max(helpers.BOUNDARY_CASES[case]) // helpers.T)


@pytest.mark.parametrize('mode', MODES)
def test_several_shards_and_groups_across_shards(tmp_path, mode):
  # One batch holds 3 * 4 * 2 * 4 = 96 bytes of features: 2 batches a shard.
  config = _config(mode, layout.PER_SEQUENCE, shard_bytes=200)
  data = helpers.make_data([13, 2, 9, 7, 4, 4, 1, 5, 11, 3], layout.PER_SEQUENCE)
  plan, _ = helpers.reference(data, config)
  assert plan.num_shards >= 3
  split_dir = str(tmp_path / 'Split-train')
  helpers.run_batcher(helpers.examples(helpers.rows_of(data)), split_dir,
                      config, expected=helpers.expected_stats(plan))
  _, meta = _check_output(split_dir, data, config)
  assert meta['files'] == [f'batches-{s:05d}-of-{plan.num_shards:05d}.tfrecord'
                           for s in range(plan.num_shards)]
  assert meta['batches_per_shard'] == 2


def test_metadata_pcollection_equals_metadata_file(tmp_path):
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.testing.test_pipeline import TestPipeline  # pylint: disable=g-import-not-at-top
  from apache_beam.testing.util import assert_that  # pylint: disable=g-import-not-at-top
  from apache_beam.testing.util import BeamAssertException  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import beam as sb_beam  # pylint: disable=g-import-not-at-top

  config = _config(layout.BUCKETED, layout.PER_STEP)
  data = helpers.make_data([6, 3, 8, 1], layout.PER_STEP)
  split_dir = str(tmp_path / 'Split-eval')
  path = os.path.join(split_dir, 'metadata.json')

  def same_as_file(actual):
    # The file is written by the step that emits the dict.
    if actual != [helpers.read_json(path)]:
      raise BeamAssertException(f'{actual} != {helpers.read_json(path)}')
    if actual[0]['split'] != 'eval':
      raise BeamAssertException(f'split is {actual[0]["split"]!r}')

  with TestPipeline() as p:
    meta = (p
            | beam.Create(helpers.examples(helpers.rows_of(data)))
            | sb_beam.BatchSequences(split_dir, split='eval', config=config))
    assert_that(meta, same_as_file)
  _check_output(split_dir, data, config)


def test_the_in_pipeline_assertion_can_fail(tmp_path):
  """``assert_that`` inside the block really runs: a wrong count fails it."""
  config = _config(layout.PACKED, layout.PER_SEQUENCE)
  data = helpers.make_data([5, 7, 2], layout.PER_SEQUENCE)
  plan, _ = helpers.reference(data, config)
  wrong = dict(helpers.expected_stats(plan), num_batches=plan.num_batches + 1)
  with pytest.raises(Exception, match='metadata differs'):
    helpers.run_batcher(helpers.examples(helpers.rows_of(data)),
                        str(tmp_path / 'Split-train'), config, expected=wrong)


@pytest.mark.parametrize('label_kind', LABEL_KINDS)
@pytest.mark.parametrize('mode', MODES)
def test_csv_input(tmp_path, mode, label_kind):
  config = _config(mode, label_kind)
  data = helpers.make_data([9, 1, 4, 6, 5], label_kind, seed=3)
  rows = helpers.rows_of(data)
  # Three files; every sequence's rows are spread over several of them.
  for i in range(3):
    helpers.write_csv(rows[i::3], str(tmp_path / f'part-{i}.csv'))
  plan, _ = helpers.reference(data, config)
  split_dir = str(tmp_path / 'out' / 'Split-train')
  helpers.run_batcher(None, split_dir, config,
                      csv_pattern=str(tmp_path / 'part-*.csv'),
                      expected=helpers.expected_stats(plan))
  _check_output(split_dir, data, config)


def test_csv_header_order_and_extra_columns(tmp_path):
  """Columns are found by header name in any order; excluded ones dropped."""
  config = _config(layout.PACKED, layout.PER_SEQUENCE)
  data = helpers.make_data([3, 5], layout.PER_SEQUENCE)
  rows = [dict(r, note='n/a') for r in helpers.rows_of(data)]
  helpers.write_csv(rows, str(tmp_path / 'a.csv'),
                    header=('x1', 'label', 'note', 't', 'seq_id', 'x0'))
  split_dir = str(tmp_path / 'out')
  columns = sequences.ColumnConfig(exclude_columns=('note',))
  helpers.run_batcher(None, split_dir, config, columns=columns,
                      csv_pattern=str(tmp_path / '*.csv'))
  _check_output(split_dir, data, config)


@pytest.mark.parametrize('label_kind', LABEL_KINDS)
@pytest.mark.parametrize('mode', MODES)
def test_sequence_example_input(tmp_path, mode, label_kind):
  config = _config(mode, label_kind)
  data = helpers.make_data([9, 1, 4, 6, 5], label_kind, seed=5)
  # Steps stored backwards: only the order feature list puts them right.
  records = [helpers.sequence_example(s, label_kind, reverse_steps=True)
             for s in data]
  plan, _ = helpers.reference(data, config)
  split_dir = str(tmp_path / 'Split-train')
  helpers.run_batcher(records, split_dir, config,
                      input_format='sequence_example',
                      expected=helpers.expected_stats(plan))
  _check_output(split_dir, data, config)


def test_sequence_example_without_order_column_keeps_list_order(tmp_path):
  config = _config(layout.PACKED, layout.PER_STEP)
  data = helpers.make_data([7, 2, 4, 4], layout.PER_STEP, seed=6)
  records = [helpers.sequence_example(s, layout.PER_STEP) for s in data]
  columns = sequences.ColumnConfig(order_column=None, exclude_columns=('t',))
  split_dir = str(tmp_path / 'Split-train')
  helpers.run_batcher(records, split_dir, config,
                      input_format='sequence_example', columns=columns)
  batches, meta = _check_output(split_dir, data, config)
  assert meta['order_column'] is None


def test_row_order_of_the_input_does_not_matter(tmp_path):
  config = _config(layout.PACKED, layout.PER_STEP, shard_bytes=200)
  data = helpers.make_data([6, 9, 3, 1, 8], layout.PER_STEP, seed=8)
  outputs = []
  for seed in (1, 2):
    split_dir = str(tmp_path / f'run{seed}')
    helpers.run_batcher(helpers.examples(helpers.rows_of(data, seed=seed)),
                        split_dir, config)
    outputs.append(helpers.list_files(split_dir))
  assert len(outputs[0]) > 2
  assert outputs[0] == outputs[1]


def test_explicit_feature_columns_and_int_keys(tmp_path):
  """Named feature columns (in the given order); integer keys become text."""
  config = _config(layout.PACKED, layout.PER_SEQUENCE)
  data = helpers.make_data([5, 3, 2], layout.PER_SEQUENCE)
  rows = []
  for r in helpers.rows_of(data):
    rows.append(dict(r, seq_id=int(r['seq_id'][1:]) + 10, extra=1.0))
  columns = sequences.ColumnConfig(feature_columns=('x1', 'x0'))
  split_dir = str(tmp_path / 'Split-train')
  helpers.run_batcher(helpers.examples(rows), split_dir, config,
                      columns=columns)
  meta = helpers.read_json(os.path.join(split_dir, 'metadata.json'))
  assert meta['feature_names'] == ['x1', 'x0']
  renamed = [helpers.SeqData(str(int(s.key[1:]) + 10), s.order,
                             s.features[:, ::-1].copy(), s.labels)
             for s in data]
  _, expected = helpers.reference(renamed, config)
  helpers.assert_same_batches(helpers.read_split(split_dir), expected)
  assert sorted({k for b in expected for k in b['key'] if k}) == [
      b'10', b'11', b'12']


def test_batch_sequences_validates_arguments_eagerly(tmp_path):
  from components.sequence_batcher import beam as sb_beam  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='input_format must be one of'):
    sb_beam.BatchSequences(str(tmp_path), input_format='parquet')
  with pytest.raises(ValueError, match='csv input needs csv_headers'):
    sb_beam.BatchSequences(str(tmp_path), input_format='csv')
  with pytest.raises(ValueError, match='row input needs an order_column'):
    sb_beam.BatchSequences(
        str(tmp_path), columns=sequences.ColumnConfig(order_column=None))
  with pytest.raises(ValueError, match='split_dir must be set'):
    sb_beam.BatchSequences('')
  with pytest.raises(TypeError, match='config must be a LayoutConfig'):
    sb_beam.BatchSequences(str(tmp_path), config={'batch_size': 2})
  with pytest.raises(TypeError, match='columns must be a ColumnConfig'):
    sb_beam.BatchSequences(str(tmp_path), columns='seq_id')


def test_truncated_output_matches_reference(tmp_path):
  config = _config(layout.BUCKETED, layout.PER_STEP, max_sequence_length=6,
                   truncate=True)
  data = helpers.make_data([10, 3, 6, 7, 2], layout.PER_STEP, seed=9)
  cut = [helpers.SeqData(s.key, s.order[:6], s.features[:6], s.labels[:6])
         for s in data]
  truncated = sum(s.length for s in data) - sum(s.length for s in cut)
  assert truncated == 4 + 1
  plan, _ = helpers.reference(cut, config)
  split_dir = str(tmp_path / 'Split-train')
  helpers.run_batcher(helpers.examples(helpers.rows_of(data)), split_dir,
                      config,
                      expected=dict(helpers.expected_stats(plan, truncated),
                                    input_timesteps=sum(s.length
                                                        for s in data)))
  _, meta = _check_output(split_dir, cut, config, truncated=truncated)
  assert meta['truncated_timesteps'] == 5
  assert meta['input_timesteps'] == meta['real_timesteps'] + 5
  assert meta['max_length'] == 6
  assert np.isclose(meta['efficiency'],
                    meta['real_timesteps'] /
                    (meta['num_batches'] * helpers.B * helpers.T))
