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
   Both steps are in ``csv_blocks.py``.

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
from typing import Any, Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
import tensorflow as tf
from google.protobuf import json_format
from google.protobuf import struct_pb2
from tfx import types
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
from tfx.utils import proto_utils
from tfx_bsl.coders import csv_decoder

from components.sequence_batcher import decode
from pipeline import csv_blocks

_LOG = logging.getLogger(__name__)

KEY_COLUMN = 'key_column'
ORDER_COLUMN = 'order_column'
LABEL_COLUMN = 'label_column'
BLOCK_ROWS_KEY = 'block_rows'
# Rows per block: a block's columns and its serialized examples (about 100
# bytes a row here) stay a few MiB.
BLOCK_ROWS = 65536


def custom_config(key_column: str, block_rows: Optional[int] = None,
                  order_column: Optional[str] = None,
                  label_column: Optional[str] = None
                 ) -> example_gen_pb2.CustomConfig:
  """The ExampleGen ``custom_config`` naming the key column, the order
  column when there is one (both written as text), the label column (the
  block reader writes it as text when it holds text: class names), and,
  when given, the rows per block of the block reader (0: the row-by-row
  path)."""
  fields = {KEY_COLUMN: struct_pb2.Value(string_value=key_column)}
  if order_column:
    fields[ORDER_COLUMN] = struct_pb2.Value(string_value=order_column)
  if label_column:
    fields[LABEL_COLUMN] = struct_pb2.Value(string_value=label_column)
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


def order_column_of(exec_properties: Dict[str, Any]) -> Optional[str]:
  """The order column named by ``custom_config``, or None."""
  struct = _config_struct(exec_properties)
  return struct[ORDER_COLUMN] if ORDER_COLUMN in struct else None


def label_column_of(exec_properties: Dict[str, Any]) -> Optional[str]:
  """The label column named by ``custom_config``, or None."""
  struct = _config_struct(exec_properties)
  return struct[LABEL_COLUMN] if LABEL_COLUMN in struct else None


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

  def __init__(self, key_column: str, order_column: Optional[str] = None):
    super().__init__()
    self._text = {key_column, order_column} - {None}
    self._handlers = None

  def process(self, cells: List[Any],
              column_infos: List[Any]) -> Iterable[tf.train.Example]:
    if self._handlers is None:
      self._handlers = [
          (info.name, _key_handler if info.name in self._text else
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
  headers; and when the header lacks the key column. Hidden files (a name
  starting with ``.``, e.g. an editor's or a file system's side files) are
  not input, as for the input check (``pipeline/input_check.py``, Python's
  ``glob``) that reads the files before the pipeline runs.
  """
  files = [f for f in fileio.glob(pattern)
           if not os.path.basename(f).startswith('.')]
  if not files:
    raise RuntimeError(f'Split pattern {pattern} does not match any files.')
  names = decode.csv_header_names(files[0])
  for path in files[1:]:
    if decode.csv_header_names(path) != names:
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
    self._order = order_column_of(exec_properties)

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
    return cells | 'ToTFExample' >> beam.ParDo(
        _ToExample(self._key, self._order), infos)


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
        kinds, rows = csv_blocks.infer_kinds(
            files, names, key, block_rows, order_column_of(exec_properties),
            label_column_of(exec_properties))
      except csv_blocks.NotBlockReadable as e:
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
             | f'WriteBlocks[{i}]' >> beam.ParDo(csv_blocks.WriteFileBlocks(
                 names=names, kinds=kinds, key_column=key_column_of(
                     exec_properties),
                 block_rows=block_rows_of(exec_properties),
                 order_column=order_column_of(exec_properties),
                 split_uris=split_uris, buckets=plan.buckets,
                 split_config=plan.split_config)))
    for uri in split_uris:
      if not fileio.glob(os.path.join(uri, '*')):
        # A split with no row: one empty file, as TFX's writer leaves.
        with tf.io.TFRecordWriter(
            os.path.join(uri, csv_blocks.shard_name(0, 1)),
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
                         output_config: Optional[example_gen_pb2.Output],
                         order_column: Optional[str] = None,
                         label_column: Optional[str] = None):
  """A ``FileBasedExampleGen`` with id ``CsvExampleGen`` reading CSV files
  with text keys and text order values."""
  from tfx.components.example_gen.component import FileBasedExampleGen  # pylint: disable=g-import-not-at-top
  return FileBasedExampleGen(
      input_base=input_base, input_config=input_config,
      output_config=output_config,
      custom_config=custom_config(key_column, order_column=order_column,
                                  label_column=label_column),
      custom_executor_spec=EXECUTOR_SPEC).with_id('CsvExampleGen')
