"""The pipeline with --runner=DaskRunner: flags, routing, the split check.

Also measures, on a 2-worker LocalCluster (127.0.0.1 only, closed at the
end), the three DaskRunner limitations ``pipeline/beam_options.py`` routes
around (Beam 2.74): a ``beam.io.Read`` is not translated, only the last leaf
of a graph is computed, and outputs emitted from ``finish_bundle`` are lost.
"""

from __future__ import annotations

import gzip
import os

import pytest

from components.sequence_batcher import command_line
from pipeline import beam_options
from pipeline import flags as flags_lib
from pipeline import local_runner
from pipeline import split_check

DASK_ARGS = ['--runner=DaskRunner', '--dask_client_address=127.0.0.1:8786']


def _tfrecord(path, records):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  options = tf.io.TFRecordOptions(compression_type='GZIP')
  with tf.io.TFRecordWriter(str(path), options) as writer:
    for r in records:
      writer.write(r)


def test_local_runner_accepts_dask_runner_and_options():
  args, beam_args = command_line.split_args(flags_lib.build_parser(),
                                            DASK_ARGS)
  assert args.data_root
  assert beam_args == [f'--runner={command_line.DASK_RUNNER}', DASK_ARGS[1]]
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top
  from apache_beam.runners.dask.dask_runner import DaskOptions  # pylint: disable=g-import-not-at-top
  # TFX's executors parse the same list: the address is kept, not discarded.
  assert PipelineOptions(beam_args).view_as(
      DaskOptions).address == '127.0.0.1:8786'
  assert beam_options.runner_name(beam_args) == 'DaskRunner'


def test_sequence_example_batcher_waits_for_the_split_check(tmp_path):
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from pipeline import pipeline_config  # pylint: disable=g-import-not-at-top
  config = pipeline_config.PipelineConfig(
      data_root=str(tmp_path), output_dir=str(tmp_path),
      input_format='sequence_example')
  p = pipeline_lib.create_pipeline(
      config, pipeline_root=str(tmp_path))
  by_id = {c.id: c for c in p.components}
  assert 'ExampleSplitCheck' in {
      n.id for n in by_id['SequenceBatcher'].upstream_nodes}
  assert 'ImportExampleGen' in {
      n.id for n in by_id['ExampleSplitCheck'].upstream_nodes}


def test_split_check_names_the_empty_split_and_runner(tmp_path):
  os.makedirs(tmp_path / 'Split-train')
  os.makedirs(tmp_path / 'Split-eval')
  _tfrecord(tmp_path / 'Split-train' / 'data_tfrecord-00000-of-00001.gz',
            [b'row'])
  with gzip.open(tmp_path / 'Split-eval' / 'data_tfrecord-00000-of-00001.gz',
                 'wb'):
    pass  # A valid, empty gzip file: what an unwritten split looks like.
  split_check.check_splits(str(tmp_path), ['train'], 'DirectRunner')
  with pytest.raises(split_check.EmptySplitError) as e:
    split_check.check_splits(str(tmp_path), ['train', 'eval'], 'DaskRunner')
  message = str(e.value)
  assert len(message.splitlines()) == 1
  assert "split 'eval' is empty" in message
  assert 'Split-eval' in message and 'DaskRunner' in message
  with pytest.raises(split_check.EmptySplitError, match="'missing'"):
    split_check.check_splits(str(tmp_path), ['missing'], 'DirectRunner')


def test_pipeline_routes_unsupported_components_off_dask(tmp_path):
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from pipeline import pipeline_config  # pylint: disable=g-import-not-at-top
  root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), 'data', 'sample')
  config = pipeline_config.PipelineConfig(data_root=root,
                                          output_dir=str(tmp_path))
  for beam_args, routed in (
      (['--direct_running_mode=in_memory'], False),
      (command_line.expand_runner(DASK_ARGS), True)):
    p = pipeline_lib.create_pipeline(
        config, pipeline_root=str(tmp_path), beam_pipeline_args=beam_args)
    by_id = {c.id: c for c in p.components}
    ids = [c.id for c in p.components]
    assert ids.index('CsvExampleGen') < ids.index('ExampleSplitCheck') < (
        ids.index('StatisticsGen'))
    assert 'ExampleSplitCheck' in {
        n.id for n in by_id['StatisticsGen'].upstream_nodes}
    assert 'CsvExampleGen' in {
        n.id for n in by_id['ExampleSplitCheck'].upstream_nodes}
    # Transform reads ExampleGen's examples too, but already waits for
    # StatisticsGen (through SchemaGen): no extra edge.
    assert 'ExampleSplitCheck' not in {
        n.id for n in by_id['Transform'].upstream_nodes}
    for cid in ('CsvExampleGen', 'StatisticsGen', 'Transform',
                'StatefulEvaluator'):
      args = by_id[cid].executor_spec.beam_pipeline_args
      assert (args[-1] == '--runner=DirectRunner') == routed, (cid, args)
    # The batcher runs on the pipeline's runner, Dask included.
    args = by_id['SequenceBatcher'].executor_spec.beam_pipeline_args
    assert command_line.runner_of(args) == command_line.runner_of(
        beam_args), args


def _run(build, address):
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top
  p = beam.Pipeline(options=PipelineOptions(command_line.expand_runner(
      ['--runner=DaskRunner', f'--dask_client_address={address}',
       '--dask_npartitions=2'])))
  build(p)
  result = p.run()
  try:
    result.wait_until_finish()
  finally:
    command_line.close_runner_client(result)


def test_dask_runner_limitations(tmp_path, dask_address):
  """What Beam 2.74's DaskRunner does with three primitives TFX relies on."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  _tfrecord(tmp_path / 'in.gz', [b'a', b'b', b'c'])

  def read(p):
    _ = (p | beam.io.ReadFromTFRecord(str(tmp_path / 'in.gz'))
         | beam.Map(lambda r: r))
  with pytest.raises(AttributeError, match='NoneType'):
    _run(read, dask_address)

  def two_leaves(p):
    numbers = p | beam.Create(list(range(10)))
    for name in ('first', 'second'):
      _ = (numbers | f'Count[{name}]' >> beam.combiners.Count.Globally()
           | f'Write[{name}]' >> beam.Map(
               lambda n, name=name: open(tmp_path / name, 'w').write(str(n))))
  _run(two_leaves, dask_address)
  assert not (tmp_path / 'first').exists()  # Never computed.
  assert (tmp_path / 'second').read_text() == '10'

  def batched(p):
    _ = (p | beam.Create(list(range(73)))
         | beam.BatchElements(min_batch_size=1, max_batch_size=4)
         | beam.FlatMap(lambda b: b) | beam.combiners.Count.Globally()
         | beam.Map(lambda n: open(tmp_path / 'n', 'w').write(str(n))))
  _run(batched, dask_address)
  assert int((tmp_path / 'n').read_text()) < 73  # Records lost.
