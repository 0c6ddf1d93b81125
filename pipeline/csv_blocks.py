"""The block path of the project's CsvExampleGen (``csv_example_gen.py``):
CSV files read a block of rows at a time, encoded to ``tf.train.Example``s
in one call per block, hashed to their split per distinct key, written as
gzipped TFRecord files.

``infer_kinds`` types the columns over every file of an input split first
(TFX's rules: INT unless some value needs FLOAT); ``WriteFileBlocks`` is the
Beam ``DoFn`` that then reads each file again and writes it. Input the block
reader cannot type exactly as TFX would raises ``NotBlockReadable``, and the
executor falls back to the row-by-row path.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import base_example_gen_executor
from tfx.components.example_gen import write_split
from tfx.proto import example_gen_pb2

_LOG = logging.getLogger(__name__)

# TFX's ExampleGen file name (``write_split.DEFAULT_FILE_NAME``).
FILE_NAME = 'data_tfrecord'

INT, FLOAT, TEXT = 'int', 'float', 'text'


class NotBlockReadable(Exception):
  """The block reader cannot type this input exactly as TFX's executor
  would; the row-by-row path reads it (the message says why)."""


def read_blocks(path: str, names: Sequence[str], key_column: str,
                block_rows: int, order_column: Optional[str] = None
               ) -> Iterator[Any]:
  """The rows of one CSV file (any Beam file system; ``.gz`` by its
  extension, as TFX reads it) as pandas DataFrames of up to ``block_rows``
  rows, header line skipped, the key and order columns as text.

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
          dtype={c: str for c in (key_column, order_column) if c},
          keep_default_na=False, na_values=[''], skipinitialspace=True,
          skip_blank_lines=True, encoding='utf-8',
          float_precision='round_trip', chunksize=block_rows)
      for frame in reader:
        yield frame
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError,
            UnicodeDecodeError) as e:
      raise NotBlockReadable(f'{path}: {" ".join(str(e).split())[:200]}'
                             ) from None


def block_kinds(frame, key_column: str, source: str,
                order_column: Optional[str] = None,
                label_column: Optional[str] = None) -> Dict[str, str]:
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
    if name in (order_column, label_column) and column.dtype == object:
      kinds[name] = TEXT  # The order column; text class labels.
    elif column.dtype == np.int64:
      kinds[name] = INT
    elif column.dtype == np.float64:
      kinds[name] = FLOAT
    else:
      raise NotBlockReadable(f'{source}: column {name!r} is not numeric '
                             f'({column.dtype})')
  return kinds


def merge_kinds(a: Dict[str, str], b: Dict[str, str]) -> Dict[str, str]:
  """Per column, INT and FLOAT give FLOAT (TFX's type order); TEXT stays
  TEXT, and TEXT in some blocks and numbers in others is left to the
  row-by-row path (TFX types such a column as text, numbers included)."""
  out = dict(a)
  for name, kind in b.items():
    if TEXT in (kind, out.get(name)) and out.get(name, kind) != kind:
      raise NotBlockReadable(f'column {name!r} holds text and numbers')
    out[name] = FLOAT if FLOAT in (kind, out.get(name)) else kind
  return out


def infer_kinds(files: Sequence[str], names: Sequence[str], key_column: str,
                block_rows: int, order_column: Optional[str] = None,
                label_column: Optional[str] = None
               ) -> Tuple[Dict[str, str], int]:
  """The column types over every file of one input split (TFX infers them
  per input split) and the number of rows."""
  kinds, rows = {}, 0
  for path in files:
    for frame in read_blocks(path, names, key_column, block_rows,
                             order_column):
      kinds = merge_kinds(kinds, block_kinds(frame, key_column, path,
                                             order_column, label_column))
      rows += len(frame)
  missing = [n for n in names if n != key_column and n not in kinds]
  if rows and missing:
    raise NotBlockReadable(f'columns {missing} have no value')
  return kinds, rows


def encode_block(frame, names: Sequence[str], kinds: Dict[str, str],
                 key_column: str, encoder, source: str):
  """One block -> (serialized ``tf.train.Example`` per row, the row's index
  into the block's distinct keys, those keys as stripped bytes).

  The features are those of the row-by-row path: the key and the order
  column as bytes (their surrounding whitespace stripped), INT columns as int64, FLOAT columns as
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
    elif kinds[name] == TEXT:  # The order column (exact, as written), or
      # text class labels.
      values = pa.array([str(v).strip().encode('utf-8')
                         for v in frame[name].to_numpy(dtype=object)],
                        type=pa.large_binary())
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


class WriteFileBlocks(beam.DoFn):
  """One CSV file -> its rows as serialized examples, in gzipped TFRecord
  files, one per output split it has rows in; a block at a time."""

  def __init__(self, *, names: Sequence[str], kinds: Dict[str, str],
               key_column: str, block_rows: int, split_uris: Sequence[str],
               order_column: Optional[str] = None,
               buckets: Optional[Sequence[int]],
               split_config: Optional[example_gen_pb2.SplitConfig]):
    super().__init__()
    self._names = list(names)
    self._kinds = dict(kinds)
    self._key = key_column
    self._order = order_column
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
                               self._block_rows, self._order):
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
