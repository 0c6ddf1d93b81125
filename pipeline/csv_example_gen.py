"""CsvExampleGen whose sequence key column is always text, reading CSV in blocks.

TFX's CsvExampleGen infers one type per column over the whole input; a key
column of digits becomes int64, so the keys ``007`` and ``7`` would become
one sequence. Keys are text everywhere in this project (the SequenceBatcher's
CSV readers keep them as text too), so this ExampleGen executor reads the
CSV files as TFX's does (the same header checks, the same per-column type
inference over the whole input) except that the key column is always bytes,
with surrounding whitespace stripped as the batcher's CSV readers do.

It writes the same examples as TFX's executor (the same features and types,
the same hash split by the key column, gzipped TFRecord files of
``tf.train.Example`` rows in ``Split-<name>/``, the same artifact
properties), but not row by row: TFX's executor makes every CSV line a Beam
element (parse, infer, build a ``tf.train.Example`` in Python, partition,
serialize, reshuffle, write), about 300 us a row on this project's 2-core
machine. This one

1. infers the column types in a first pass over the files, a block of
   ``BLOCK_ROWS`` rows at a time (pandas' C parser), in the executor process;
2. runs a Beam pipeline with one element per input file: each file is read
   again in blocks, every block is encoded to serialized examples in one
   call (tfx_bsl's ``RecordBatchToExamplesEncoder``, from Arrow columns),
   each distinct key is hashed once to its split (TFX's own partition
   function), and the rows are written to one gzipped TFRecord file per
   (input file, split): ``data_tfrecord-<file>-of-<files>.gz``.

Input that the block reader cannot type exactly as TFX would (a text column
other than the key, an empty cell, a NaN, an integer beyond int64, a column
with no value, a row with a wrong number of fields, duplicate header names)
and ExampleGen settings other than this pipeline's (a split by another
feature or by the whole example, a payload other than ``tf.train.Example``)
go through the row-by-row path (``_CsvToExample``, TFX's executor with the
key as text), so the output never depends on which path ran. Set
``custom_config`` ``block_rows`` to 0 to force the row path.

The key column's name reaches the executor as the component's
``custom_config`` (a ``google.protobuf.Struct`` ``{"key_column": ...}``
packed in ``example_gen_pb2.CustomConfig``), so the compiled Kubeflow
pipeline carries it like any other parameter.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import tensorflow as tf
from google.protobuf import json_format
from google.protobuf import struct_pb2
from tfx import types
from tfx.components.example_gen import base_example_gen_executor
from tfx.components.example_gen import utils
from tfx.components.example_gen import write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.csv_example_gen import executor as tfx_csv
from tfx.components.util import examples_utils
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import proto_utils
from tfx_bsl.coders import csv_decoder

_LOG = logging.getLogger(__name__)

KEY_COLUMN = 'key_column'
BLOCK_ROWS_KEY = 'block_rows'
# Rows per block: a block's columns and its serialized examples (about 100
# bytes a row here) stay a few MiB.
BLOCK_ROWS = 65536
# TFX's ExampleGen file name (``write_split.DEFAULT_FILE_NAME``).
FILE_NAME = 'data_tfrecord'


def custom_config(key_column: str, block_rows: Optional[int] = None
                 ) -> example_gen_pb2.CustomConfig:
  """The ExampleGen ``custom_config`` naming the key column (and, when
  given, the rows per block of the block reader; 0: the row-by-row path)."""
  fields = {KEY_COLUMN: struct_pb2.Value(string_value=key_column)}
  if block_rows is not None:
    if block_rows < 0:
      raise ValueError(f'block_rows must be at least 0, got {block_rows}')
    fields[BLOCK_ROWS_KEY] = struct_pb2.Value(number_value=block_rows)
  config = example_gen_pb2.CustomConfig()
  config.custom_config.Pack(struct_pb2.Struct(fields=fields))
  return config


def _config_struct(exec_properties: Dict[str, Any]) -> struct_pb2.Struct:
  value = exec_properties.get('custom_config')
  if not value:
    raise ValueError('the CSV ExampleGen needs custom_config naming the key '
                     'column (csv_example_gen.custom_config)')
  config = value
  if isinstance(value, str):
    config = example_gen_pb2.CustomConfig()
    json_format.Parse(value, config)
  struct = struct_pb2.Struct()
  if not config.custom_config.Unpack(struct) or KEY_COLUMN not in struct:
    raise ValueError(f'custom_config {json.dumps(str(value))} does not name '
                     'the key column')
  return struct


def key_column_of(exec_properties: Dict[str, Any]) -> str:
  """The key column named by ``custom_config`` (JSON text or the proto)."""
  return _config_struct(exec_properties)[KEY_COLUMN]


def block_rows_of(exec_properties: Dict[str, Any]) -> int:
  """Rows per block of the block reader (``custom_config``; default
  ``BLOCK_ROWS``); 0 means the row-by-row path."""
  struct = _config_struct(exec_properties)
  if BLOCK_ROWS_KEY not in struct:
    return BLOCK_ROWS
  return int(struct[BLOCK_ROWS_KEY])


def _handler(column_type):
  if column_type == csv_decoder.ColumnType.INT:
    return lambda cell: tf.train.Feature(int64_list=tf.train.Int64List(
        value=[int(cell)] if cell else []))
  if column_type == csv_decoder.ColumnType.FLOAT:
    return lambda cell: tf.train.Feature(float_list=tf.train.FloatList(
        value=[float(cell)] if cell else []))
  if column_type == csv_decoder.ColumnType.STRING:
    return lambda cell: tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[cell] if cell else []))
  return lambda cell: tf.train.Feature()  # A column with no value anywhere.


def _key_handler(cell) -> tf.train.Feature:
  text = cell.strip() if cell else b''
  return tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[text] if text else []))


class _ToExample(beam.DoFn):
  """Parsed CSV cells -> ``tf.train.Example`` (the key column as bytes)."""

  def __init__(self, key_column: str):
    super().__init__()
    self._key = key_column
    self._handlers = None

  def process(self, cells: List[Any],
              column_infos: List[Any]) -> Iterable[tf.train.Example]:
    if self._handlers is None:
      self._handlers = [
          (info.name, _key_handler if info.name == self._key else
           _handler(info.type)) for info in column_infos]
    if not cells:  # A blank line.
      return
    if len(cells) != len(self._handlers):
      raise ValueError(f'Invalid CSV line: {len(cells)} fields, the header '
                       f'has {len(self._handlers)}: {cells[:8]}')
    yield tf.train.Example(features=tf.train.Features(feature={
        name: handle(cell) for cell, (name, handle) in zip(cells,
                                                           self._handlers)}))


def split_files(pattern: str, key_column: str) -> Tuple[List[str], List[str]]:
  """The files of one input split and their header (the column names).

  Raises as TFX's CsvExampleGen does: no file, or files with different
  headers; and when the header lacks the key column.
  """
  files = fileio.glob(pattern)
  if not files:
    raise RuntimeError(f'Split pattern {pattern} does not match any files.')
  names = io_utils.load_csv_column_names(files[0])
  for path in files[1:]:
    if io_utils.load_csv_column_names(path) != names:
      raise RuntimeError(f'Files in same split {pattern} have different '
                         f'header ({files[0]}, {path}).')
  if key_column not in names:
    raise ValueError(f'{files[0]}: the key column {key_column!r} is not in '
                     f'the header {names}')
  return files, names


class _CsvToExample(beam.PTransform):
  """One split's CSV files -> ``tf.train.Example`` rows, keys as text (the
  row-by-row path: every line a Beam element, as in TFX's executor)."""

  def __init__(self, exec_properties: Dict[str, Any], split_pattern: str):
    super().__init__()
    self._pattern = os.path.join(exec_properties['input_base'], split_pattern)
    self._key = key_column_of(exec_properties)

  def expand(self, pipeline):
    files, names = split_files(self._pattern, self._key)
    cells = (pipeline
             | 'CreateFilenames' >> beam.Create(files)
             | 'ReadFromText' >> beam.ParDo(
                 tfx_csv._ReadCsvRecordsFromTextFile())  # pylint: disable=protected-access
             | 'ParseCSVLine' >> beam.ParDo(
                 csv_decoder.ParseCSVLine(delimiter=','))
             | 'ExtractParsedCSVLines' >> beam.Keys())
    infos = beam.pvalue.AsSingleton(
        cells | 'InferColumnTypes' >> beam.CombineGlobally(
            csv_decoder.ColumnTypeInferrer(names, skip_blank_lines=True)))
    return cells | 'ToTFExample' >> beam.ParDo(_ToExample(self._key), infos)


