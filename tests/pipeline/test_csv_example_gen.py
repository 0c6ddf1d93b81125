"""The CSV ExampleGen's block path writes what its row-by-row path writes.

Each test runs the executor's ``Do`` twice on the same tiny files, once in
blocks (a few rows per block, so files span several blocks) and once row by
row (``block_rows`` 0: TFX's executor with the key as text), and compares
every split's examples (as multisets of parsed features) and the artifact's
properties. (The pipeline-level test of text keys and the hash split is
``test_input_wiring.test_csv_example_gen_keeps_keys_as_text``.)
"""

import collections
import glob
import logging
import os

import pytest
import tensorflow as tf
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from pipeline import csv_blocks
from pipeline import csv_example_gen
from pipeline import pipeline as pipeline_lib

HEADER = 'seq_id,t,x,y,label'


def _run(data, out, block_rows, key='seq_id'):
  input_config, output_config = pipeline_lib.example_gen_configs(
      str(data), key, 4, 1)
  if input_config is None:
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name='single_split', pattern='*')])
  if output_config is None:
    output_config = example_gen_pb2.Output()
  artifact = standard_artifacts.Examples()
  artifact.uri = str(out)
  props = {
      'input_base': str(data),
      'input_config': proto_utils.proto_to_json(input_config),
      'output_config': proto_utils.proto_to_json(output_config),
      'custom_config': proto_utils.proto_to_json(
          csv_example_gen.custom_config(key, block_rows)),
      'output_data_format': example_gen_pb2.FORMAT_TF_EXAMPLE,
      'output_file_format': example_gen_pb2.FORMAT_TFRECORDS_GZIP,
  }
  csv_example_gen.Executor().Do({}, {'examples': [artifact]}, props)
  return artifact


def _feature(value):
  kind = value.WhichOneof('kind')
  values = tuple(getattr(value, kind).value) if kind else ()
  # NaN != NaN: compare it by name.
  return kind, tuple('nan' if v != v else v for v in values)


def _content(uri):
  """{split folder: Counter of examples as sorted (name, kind, values)}."""
  out = {}
  for split in sorted(os.listdir(uri)):
    examples = collections.Counter()
    for path in glob.glob(os.path.join(uri, split, '*')):
      for record in tf.data.TFRecordDataset(path, compression_type='GZIP'):
        example = tf.train.Example.FromString(record.numpy())
        examples[tuple(sorted(
            (name,) + _feature(value)
            for name, value in example.features.feature.items()))] += 1
    out[split] = examples
  return out


def _both_paths(tmp_path, data, caplog, block_rows=3):
  """Runs both paths; returns (block artifact, row artifact, whether the
  block path ran)."""
  with caplog.at_level(logging.INFO):
    caplog.clear()
    blocks = _run(data, tmp_path / 'blocks', block_rows)
    ran_in_blocks = 'rows in blocks' in caplog.text
  rows = _run(data, tmp_path / 'rows', 0)
  assert _content(blocks.uri) == _content(rows.uri)
  for name in ('payload_format', 'file_format'):
    assert (blocks.get_string_custom_property(name) ==
            rows.get_string_custom_property(name))
  assert blocks.split_names == rows.split_names
  return blocks, rows, ran_in_blocks


