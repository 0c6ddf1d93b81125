"""The same input gives byte-identical output whatever the runner's parallelism.

Every shard file and ``metadata.json`` are compared byte for byte between
DirectRunner ``in_memory`` and ``multi_processing`` with 2 workers (the
latter starts worker processes: slow, so this runs once, on small data with
a small ``shard_bytes`` so that there are several shards).
"""

import os

from apache_beam.options.pipeline_options import PipelineOptions

from components.sequence_batcher import in_memory
from components.sequence_batcher import layout
from tests.components.sequence_batcher import helpers


def test_byte_identical_output_across_runner_modes(tmp_path):
  # 3 * 4 * 2 * 4 = 96 feature bytes a batch: 2 batches a shard.
  config = layout.LayoutConfig(batch_size=3, num_unroll=4, mode=layout.PACKED,
                               label_kind=layout.PER_STEP, shard_bytes=200)
  data = helpers.make_data([13, 2, 9, 7, 4, 4, 1, 5, 11, 3, 6, 8],
                           layout.PER_STEP, seed=11)
  plan, _ = helpers.reference(data, config)
  assert plan.num_shards >= 4
  runs = {
      'in_memory': (
          PipelineOptions(direct_running_mode='in_memory'),
          helpers.rows_of(data, seed=1)),
      'multi_processing': (
          PipelineOptions(direct_running_mode='multi_processing',
                          direct_num_workers=2),
          helpers.rows_of(data, seed=1)),
  }
  outputs = {}
  for name, (options, rows) in runs.items():
    split_dir = str(tmp_path / name / 'Split-train')
    helpers.run_batcher(helpers.examples(rows), split_dir, config,
                        options=options,
                        expected=helpers.expected_stats(plan))
    outputs[name] = helpers.list_files(split_dir)

  reference = outputs['in_memory']
  meta = helpers.read_json(str(tmp_path / 'in_memory' / 'Split-train' /
                               'metadata.json'))
  assert sorted(reference) == sorted(meta['files'] + ['metadata.json'])
  assert len(meta['files']) == plan.num_shards
  for name, files in outputs.items():
    assert sorted(files) == sorted(reference), name
    for file_name in reference:
      assert files[file_name] == reference[file_name], (name, file_name)

  # The output is also right, not only stable.
  split_dir = str(tmp_path / 'in_memory' / 'Split-train')
  batches = helpers.read_split(split_dir)
  helpers.check_layout(batches, data, config)
  helpers.check_metadata(meta, batches, data, config)

  # And the single-process writer (in_memory.py) writes the same bytes.
  in_memory.write_split(helpers.sequence_arrays(data), str(tmp_path / 'ref'),
                        config=config, feature_names=list(helpers.FEATURES))
  written = helpers.list_files(os.path.join(str(tmp_path / 'ref'),
                                            'Split-train'))
  assert written == reference