# --------------------------------------------------------------------------
# The block path
# --------------------------------------------------------------------------

INT, FLOAT = 'int', 'float'


class NotBlockReadable(Exception):
  """The block reader cannot type this input exactly as TFX's executor
  would; the row-by-row path reads it (the message says why)."""


def read_blocks(path: str, names: Sequence[str], key_column: str,
                block_rows: int) -> Iterator[Any]:
  """The rows of one CSV file (any Beam file system; ``.gz`` by its
  extension, as TFX reads it) as pandas DataFrames of up to ``block_rows``
  rows, header line skipped, the key column as text.

  Numbers are parsed as Python's ``int``/``float`` parse them
  (``float_precision='round_trip'``); only empty cells are missing values.
  Raises ``NotBlockReadable`` where pandas cannot parse the file.
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  with FileSystems.open(path) as f:
    try:
      reader = pd.read_csv(
          f, header=None, skiprows=1, names=list(names), index_col=False,
          dtype={key_column: str}, keep_default_na=False, na_values=[''],
          skip_blank_lines=True, encoding='utf-8',
          float_precision='round_trip', chunksize=block_rows)
      for frame in reader:
        yield frame
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError,
            UnicodeDecodeError) as e:
      raise NotBlockReadable(f'{path}: {" ".join(str(e).split())[:200]}'
                             ) from None


def block_kinds(frame, key_column: str, source: str) -> Dict[str, str]:
  """``{column: INT or FLOAT}`` of one block (the key column left out).

  A column pandas parsed as int64 holds only integers within int64, which
  TFX types INT; float64 without a missing value holds only numbers Python's
  ``float`` parses, and some that ``int`` does not: FLOAT. Anything else
  (text, an empty cell, NaN, bool, a uint64 beyond int64; an empty key) is
  ``NotBlockReadable``.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  kinds = {}
  for name in frame.columns:
    column = frame[name]
    if column.isna().any():
      raise NotBlockReadable(f'{source}: column {name!r} has an empty cell '
                             'or a NaN')
    if name == key_column:
      continue
    if column.dtype == np.int64:
      kinds[name] = INT
    elif column.dtype == np.float64:
      kinds[name] = FLOAT
    else:
      raise NotBlockReadable(f'{source}: column {name!r} is not numeric '
                             f'({column.dtype})')
  return kinds


