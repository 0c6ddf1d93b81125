"""The batcher on Beam's DaskRunner writes the DirectRunner's bytes.

A ``dask.distributed`` LocalCluster of 2 worker processes on 127.0.0.1 (no
other interface, no dashboard) is started for this module and closed at its
end. Data are tiny: the point is the runner, not the size.
"""

from __future__ import annotations

import os

import pytest

from components.sequence_batcher import __main__ as cli
from components.sequence_batcher import command_line
from components.sequence_batcher import in_memory
from components.sequence_batcher import layout
from tests.components.sequence_batcher import helpers

def _dask_args(address):
  return ['--runner=DaskRunner', f'--dask_client_address={address}']


def _write_csv(directory, num_files=3):
  """12 sequences of 1..23 steps over ``num_files`` CSV files."""
  lines = []
  for k in range(12):
    for t in range(1 + (k * 7) % 23):
      lines.append(f'k{k:02d},{t},{(k * 31 + t) % 17 * 0.25},{t % 3},{k % 2}')
  per_file = -(-len(lines) // num_files)
  for i in range(num_files):
    (directory / f'part-{i}.csv').write_text('\n'.join(
        ['id,step,a,b,y'] + lines[i * per_file:(i + 1) * per_file]) + '\n')


def test_short_runner_name_is_expanded_and_its_options_known():
  args = command_line.expand_runner(['--runner', 'DaskRunner',
                                     '--dask_client_address=x:1'])
  assert args == ['--runner', command_line.DASK_RUNNER,
                  '--dask_client_address=x:1']
  assert command_line.unknown_beam_args(args) == []
  assert command_line.runner_of(['--runner=dask']) == 'dask'
  assert command_line.expand_runner(['--runner=dask']) == [
      f'--runner={command_line.DASK_RUNNER}']


def test_cli_on_dask_is_byte_identical_to_direct(tmp_path, dask_address,
                                                 capsys):
  _write_csv(tmp_path)
  common = ['--input', str(tmp_path / 'part-*.csv'), '--key-column', 'id',
            '--order-column', 'step', '--label-column', 'y',
            '--batch-size', '3', '--num-unroll', '4']
  assert cli.main(common + ['--output', str(tmp_path / 'direct')]) == 0
  assert cli.main(common + ['--output', str(tmp_path / 'dask')] +
                  _dask_args(dask_address)) == 0
  capsys.readouterr()
  direct = helpers.list_files(str(tmp_path / 'direct'))
  dask = helpers.list_files(str(tmp_path / 'dask'))
  assert 'Split-train/batches-00000-of-00001.tfrecord' in direct
  assert sorted(dask) == sorted(direct)
  for name, data in direct.items():
    assert dask[name] == data, name


def test_cli_on_dask_reports_bad_data_in_one_line(tmp_path, dask_address,
                                                  capsys):
  (tmp_path / 'bad.csv').write_text('id,step,v,y\nx,0,abc,1\n')
  code = cli.main(['--input', str(tmp_path / 'bad.csv'), '--output',
                   str(tmp_path / 'out'), '--key-column', 'id',
                   '--order-column', 'step', '--label-column', 'y'] +
                  _dask_args(dask_address))
  assert code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert 'bad.csv' in err and "sequence 'x'" in err, err


def test_two_splits_from_tfrecords_on_dask(tmp_path, dask_address):
  """What the executor needs on Dask: records read by the workers
  (ReadRecords, not ReadFromTFRecord) and one leaf for several splits
  (JoinOutputs); both splits are written, with the bytes of the
  single-process writer (which equal the DirectRunner's: test_determinism),
  the train split in several shards of several chunks each."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import beam as sb_beam  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import read_stage  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import sequences  # pylint: disable=g-import-not-at-top
  # 3 * 4 * 2 * 4 = 96 feature bytes a batch: 4 batches a shard, 1 a chunk.
  config = layout.LayoutConfig(batch_size=3, num_unroll=4, mode=layout.PACKED,
                               label_kind=layout.PER_STEP, shard_bytes=400)
  data = {'train': helpers.make_data([13, 2, 9, 7, 4, 4, 1, 5, 11, 3, 6, 8],
                                     layout.PER_STEP, seed=11),
          'eval': helpers.make_data([4, 3], layout.PER_STEP, seed=4)}
  plan, _ = helpers.reference(data['train'], config)
  assert plan.num_shards >= 2
  for split, seqs in data.items():
    os.makedirs(tmp_path / 'in' / split)
    with tf.io.TFRecordWriter(
        str(tmp_path / 'in' / split / 'rows.gz'),
        tf.io.TFRecordOptions(compression_type='GZIP')) as w:
      for r in helpers.examples(helpers.rows_of(seqs, seed=1)):
        w.write(r)
  p = beam.Pipeline(options=PipelineOptions(command_line.expand_runner(
      _dask_args(dask_address))))
  metas = [p
           | f'Read[{split}]' >> read_stage.ReadRecords(
               str(tmp_path / 'in' / split / '*'))
           | f'Batch[{split}]' >> sb_beam.BatchSequences(
               str(tmp_path / 'dask' / f'Split-{split}'), split=split,
               columns=sequences.ColumnConfig(), config=config,
               chunk_bytes=100)
           for split in data]
  _ = tuple(metas) | 'Join' >> sb_beam.JoinOutputs()
  result = p.run()
  try:
    result.wait_until_finish()
  finally:
    command_line.close_runner_client(result)
  for split, seqs in data.items():
    in_memory.write_split(helpers.sequence_arrays(seqs),
                          str(tmp_path / 'ref'), split=split, config=config,
                          feature_names=list(helpers.FEATURES))
    assert helpers.list_files(str(tmp_path / 'dask' / f'Split-{split}')) == (
        helpers.list_files(str(tmp_path / 'ref' / f'Split-{split}'))), split
  batches = helpers.read_split(str(tmp_path / 'dask' / 'Split-train'))
  helpers.check_layout(batches, data['train'], config)


def _executor_outputs(tmp_path, examples, props, dask_address, caplog,
                      transform_graph=None):
  """``{runner: {file: bytes}}`` of the executor on the DirectRunner and on
  Dask; asserts the side values were computed first exactly when Dask has
  any to compute, and that their folder is gone afterwards."""
  from tfx.dsl.components.base import base_beam_executor  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import component as component_lib  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import executor as executor_lib  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import prepass  # pylint: disable=g-import-not-at-top
  side_values = not props.get('batch_size') or not props.get('feature_columns')
  outs = {}
  for name, args in (('direct', ['--direct_running_mode=in_memory']),
                     ('dask', _dask_args(dask_address))):
    out = component_lib.SequenceBatches()
    out.uri = str(tmp_path / name)
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=args)
    caplog.clear()
    with caplog.at_level('INFO', logger=executor_lib.__name__):
      inputs = {'examples': [examples]}
      if transform_graph is not None:
        inputs[executor_lib.TRANSFORM_GRAPH_KEY] = [transform_graph]
      executor_lib.Executor(context).Do(inputs, {'batches': [out]},
                                        dict(props))
    first = [r for r in caplog.records if 'computed first' in r.message]
    assert len(first) == (name == 'dask' and side_values), name
    assert not (tmp_path / name / prepass.FOLDER).exists()
    outs[name] = helpers.list_files(out.uri)
  return outs


_PROPS = {'key_column': 'seq_id', 'order_column': 't',
          'label_column': 'label', 'label_kind': 'per_sequence',
          'batch_size': None, 'num_unroll': None, 'mode': 'packed',
          'feature_columns': None, 'exclude_columns': '[]'}


@pytest.mark.parametrize('given', [
    {},  # layout chosen from train, feature names inferred
    {'batch_size': 3, 'num_unroll': 4, 'feature_columns': '["x"]'},
], ids=['side_values', 'no_side_values'])
def test_executor_on_dask_writes_the_direct_runners_bytes(tmp_path,
                                                          dask_address,
                                                          given, caplog):
  """The TFX executor itself on Dask: two splits of gzipped Examples, every
  split written as on the DirectRunner. Values derived from the data (the
  layout chosen from the train split, feature names inferred) are computed
  by a pipeline of their own first (``prepass``: the DaskRunner would
  compute a side input's upstream again in every task reading it); the
  train split is in two files, read in record batches per file there."""
  from tests.components.sequence_batcher import test_executor as tex  # pylint: disable=g-import-not-at-top
  splits = {split: [tex._row(f'{split}{i}', t, float(i + t), i % 2)  # pylint: disable=protected-access
                    for i in range(n) for t in range(3 + (i * 5) % 11)]
            for split, n in (('train', 9), ('eval', 4))}
  examples = tex._examples_artifact(str(tmp_path), splits)  # pylint: disable=protected-access
  train_dir = tmp_path / 'examples' / 'Split-train'
  half = len(splits['train']) // 2
  (train_dir / 'data_tfrecord-00000-of-00001.gz').unlink()
  for i, part in enumerate((splits['train'][:half], splits['train'][half:])):
    tex._write_gz_tfrecord(str(train_dir / f'part-{i}.gz'), part)  # pylint: disable=protected-access
  outs = _executor_outputs(tmp_path, examples, {**_PROPS, **given},
                           dask_address, caplog)
  assert {'Split-train', 'Split-eval'} <= {
      f.split('/')[0] for f in outs['direct']}
  assert outs['dask'] == outs['direct']


def test_executor_on_dask_reads_sequence_examples(tmp_path, dask_address,
                                                   caplog):
  from tfx.proto import example_gen_pb2  # pylint: disable=g-import-not-at-top
  from tests.components.sequence_batcher import test_executor as tex  # pylint: disable=g-import-not-at-top
  records = {split: [tex._seq_example(f'{split}{i}',  # pylint: disable=protected-access
                                      [float(i + t) for t in range(1 + i)],
                                      i % 2) for i in range(n)]
             for split, n in (('train', 7), ('eval', 3))}
  examples = tex._examples_artifact(  # pylint: disable=protected-access
      str(tmp_path), records,
      payload=example_gen_pb2.PayloadFormat.FORMAT_TF_SEQUENCE_EXAMPLE)
  outs = _executor_outputs(tmp_path, examples,
                           {**_PROPS, 'order_column': None}, dask_address,
                           caplog)
  assert any(f.startswith('Split-eval/') for f in outs['direct'])
  assert outs['dask'] == outs['direct']


@pytest.mark.parametrize('given', [
    {'feature_columns': '["a"]'},  # layout chosen from train
    {'batch_size': 2, 'num_unroll': 4, 'feature_columns': '["a"]'},
], ids=['side_values', 'no_side_values'])
def test_executor_on_dask_applies_a_transform_graph_as_direct(
    tmp_path, dask_address, given, caplog):
  """Raw rows and a transform graph (``transform_stage``), on Dask and on
  the DirectRunner: the same bytes."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tests.components.sequence_batcher import test_transform_stage as tts  # pylint: disable=g-import-not-at-top
  from tests.components.sequence_batcher import test_executor as tex  # pylint: disable=g-import-not-at-top
  rows = tts.rows()
  splits = {'train': helpers.examples(r for r in rows if r['seq_id'] != 'k2'),
            'eval': helpers.examples(r for r in rows if r['seq_id'] == 'k2')}
  examples = tex._examples_artifact(str(tmp_path), splits)  # pylint: disable=protected-access
  graph = standard_artifacts.TransformGraph()
  graph.uri = tts.write_graph(tmp_path)
  outs = _executor_outputs(tmp_path, examples, {**_PROPS, **given},
                           dask_address, caplog, transform_graph=graph)
  assert {'Split-train', 'Split-eval'} <= {
      f.split('/')[0] for f in outs['direct']}
  assert outs['dask'] == outs['direct']


def test_side_values_of_an_empty_split_name_it(tmp_path, dask_address):
  """An empty split on Dask: the prepass raises the batching pipeline's own
  one-line error, naming the split."""
  from tfx.dsl.components.base import base_beam_executor  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import component as component_lib  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import executor as executor_lib  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import sequences as seqlib  # pylint: disable=g-import-not-at-top
  from tests.components.sequence_batcher import test_executor as tex  # pylint: disable=g-import-not-at-top
  examples = tex._examples_artifact(str(tmp_path), {  # pylint: disable=protected-access
      'train': [tex._row('a', t, 1.0, 0) for t in range(4)],  # pylint: disable=protected-access
      'eval': []})
  out = component_lib.SequenceBatches()
  out.uri = str(tmp_path / 'out')
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=_dask_args(dask_address))
  with pytest.raises(seqlib.InputDataError, match="split 'eval'.*no rows"):
    executor_lib.Executor(context).Do(
        {'examples': [examples]}, {'batches': [out]},
        {'key_column': 'seq_id', 'order_column': 't', 'label_column': 'label',
         'label_kind': 'per_sequence', 'batch_size': None,
         'num_unroll': None, 'mode': 'packed', 'feature_columns': None,
         'exclude_columns': '[]'})
