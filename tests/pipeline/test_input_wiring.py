"""The batcher's ``max_sequence_length`` / ``truncate`` from both runners'
flags, and the pipeline's CSV ExampleGen keeping sequence keys as text."""

from __future__ import annotations

import glob
import json
import os

import tensorflow as tf

from kubeflow import compile as kubeflow_compile
from pipeline import csv_example_gen
from pipeline import input_check
from pipeline import flags as flags_lib
from pipeline import local_runner
from pipeline import pipeline as pipeline_lib


def _batcher(p):
  return [c for c in p.components if c.id == 'SequenceBatcher'][0]


def test_local_runner_passes_max_sequence_length_and_truncate(tmp_path):
  parser = flags_lib.build_parser()
  for flags, expected in (([], (None, 0)),
                          (['--max-sequence-length', '50'], (50, 0)),
                          (['--max-sequence-length', '50', '--truncate'],
                           (50, 1))):
    args = parser.parse_args(['--data-root', str(tmp_path), *flags])
    config = flags_lib.config_from_args(args)
    p = pipeline_lib.create_pipeline(
        config, pipeline_root=str(tmp_path / 'root'))
    props = _batcher(p).exec_properties
    assert (props['max_sequence_length'], props['truncate']) == expected
  assert '--max-sequence-length' in parser.format_help()
  assert '--truncate' in parser.format_help()


def test_kubeflow_compiler_passes_max_sequence_length_and_truncate(tmp_path):
  path = kubeflow_compile.compile_pipeline([
      '--image', 'gcr.io/p/img:1', '--output-file',
      str(tmp_path / 'pipeline.json'), '--pipeline-root', 'gs://b/root',
      '--data-root', 'gs://b/data', '--max-sequence-length', '40',
      '--truncate'])
  with open(path) as f:
    spec = json.load(f)
  params = spec['pipelineSpec']['root']['dag']['tasks']['SequenceBatcher'][
      'inputs']['parameters']
  values = {name: next(iter(params[name]['runtimeValue'][
      'constantValue'].values())) for name in ('max_sequence_length',
                                               'truncate')}
  assert {k: int(v) for k, v in values.items()} == {
      'max_sequence_length': 40, 'truncate': 1}


def _read_keys(examples_uri: str, split: str):
  files = glob.glob(os.path.join(examples_uri, f'Split-{split}', '*'))
  keys = []
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    ex = tf.train.Example.FromString(record.numpy())
    feature = ex.features.feature['seq_id']
    assert feature.WhichOneof('kind') == 'bytes_list'
    keys += [v.decode() for v in feature.bytes_list.value]
  return keys


def test_csv_example_gen_keeps_keys_as_text(tmp_path):
  """'007', '7' and '0007' are three sequences, even when every key is made
  of digits (TFX's CsvExampleGen infers int64 keys then): the pipeline's
  ExampleGen (run alone) writes them as text keys, and its hash split is the
  one ``input_check`` computes."""
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'data'
  data.mkdir()
  keys = ['007', '7', '0007', '42', '042', '1', '01', '3']  # All digits.
  lines = ['seq_id,t,x,label'] + [f'{k},{t},{t + i},{i % 2}'
                                   for i, k in enumerate(keys)
                                   for t in range(2)]
  (data / 'rows.csv').write_text('\n'.join(lines) + '\n')
  args = flags_lib.build_parser().parse_args(
      ['--data-root', str(data), '--output-dir', str(tmp_path / 'out')])
  config = flags_lib.config_from_args(args)
  full = pipeline_lib.create_pipeline(
      config, pipeline_root=str(tmp_path / 'root'))
  in_pipeline = [c for c in full.components if c.id == 'CsvExampleGen'][0]
  # The same component, built the same way, without its downstream nodes.
  example_gen = csv_example_gen.make_csv_example_gen(
      config.data_root, config.key_column, *pipeline_lib.example_gen_configs(
          config.data_root, config.key_column, config.train_hash_buckets,
          config.eval_hash_buckets), config.order_column, config.label_column)
  assert example_gen.exec_properties == in_pipeline.exec_properties
  assert (example_gen.executor_spec.executor_class is
          in_pipeline.executor_spec.executor_class is csv_example_gen.Executor)
  p = tfx.dsl.Pipeline(
      pipeline_name='keys', pipeline_root=str(tmp_path / 'root'),
      components=[example_gen],
      metadata_connection_config=(
          tfx.orchestration.metadata.sqlite_metadata_connection_config(
              str(tmp_path / 'm.sqlite'))))
  tfx.orchestration.LocalDagRunner().run(p)
  uri = glob.glob(str(tmp_path / 'root' / 'CsvExampleGen' / 'examples' /
                      '*'))[0]
  train, evals = _read_keys(uri, 'train'), _read_keys(uri, 'eval')
  expected = sorted(k.strip() for k in keys for _ in range(2))
  assert sorted(train + evals) == expected
  assert not set(train) & set(evals)  # Split by key, never by row.
  counts = input_check.check_input(config)
  assert counts == {'train': len(set(train)), 'eval': len(set(evals))}


def test_kubeflow_compiler_rejects_a_flag_that_is_neither_ours_nor_beam_s(
    tmp_path, capsys):
  import pytest  # pylint: disable=g-import-not-at-top
  base = ['--image', 'gcr.io/p/img:1', '--output-file',
          str(tmp_path / 'pipeline.json'), '--pipeline-root', 'gs://b/root',
          '--data-root', 'gs://b/data']
  with pytest.raises(SystemExit) as e:
    kubeflow_compile.main(base + ['--batch_size=16'])
  assert e.value.code == 2
  assert 'unrecognized arguments: --batch_size=16' in capsys.readouterr().err
  assert not (tmp_path / 'pipeline.json').exists()