def _write(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text('\n'.join(lines) + '\n')


def test_blocks_equal_rows_with_text_keys_and_hash_split(tmp_path, caplog):
  """Digit keys stay text ('007' and '7' differ), a key's whitespace is
  stripped; a column that is int in one file and float in another is float
  everywhere; the hash split by key is TFX's; several blocks per file."""
  data = tmp_path / 'data'
  keys = ['007', '7', ' 0007 ', '42', '042', 'a', 'b b', '3']
  first = [HEADER] + [f'{k},{t},{t + i},{i * 10 + t},{i % 2}'
                      for i, k in enumerate(keys[:5]) for t in range(3)]
  second = [HEADER] + [f'{k},{t},{t + i}.5,{i - t},{i % 2}'
                       for i, k in enumerate(keys[5:]) for t in range(4)]
  _write(data / 'a.csv', first)
  _write(data / 'b.csv', second + [''])  # A trailing blank line.
  blocks, _, ran_in_blocks = _both_paths(tmp_path, data, caplog)
  assert ran_in_blocks
  content = _content(blocks.uri)
  assert sum(sum(c.values()) for c in content.values()) == 15 + 12
  keys_seen = {dict((f[0], f[2]) for f in ex)['seq_id'][0]
               for c in content.values() for ex in c}
  assert keys_seen == {k.strip().encode() for k in keys}
  kinds = {f[0]: f[1] for c in content.values() for ex in c for f in ex}
  assert kinds == {'seq_id': 'bytes_list', 't': 'int64_list',
                   'x': 'float_list', 'y': 'int64_list',
                   'label': 'int64_list'}
  # One file per input file and split, named as TFX names its shards.
  names = sorted(os.path.basename(p)
                 for p in glob.glob(os.path.join(blocks.uri, '*', '*')))
  assert set(names) <= {'data_tfrecord-00000-of-00002.gz',
                        'data_tfrecord-00001-of-00002.gz'}


def test_blocks_equal_rows_with_train_and_eval_folders(tmp_path, caplog):
  """train/ and eval/ are used as given, types inferred per split (as TFX
  does): x is int in train and float in eval. A hidden file (a checksum
  file system's, here) is not input, as for the input check."""
  data = tmp_path / 'data'
  _write(data / 'train' / 'part.csv',
         [HEADER] + [f's{i},{t},{t},{t},{i % 2}' for i in range(4)
                     for t in range(5)])
  _write(data / 'train' / '.part.csv.crc', ['not,the,same,header'])
  _write(data / 'eval' / 'part.csv',
         [HEADER] + [f's{i},{t},{t}.25,{t},{i % 2}' for i in range(2)
                     for t in range(5)])
  blocks, _, ran_in_blocks = _both_paths(tmp_path, data, caplog)
  assert ran_in_blocks
  content = _content(blocks.uri)
  assert {k: sum(c.values()) for k, c in content.items()} == {
      'Split-eval': 10, 'Split-train': 20}


@pytest.mark.parametrize('bad_line', [
    's9,0,abc,1,0',   # Text in a numeric column.
    's9,0,,1,0',      # An empty cell.
    's9,0,1,99999999999999999999,0',  # Beyond int64: TFX types it as text.
])
def test_input_blocks_cannot_type_goes_row_by_row(tmp_path, caplog,
                                                  bad_line):
  """What the block reader cannot type as TFX would is read row by row:
  the same output either way."""
  data = tmp_path / 'data'
  _write(data / 'a.csv', [HEADER] + [f's{i},{t},{t}.5,{t},{i % 2}'
                                     for i in range(3) for t in range(3)]
         + [bad_line])
  _, _, ran_in_blocks = _both_paths(tmp_path, data, caplog)
  assert not ran_in_blocks
  assert 'reading row by row' in caplog.text


def test_merge_kinds_and_custom_config():
  assert csv_blocks.merge_kinds(
      {'a': 'int', 'b': 'float'}, {'a': 'float', 'b': 'int', 'c': 'int'}) == {
          'a': 'float', 'b': 'float', 'c': 'int'}
  config = {'custom_config': proto_utils.proto_to_json(
      csv_example_gen.custom_config('k'))}
  assert csv_example_gen.key_column_of(config) == 'k'
  assert csv_example_gen.block_rows_of(config) == csv_example_gen.BLOCK_ROWS
  config = {'custom_config': proto_utils.proto_to_json(
      csv_example_gen.custom_config('k', 0))}
  assert csv_example_gen.block_rows_of(config) == 0
  with pytest.raises(ValueError, match='block_rows'):
    csv_example_gen.custom_config('k', -1)
