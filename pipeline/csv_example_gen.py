"""CsvExampleGen whose sequence key column is always text.

TFX's CsvExampleGen infers one type per column over the whole input; a key
column of digits becomes int64, so the keys ``007`` and ``7`` would become
one sequence. Keys are text everywhere in this project (the SequenceBatcher's
CSV readers keep them as text too), so this ExampleGen executor reads the
CSV files as TFX's does (the same header checks, the same per-column type
inference over the whole input) except that the key column is always bytes,
with surrounding whitespace stripped as the batcher's CSV readers do.

The key column's name reaches the executor as the component's
``custom_config`` (a ``google.protobuf.Struct`` ``{"key_column": ...}``
packed in ``example_gen_pb2.CustomConfig``), so the compiled Kubeflow
pipeline carries it like any other parameter.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Optional

import apache_beam as beam
import tensorflow as tf
from google.protobuf import json_format
from google.protobuf import struct_pb2
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.csv_example_gen import executor as tfx_csv
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.utils import io_utils
from tfx_bsl.coders import csv_decoder

KEY_COLUMN = 'key_column'


def custom_config(key_column: str) -> example_gen_pb2.CustomConfig:
  """The ExampleGen ``custom_config`` naming the key column."""
  config = example_gen_pb2.CustomConfig()
  config.custom_config.Pack(struct_pb2.Struct(
      fields={KEY_COLUMN: struct_pb2.Value(string_value=key_column)}))
  return config


def key_column_of(exec_properties: Dict[str, Any]) -> str:
  """The key column named by ``custom_config`` (JSON text or the proto)."""
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
  return struct[KEY_COLUMN]


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


class _CsvToExample(beam.PTransform):
  """One split's CSV files -> ``tf.train.Example`` rows, keys as text."""

  def __init__(self, exec_properties: Dict[str, Any], split_pattern: str):
    super().__init__()
    self._pattern = os.path.join(exec_properties['input_base'], split_pattern)
    self._key = key_column_of(exec_properties)

  def expand(self, pipeline):
    files = fileio.glob(self._pattern)
    if not files:
      raise RuntimeError(f'Split pattern {self._pattern} does not match any '
                         'files.')
    names = io_utils.load_csv_column_names(files[0])
    for path in files[1:]:
      if io_utils.load_csv_column_names(path) != names:
        raise RuntimeError(f'Files in same split {self._pattern} have '
                           f'different header ({files[0]}, {path}).')
    if self._key not in names:
      raise ValueError(f'{files[0]}: the key column {self._key!r} is not in '
                       f'the header {names}')
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


class Executor(BaseExampleGenExecutor):
  """TFX's CSV ExampleGen executor with the key column read as text."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    return _CsvToExample


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
