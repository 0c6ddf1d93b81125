"""``BatchSequences`` in Beam ``TestPipeline``s, checked against the reference.

Each run asserts the metadata PCollection inside the pipeline (its plan
statistics equal the NumPy reference's and it equals the written
``metadata.json``), then reads the written files with ``read_batches`` and
checks the file-level invariants and equality with
``segments.layout_in_memory``, batch by batch.

Building a Beam pipeline costs seconds (mostly graph construction), so the
boundary table runs every case in both modes and with both label kinds
pairwise here; the full cross product runs on the NumPy reference in
``test_layout.py``, which every Beam run here is shown to equal. CSV and
SequenceExample input take the other mode / label kind pairs; their decoding
is unit-tested without Beam in ``test_sequences.py``.
"""

import os

import pytest

from components.sequence_batcher import layout
from components.sequence_batcher import sequences
from tests.components.sequence_batcher import helpers

MODES = layout.MODES
LABEL_KINDS = (layout.PER_SEQUENCE, layout.PER_STEP)

BEAM_CASES = ('B_plus_1', 'exactly_B', 'length_T', 'length_T_plus_1',
              'one_far_longer')


def _config(mode, label_kind, **kwargs):
  kwargs.setdefault('batch_size', helpers.B)
  kwargs.setdefault('num_unroll', helpers.T)
  return layout.LayoutConfig(mode=mode, label_kind=label_kind, **kwargs)


def check_output(split_dir, data, config, truncated=0):
  """File-level checks of one written split; returns (batches, metadata)."""
  plan, expected = helpers.reference(data, config)
  batches = helpers.read_split(split_dir)
  meta = helpers.read_json(os.path.join(split_dir, 'metadata.json'))
  helpers.check_layout(batches, data, config)
  helpers.check_metadata(meta, batches, data, config)
  assert meta['input_timesteps'] == plan.real_timesteps + truncated
  assert meta['truncated_timesteps'] == truncated
  assert sorted(os.listdir(split_dir)) == sorted(meta['files'] +
                                                 ['metadata.json'])
  # The same plan as the reference, and the same arrays batch by batch.
  assert helpers.placements_of(batches) == dict(plan.placements())
  if plan.groups is not None:
    assert meta['groups'] == [list(g) for g in plan.groups]
  helpers.assert_same_batches(batches, expected)
  return batches, meta


def _boundary_table():
  """(case, mode, label_kind): every case in both modes and with both label
  kinds; every (mode, label kind) pair on two or three cases."""
  table = []
  for i, case in enumerate(BEAM_CASES):
    table.append((case, layout.PACKED, LABEL_KINDS[i % 2]))
    table.append((case, layout.BUCKETED, LABEL_KINDS[(i + 1) % 2]))
    table.append((case, layout.DENSE, LABEL_KINDS[(i // 2) % 2]))
  return table


@pytest.mark.parametrize('case, mode, label_kind', _boundary_table())
def test_boundary_cases(tmp_path, case, mode, label_kind):
  # One batch holds 3 * 4 * 2 * 4 = 96 bytes of features: 2 batches a shard,
  # so longer layouts have several shards (and groups across shards).
  config = _config(mode, label_kind, shard_bytes=200)
  data = helpers.make_data(helpers.BOUNDARY_CASES[case], label_kind)
  plan, _ = helpers.reference(data, config)
  split_dir = str(tmp_path / 'Split-train')
  helpers.run_batcher(helpers.examples(helpers.rows_of(data)), split_dir,
                      config, expected=helpers.expected_stats(plan))
  batches, meta = check_output(split_dir, data, config)
  assert meta['label_dtype'] == ('int64' if label_kind == layout.PER_SEQUENCE
                                 else 'float32')
  assert meta['batches_per_shard'] == 2
  assert meta['files'] == [
      f'batches-{s:05d}-of-{plan.num_shards:05d}.tfrecord'
      for s in range(-(-len(batches) // 2))]
  expected_batches = {
      # The longest sequence sets the number of batches ...
      'exactly_B': 2, 'length_T': 1,
      'length_T_plus_1': 3 if mode == layout.DENSE else 2 * 2,
      'B_plus_1': 3 if mode != layout.BUCKETED else 3 + 1,
      # ... or the groups do: (41, 3, 2) then (2, 1).
      'one_far_longer': 11 if mode != layout.BUCKETED else 11 + 1,
  }
  assert len(batches) == expected_batches[case]


def test_boundary_table_covers_every_combination():
  table = _boundary_table()
  assert {c for c, _, _ in table} == set(BEAM_CASES)
  for case in BEAM_CASES:
    assert {m for c, m, _ in table if c == case} == set(MODES)
    assert {k for c, _, k in table if c == case} == set(LABEL_KINDS)
  assert {(m, k) for _, m, k in table} == {(m, k) for m in MODES
                                           for k in LABEL_KINDS}


def test_the_in_pipeline_assertion_can_fail(tmp_path):
  """``assert_that`` inside the block really runs: a wrong count fails it."""
  config = _config(layout.PACKED, layout.PER_SEQUENCE)
  data = helpers.make_data([5, 7, 2], layout.PER_SEQUENCE)
  plan, _ = helpers.reference(data, config)
  wrong = dict(helpers.expected_stats(plan), num_batches=plan.num_batches + 1)
  with pytest.raises(Exception, match='metadata differs'):
    helpers.run_batcher(helpers.examples(helpers.rows_of(data)),
                        str(tmp_path / 'Split-train'), config, expected=wrong)


def test_csv_input(tmp_path):
  mode, label_kind = layout.BUCKETED, layout.PER_STEP
  config = _config(mode, label_kind)
  data = helpers.make_data([9, 1, 4, 6, 5], label_kind, seed=3)
  rows = helpers.rows_of(data)
  # Three files; every sequence's rows are spread over several of them. The
  # last file has its columns in another order and an excluded extra column.
  for i in range(2):
    helpers.write_csv(rows[i::3], str(tmp_path / f'part-{i}.csv'))
  helpers.write_csv([dict(r, note='n/a') for r in rows[2::3]],
                    str(tmp_path / 'part-2.csv'),
                    header=('x1', 'label', 'note', 't', 'seq_id', 'x0'))
  columns = sequences.ColumnConfig(exclude_columns=('note',))
  plan, _ = helpers.reference(data, config)
  split_dir = str(tmp_path / 'out' / 'Split-train')
  helpers.run_batcher(None, split_dir, config, columns=columns,
                      csv_pattern=str(tmp_path / 'part-*.csv'),
                      expected=helpers.expected_stats(plan))
  check_output(split_dir, data, config)


def test_sequence_example_input(tmp_path):
  mode, label_kind = layout.PACKED, layout.PER_SEQUENCE
  config = _config(mode, label_kind)
  data = helpers.make_data([9, 1, 4, 6, 5], label_kind, seed=5)
  # Steps stored backwards: only the order feature list puts them right.
  records = [helpers.sequence_example(s, label_kind, reverse_steps=True)
             for s in data]
  plan, _ = helpers.reference(data, config)
  split_dir = str(tmp_path / 'Split-train')
  # Named feature columns: the names are a list, not a side input.
  columns = sequences.ColumnConfig(feature_columns=helpers.FEATURES)
  helpers.run_batcher(records, split_dir, config, columns=columns,
                      input_format='sequence_example',
                      expected=helpers.expected_stats(plan))
  check_output(split_dir, data, config)


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