def merge_kinds(a: Dict[str, str], b: Dict[str, str]) -> Dict[str, str]:
  """Per column, INT and FLOAT give FLOAT (TFX's type order)."""
  out = dict(a)
  for name, kind in b.items():
    out[name] = FLOAT if FLOAT in (kind, out.get(name)) else kind
  return out


def infer_kinds(files: Sequence[str], names: Sequence[str], key_column: str,
                block_rows: int) -> Tuple[Dict[str, str], int]:
  """The column types over every file of one input split (TFX infers them
  per input split) and the number of rows."""
  kinds, rows = {}, 0
  for path in files:
    for frame in read_blocks(path, names, key_column, block_rows):
      kinds = merge_kinds(kinds, block_kinds(frame, key_column, path))
      rows += len(frame)
  missing = [n for n in names if n != key_column and n not in kinds]
  if rows and missing:
    raise NotBlockReadable(f'columns {missing} have no value')
  return kinds, rows


def encode_block(frame, names: Sequence[str], kinds: Dict[str, str],
                 key_column: str, encoder, source: str):
  """One block -> (serialized ``tf.train.Example`` per row, the row's index
  into the block's distinct keys, those keys as stripped bytes).

  The features are those of the row-by-row path: the key as bytes (its
  surrounding whitespace stripped), INT columns as int64, FLOAT columns as
  float (an integer cell through float64, as ``float(cell)``).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  n = len(frame)
  offsets = pa.array(np.arange(n + 1, dtype=np.int64))
  codes, uniques = pd.factorize(frame[key_column], sort=False)
  keys = [str(u).encode('utf-8').strip() for u in uniques]
  if not all(keys):
    raise NotBlockReadable(f'{source}: a key is only whitespace')
  arrays = []
  for name in names:
    if name == key_column:
      values = pa.array(keys, type=pa.large_binary()).take(pa.array(codes))
    elif kinds[name] == INT:
      values = pa.array(frame[name].to_numpy(np.int64))
    else:
      values = pa.array(frame[name].to_numpy(np.float64).astype(np.float32))
    arrays.append(pa.LargeListArray.from_arrays(offsets, values))
  records = encoder.encode(pa.RecordBatch.from_arrays(arrays, list(names)))
  return records, codes, keys


def split_of_key(key: bytes, key_column: str, buckets: Sequence[int],
                 split_config: example_gen_pb2.SplitConfig) -> int:
  """The output split of ``key``: TFX's partition function on an example
  holding only the key (it hashes the key feature alone)."""
  example = tf.train.Example()
  example.features.feature[key_column].bytes_list.value.append(key)
  return base_example_gen_executor._PartitionFn(  # pylint: disable=protected-access
      example, len(buckets), list(buckets), split_config)


def shard_name(index: int, count: int) -> str:
  """The file name of input file ``index`` of ``count`` in a split folder
  (TFX's ``data_tfrecord-<shard>-of-<shards>.gz`` pattern)."""
  return f'{FILE_NAME}-{index:05d}-of-{count:05d}.gz'


class _WriteFileBlocks(beam.DoFn):
  """One CSV file -> its rows as serialized examples, in gzipped TFRecord
  files, one per output split it has rows in; a block at a time."""

  def __init__(self, *, names: Sequence[str], kinds: Dict[str, str],
               key_column: str, block_rows: int, split_uris: Sequence[str],
               buckets: Optional[Sequence[int]],
               split_config: Optional[example_gen_pb2.SplitConfig]):
    super().__init__()
    self._names = list(names)
    self._kinds = dict(kinds)
    self._key = key_column
    self._block_rows = block_rows
    self._split_uris = list(split_uris)
    self._buckets = list(buckets) if buckets else None
    self._split_config = split_config
    self._rows = beam.metrics.Metrics.counter(write_split.METRICS_NAMESPACE,
                                              'num_instances')

  def setup(self):
    from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top
    self._encoder = example_coder.RecordBatchToExamplesEncoder()
    self._split_cache: Dict[bytes, int] = {}

  def _split_indices(self, keys: List[bytes]):
    import numpy as np  # pylint: disable=g-import-not-at-top
    out = np.empty(len(keys), np.int64)
    for i, key in enumerate(keys):
      split = self._split_cache.get(key)
      if split is None:
        split = split_of_key(key, self._key, self._buckets,
                             self._split_config)
        self._split_cache[key] = split
      out[i] = split
    return out

  def process(self, task: Tuple[int, int, int, str]) -> Iterable[Tuple[str,
                                                                       int]]:
    """``task``: (file index, file count, fixed split or -1, path); yields
    (split URI, rows written) per split it wrote."""
    index, count, fixed_split, path = task
    t0 = time.perf_counter()
    options = tf.io.TFRecordOptions(compression_type='GZIP',
                                    compression_level=GZIP_LEVEL)
    writers: Dict[int, Any] = {}
    counts: Dict[int, int] = {}
    try:
      for frame in read_blocks(path, self._names, self._key,
                               self._block_rows):
        records, codes, keys = encode_block(frame, self._names, self._kinds,
                                            self._key, self._encoder, path)
        if fixed_split >= 0:
          rows_split = [fixed_split] * len(records)
        else:
          rows_split = self._split_indices(keys)[codes].tolist()
        for record, split in zip(records, rows_split):
          writer = writers.get(split)
          if writer is None:
            writer = writers[split] = tf.io.TFRecordWriter(
                os.path.join(self._split_uris[split],
                             shard_name(index, count)), options)
            counts[split] = 0
          writer.write(record)
          counts[split] += 1
    finally:
      for writer in writers.values():
        writer.close()
    total = sum(counts.values())
    self._rows.inc(total)
    _LOG.info('CsvExampleGen: %s: %d rows -> %s in %.1f s', path, total,
                 ', '.join(f'{os.path.basename(self._split_uris[s])} '
                           f'{counts[s]}' for s in sorted(counts)),
                 time.perf_counter() - t0)
    for split, rows in counts.items():
      yield self._split_uris[split], rows


# The gzip level of the written files (the format TFX's readers expect;
# level 1 writes them about twice as fast as the default 6, ~20% larger).
GZIP_LEVEL = 1


def _split_configs(exec_properties: Dict[str, Any]
                  ) -> Tuple[example_gen_pb2.Input, example_gen_pb2.Output]:
  """The component's input and output configs, parsed."""
  input_config = example_gen_pb2.Input()
  proto_utils.json_to_proto(
      exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
      input_config)
  output_config = example_gen_pb2.Output()
  proto_utils.json_to_proto(
      exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
      output_config)
  return input_config, output_config


class _BlockPlan:
  """What the block path needs, worked out before its Beam pipeline runs."""

  def __init__(self):
    # (split pattern, files, names, kinds, rows, fixed output split or -1)
    self.inputs: List[Tuple[str, List[str], List[str], Dict[str, str], int,
                            int]] = []
    self.buckets: Optional[List[int]] = None
    self.split_config: Optional[example_gen_pb2.SplitConfig] = None


class Executor(BaseExampleGenExecutor):
  """TFX's CSV ExampleGen executor with the key column read as text, reading
  the CSV files in blocks (the row-by-row path where it must)."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    return _CsvToExample

  def _block_plan(self, exec_properties: Dict[str, Any]
                 ) -> Optional[_BlockPlan]:
    """The block path's plan, or None where the row-by-row path must run
    (logged with the reason)."""
    block_rows = block_rows_of(exec_properties)
    if block_rows <= 0:
      _LOG.info('CsvExampleGen: block_rows is 0: reading row by row')
      return None
    key = key_column_of(exec_properties)
    input_config, output_config = _split_configs(exec_properties)
    payload = exec_properties.get(
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
    if payload not in (None, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE):
      _LOG.info('CsvExampleGen: payload format %s: reading row by row',
                   payload)
      return None
    plan = _BlockPlan()
    splits = output_config.split_config.splits
    if splits:
      config = output_config.split_config
      if config.partition_feature_name != key:
        _LOG.info('CsvExampleGen: the split is not by the key column '
                     '%r: reading row by row', key)
        return None
      plan.buckets = list(itertools.accumulate(s.hash_buckets
                                               for s in splits))
      plan.split_config = config
      patterns = [(input_config.splits[0].pattern, -1)]
    else:
      patterns = [(s.pattern, i) for i, s in enumerate(input_config.splits)]
    for pattern, fixed in patterns:
      full = os.path.join(exec_properties['input_base'], pattern)
      files, names = split_files(full, key)
      t0 = time.perf_counter()
      try:
        kinds, rows = infer_kinds(files, names, key, block_rows)
      except NotBlockReadable as e:
        _LOG.info('CsvExampleGen: %s; reading row by row', e)
        return None
      _LOG.info(
          'CsvExampleGen: %s: %d files, %d rows, column types (%s) inferred '
          'in %.1f s', full, len(files), rows,
          ', '.join(f'{n} {kinds.get(n, "text")}' for n in names),
          time.perf_counter() - t0)
      plan.inputs.append((full, files, names, kinds, rows, fixed))
    return plan

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    """Writes the examples of every split; the artifact's properties as
    TFX's ``BaseExampleGenExecutor.Do`` sets them."""
    plan = self._block_plan(exec_properties)
    if plan is None:
      return super().Do(input_dict, output_dict, exec_properties)
    self._log_startup(input_dict, output_dict, exec_properties)
    t0 = time.perf_counter()
    input_config, output_config = _split_configs(exec_properties)
    examples = output_dict[standard_component_specs.EXAMPLES_KEY]
    artifact = artifact_utils.get_single_instance(examples)
    split_names = utils.generate_output_split_names(input_config,
                                                    output_config)
    artifact.split_names = artifact_utils.encode_split_names(split_names)
    split_uris = [artifact_utils.get_split_uri(examples, name)
                  for name in split_names]
    for uri in split_uris:
      fileio.makedirs(uri)
    with self._make_beam_pipeline() as pipeline:
      for i, (pattern, files, names, kinds, _, fixed) in enumerate(
          plan.inputs):
        tasks = [(j, len(files), fixed, path) for j, path in enumerate(files)]
        _ = (pipeline
             | f'Files[{i}]' >> beam.Create(tasks)
             | f'Spread[{i}]' >> beam.Reshuffle()
             | f'WriteBlocks[{i}]' >> beam.ParDo(_WriteFileBlocks(
                 names=names, kinds=kinds, key_column=key_column_of(
                     exec_properties),
                 block_rows=block_rows_of(exec_properties),
                 split_uris=split_uris, buckets=plan.buckets,
                 split_config=plan.split_config)))
    for uri in split_uris:
      if not fileio.glob(os.path.join(uri, '*')):
        # A split with no row: one empty file, as TFX's writer leaves.
        with tf.io.TFRecordWriter(
            os.path.join(uri, shard_name(0, 1)),
            tf.io.TFRecordOptions(compression_type='GZIP')):
          pass
    payload = exec_properties.get(
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
    file_format = exec_properties.get(
        standard_component_specs.OUTPUT_FILE_FORMAT_KEY,
        example_gen_pb2.FILE_FORMAT_UNSPECIFIED)
    for out in examples:
      if payload:
        examples_utils.set_payload_format(out, payload)
      if file_format:
        examples_utils.set_file_format(
            out, write_split.to_file_format_str(file_format))
    rows = sum(entry[4] for entry in plan.inputs)
    _LOG.info('CsvExampleGen: %d rows in blocks -> %s in %.1f s', rows,
                 ', '.join(split_names), time.perf_counter() - t0)


EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)


def make_csv_example_gen(input_base: str, key_column: str,
                         input_config: Optional[example_gen_pb2.Input],
                         output_config: Optional[example_gen_pb2.Output]):
  """A ``FileBasedExampleGen`` with id ``CsvExampleGen`` reading CSV files
  with text keys."""
  from tfx.components.example_gen.component import FileBasedExampleGen  # pylint: disable=g-import-not-at-top
  return FileBasedExampleGen(
      input_base=input_base, input_config=input_config,
      output_config=output_config, custom_config=custom_config(key_column),
      custom_executor_spec=EXECUTOR_SPEC).with_id('CsvExampleGen')
