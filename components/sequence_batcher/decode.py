"""Input records -> ``RowChunk`` columns: tf.Example rows, CSV lines, and
whole tf.SequenceExamples. Each function takes a bundle of records and returns
one chunk per sequence key in it."""

from __future__ import annotations

import csv
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import tensorflow as tf

from components.sequence_batcher import sequences as seqlib

InputDataError = seqlib.InputDataError


def _columns_from_lists(values: Dict[str, list], n: int
                       ) -> (Dict[str, np.ndarray], Dict[str, np.ndarray]):
  """Python lists with None for missing -> typed arrays + missing masks."""
  columns, missing = {}, {}
  for name, vals in values.items():
    hole = np.fromiter((v is None for v in vals), dtype=bool, count=n)
    filled = [0 if v is None else v for v in vals] if hole.any() else vals
    kinds = {type(v) for v in vals if v is not None}
    if bytes in kinds or str in kinds:
      arr = np.array(filled, dtype=object)
    elif kinds <= {int}:
      arr = np.array(filled, dtype=np.int64)
    else:  # Floats, or ints and floats mixed: never truncate a float.
      arr = np.array(filled, dtype=np.float64)
    columns[name] = arr
    if hole.any():
      missing[name] = hole
  return columns, missing


def decode_examples(records: Sequence[bytes], columns: seqlib.ColumnConfig,
                    source: str) -> List[seqlib.RowChunk]:
  """Serialized ``tf.train.Example`` rows (one time step each) -> chunks.

  Decoded in one vectorised call (tfx_bsl, to Arrow), so no Python object is
  made per row; only the distinct keys become Python strings.
  """
  if not records:
    return []
  return [chunk for batch, part in _decode_batches(list(records), source)
          for chunk in chunks_of_batch(batch, part, columns, source)]


def _decode_batches(records: List[bytes], source: str):
  """Decodes ``records`` with tfx_bsl into Arrow record batches.

  tfx_bsl cannot decode, in one batch, a feature that is int64 in one row and
  float (or bytes) in another; across batches it can. So that the outcome
  does not depend on how a runner bundles the rows, a batch that fails is
  split in halves until every part decodes: each part then has one type per
  column, and the parts meet in ``sequences.merge_chunks``, where int64 and
  float64 values of one column become float64 (whichever bundle they came
  from) and text among numbers is reported by the sequence builder. Only a
  single record that does not decode is an error.

  Yields:
    ``(record_batch, records)`` pairs.
  """
  from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top
  decoder = example_coder.ExamplesToRecordBatchDecoder()
  pending = [records]
  while pending:
    part = pending.pop()
    try:
      batch = decoder.DecodeBatch(part)
    except RuntimeError as e:
      if len(part) == 1:
        raise InputDataError(f'{source}: cannot decode a tf.Example row: '
                             f'{" ".join(str(e).split())}') from e
      half = len(part) // 2
      pending += [part[half:], part[:half]]  # The first half next.
      continue
    yield batch, part


def chunks_of_batch(batch, records: List[bytes],
                     columns: seqlib.ColumnConfig,
                     source: str) -> List[seqlib.RowChunk]:
  """One decoded Arrow record batch of tf.Example rows -> chunks."""
  n = batch.num_rows
  cols, missing = {}, {}
  codes = names = None
  for name, column in zip(batch.schema.names, batch.columns):
    lengths = column.value_lengths().fill_null(0).to_numpy(
        zero_copy_only=False)
    if (lengths > 1).any():
      row = int(np.argmax(lengths > 1))
      raise InputDataError(
          f'{source}: a row has {int(lengths[row])} values for {name!r}; one '
          'value per time step is expected (row: '
          f'{_example_summary(tf.train.Example.FromString(records[row]))})')
    hole = lengths == 0
    values = column.flatten()
    if name == columns.key_column:
      if hole.any():
        row = int(np.argmax(hole))
        raise InputDataError(
            f'{source}: a row has no value for the key column {name!r} (row: '
            f'{_example_summary(tf.train.Example.FromString(records[row]))})')
      encoded = values.dictionary_encode()
      codes = encoded.indices.to_numpy(zero_copy_only=False)
      names = [seqlib.key_to_str(k, source)
               for k in encoded.dictionary.to_pylist()]
      continue
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(
        values.type) or pa.types.is_string(values.type):
      present = np.array(values.to_pylist(), dtype=object)
      full = np.zeros(n, dtype=object)
    else:
      present = values.to_numpy(zero_copy_only=False)
      full = np.zeros(n, dtype=(np.int64 if present.dtype.kind in 'iu' else
                                np.float64))
    full[~hole] = present
    cols[name] = full
    if hole.any():
      missing[name] = hole
  if codes is None:
    raise InputDataError(f'{source}: the key column {columns.key_column!r} is '
                         f'not in the input; columns: {sorted(batch.schema.names)}')
  return seqlib.chunk_rows_by_code(codes, names, cols, missing, source)


def _example_summary(example: tf.train.Example) -> str:
  parts = []
  for name in sorted(example.features.feature)[:6]:
    f = example.features.feature[name]
    kind = f.WhichOneof('kind')
    parts.append(f'{name}={list(getattr(f, kind).value)[:3] if kind else []}')
  return ', '.join(parts)


def header_line(path: str) -> str:
  """The first line of a CSV file (any Beam file system; compressed by its
  extension, as Beam reads it) as text: UTF-8, a byte-order mark dropped.

  The one header rule of every CSV reader here (the input check, the
  pipeline's ExampleGen, the batcher): a UTF-8 byte-order mark is accepted
  and dropped, the names are CSV fields (quotes allowed) with the spaces
  around them stripped (``header_names``).
  """
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  with FileSystems.open(path) as f:
    raw = f.readline()
  try:
    return raw.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    raise InputDataError(
        f'{path}: the header line is not UTF-8 text ({e.reason} at byte '
        f'{e.start}; a compressed file needs its extension, e.g. .csv.gz)'
    ) from None


def header_names(first_line: str, path: str) -> List[str]:
  """The column names of a header line (CSV fields, spaces stripped)."""
  try:
    header = next(csv.reader([first_line]), [])
  except csv.Error as e:
    raise InputDataError(f'{path}: the header line is not CSV text '
                         f'({e})') from None
  return [h.strip() for h in header]


def csv_header_names(path: str) -> List[str]:
  """The column names of a CSV file by the one header rule."""
  return header_names(header_line(path), path)


def read_csv_header(first_line: str, path: str,
                    columns: seqlib.ColumnConfig) -> List[str]:
  """Column names from a CSV file's first line; checks the named columns."""
  header = header_names(first_line, path)
  if not header or not any(header):
    raise InputDataError(f'{path}: empty header line')
  dup = sorted({h for h in header if header.count(h) > 1})
  if dup:
    raise InputDataError(f'{path}: duplicate column names {dup}')
  needed = [c for c in (columns.key_column, columns.order_column,
                        columns.label_column) if c]
  needed += list(columns.feature_columns or ())
  absent = [c for c in needed if c not in header]
  if absent:
    raise InputDataError(f'{path}: column(s) {absent} not in the header '
                         f'{header}')
  return header


def _parse_text_column(texts: List[str]) -> (np.ndarray, Optional[np.ndarray]):
  raw = np.array([t.strip() for t in texts], dtype=object)
  hole = raw == ''
  present = raw[~hole]
  for dtype in (np.int64, np.float64):
    try:
      parsed = np.zeros(len(raw), dtype=dtype)
      parsed[~hole] = present.astype(dtype) if present.size else []
      return parsed, (hole if hole.any() else None)
    except (ValueError, OverflowError):
      continue
  return raw, (hole if hole.any() else None)


def decode_csv_lines(lines: Sequence[str], header: Sequence[str],
                     columns: seqlib.ColumnConfig,
                     source: str) -> List[seqlib.RowChunk]:
  """CSV data lines (no header) of one file -> chunks."""
  try:
    rows = list(csv.reader(lines))
  except csv.Error as e:
    raise InputDataError(f'{source}: not CSV text ({e})') from None
  width = len(header)
  for line, row in zip(lines, rows):
    if len(row) != width:
      raise InputDataError(f'{source}: a line has {len(row)} fields, the '
                           f'header has {width}: {line.strip()[:200]!r}')
  if not rows:
    return []
  cols, missing = {}, {}
  for j, name in enumerate(header):
    if name == columns.key_column:
      # Keys stay text: '007' and '7' are different sequences.
      keys = [r[j].strip() for r in rows]
      if not all(keys):
        bad = lines[keys.index('')]
        raise InputDataError(f'{source}: a line has no value for the key '
                             f'column {name!r}: {bad.strip()[:200]!r}')
      continue
    if name == columns.order_column:  # Exact: sorted as text by the rule
      # of ``order_values``, never through a float.
      raw = np.array([r[j].strip() for r in rows], dtype=object)
      values, hole = raw, (raw == '') if (raw == '').any() else None
    else:
      values, hole = _parse_text_column([r[j] for r in rows])
    cols[name] = values
    if hole is not None:
      missing[name] = hole
  return seqlib.chunk_rows(keys, cols, missing, source, columns.key_column)


def decode_sequence_example(record: bytes, columns: seqlib.ColumnConfig,
                            source: str) -> seqlib.RowChunk:
  """One serialized ``tf.train.SequenceExample`` (a whole sequence) -> chunk.

  The key comes from the context; per-step values from the feature lists,
  one value per step. Every other context feature (a per-sequence label, a
  static covariate) holds one value, copied to every step: it is the label
  or a feature like any other column, unless ``exclude_columns`` names it (or
  ``feature_columns`` leave it out). Without an order feature list the steps
  keep the order of the lists.
  """
  example = tf.train.SequenceExample.FromString(record)
  ctx = example.context.feature
  lists = example.feature_lists.feature_list
  if columns.key_column not in ctx:
    raise InputDataError(f'{source}: a SequenceExample has no context feature '
                         f'{columns.key_column!r} (the key); context: '
                         f'{sorted(ctx)}')
  kf = ctx[columns.key_column]
  kind = kf.WhichOneof('kind')
  kvals = getattr(kf, kind).value if kind else ()
  if len(kvals) != 1:
    raise InputDataError(f'{source}: a SequenceExample has {len(kvals)} values '
                         f'for its key {columns.key_column!r}')
  key = seqlib.key_to_str(kvals[0], source)
  lengths = {name: len(fl.feature) for name, fl in lists.items()}
  if len(set(lengths.values())) > 1:
    raise InputDataError(f'{source}: SequenceExample {key!r} has feature lists '
                         f'of different lengths: {dict(sorted(lengths.items()))}')
  n = next(iter(lengths.values()), 0)
  values: Dict[str, list] = {}
  for name, fl in lists.items():
    col = []
    for i, feature in enumerate(fl.feature):
      k = feature.WhichOneof('kind')
      vals = getattr(feature, k).value if k else ()
      if len(vals) > 1:
        raise InputDataError(f'{source}: SequenceExample {key!r}: step {i} of '
                             f'{name!r} has {len(vals)} values, one expected')
      col.append(vals[0] if len(vals) else None)
    values[name] = col
  # Every context feature but the key is a per-sequence value, copied to
  # every step as a column like any other: the label, or a feature (a static
  # covariate) unless excluded (exclude_columns, or feature_columns that do
  # not name it). Nothing in the context is dropped silently.
  lc = columns.label_column
  for name in sorted(ctx):
    if name == columns.key_column:
      continue
    if name in values:
      raise InputDataError(
          f'{source}: SequenceExample {key!r}: {name!r} is both a context '
          'feature and a feature list; rename one')
    if _ignored(name, columns):
      continue
    cf = ctx[name]
    k = cf.WhichOneof('kind')
    cvals = getattr(cf, k).value if k else ()
    if len(cvals) != 1:
      what = 'the label' if name == lc else 'context feature'
      raise InputDataError(
          f'{source}: SequenceExample {key!r} has {len(cvals)} values for '
          f'{what} {name!r}; one is expected (it is copied to every step; '
          'list it in exclude_columns to ignore it)')
    values[name] = [cvals[0]] * n
  oc = columns.order_column
  if oc and oc not in values:
    values[oc] = list(range(n))
  cols, missing = _columns_from_lists(values, n)
  return seqlib.RowChunk(key=key, source=source, columns=cols, missing=missing)


def _ignored(name: str, columns: seqlib.ColumnConfig) -> bool:
  """A column the batcher does not read: excluded, or not among the named
  feature columns (nor the order or label column)."""
  if name in columns.exclude_columns:
    return True
  return (columns.feature_columns is not None and
          name not in columns.feature_columns and
          name not in (columns.order_column, columns.label_column))


def decode_csv_frame(frame, columns: seqlib.ColumnConfig,
                     source: str) -> List[seqlib.RowChunk]:
  """A block of CSV rows as a pandas DataFrame -> chunks.

  ``frame`` is parsed by pandas' C parser with only empty fields as missing
  (``keep_default_na=False, na_values=['']``), so numeric columns arrive as
  int64/float64 arrays without a Python object per value. A column holding
  any other text (``abc``, but also ``nan`` or ``inf``) arrives as text and is
  converted here; what cannot be converted stays text, and the sequence
  builder reports it if it is a feature, order or label column.
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top
  if frame.empty:
    return []
  header = [str(c) for c in frame.columns]
  if columns.key_column not in header:
    raise InputDataError(f'{source}: the key column {columns.key_column!r} '
                         f'is not in the header {header}')
  cols, missing = {}, {}
  codes = names = None
  for name in header:
    series = frame[name]
    hole = series.isna().to_numpy()
    if name == columns.key_column:
      if hole.any():
        row = int(np.argmax(hole))
        raise InputDataError(
            f'{source}: a row has no value for the key column {name!r}: '
            f'{frame.iloc[row].tolist()}')
      codes, uniques = pd.factorize(series, sort=False)
      stripped = [seqlib.key_to_str(u, source).strip() for u in uniques]
      names = sorted(set(stripped))
      if len(names) != len(stripped):  # ' a' and 'a' are one key.
        index = {k: i for i, k in enumerate(names)}
        codes = np.array([index[k] for k in stripped])[codes]
      else:
        names = stripped
      continue
    if name == columns.order_column:  # Read as text (``read_csv_file``).
      values = series.where(~hole, '').to_numpy(dtype=object)
    elif series.dtype == object:
      numbers = pd.to_numeric(series.where(~hole, '0').str.strip(),
                              errors='coerce')
      failed = numbers.isna().to_numpy() & ~hole
      # 'nan' converts to NaN too: only text that is not a NaN spelling fails.
      failed &= ~series.where(~hole, '').str.strip().str.lower().str.endswith(
          'nan').to_numpy()
      values = (series.to_numpy(dtype=object) if failed.any() else
                numbers.to_numpy())
    else:
      values = series.to_numpy()
      if hole.any():
        values = np.where(hole, 0, values)
    cols[name] = values
    if hole.any():
      missing[name] = hole
  return seqlib.chunk_rows_by_code(np.asarray(codes), names, cols, missing,
                                   source)


def read_csv_file(path: str, columns: seqlib.ColumnConfig,
                  block_rows: int = 65536) -> Iterator[seqlib.RowChunk]:
  """Streams one CSV file (any Beam file system, .gz ok) as chunks, a block of
  ``block_rows`` rows at a time, so memory stays bounded per file."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  names = csv_header_names(path)  # The one header rule.
  with FileSystems.open(path) as f:
    try:
      # Keys stay text: '007' and '7' are different sequences.
      reader = pd.read_csv(f, header=0, names=names, index_col=False,
                           keep_default_na=False, na_values=[''],
                           dtype={c: str for c in (columns.key_column,
                                                   columns.order_column)
                                  if c},
                           chunksize=block_rows, skip_blank_lines=True,
                           skipinitialspace=True, encoding='utf-8-sig')
      for frame in reader:
        yield from decode_csv_frame(frame, columns, path)
    except pd.errors.EmptyDataError:
      raise InputDataError(f'{path}: empty file (no header line)') from None
    except pd.errors.ParserError as e:
      raise InputDataError(f'{path}: {" ".join(str(e).split())}') from None
    except UnicodeDecodeError as e:
      raise InputDataError(f'{path}: not UTF-8 text ({e.reason} at byte '
                           f'{e.start} of a block)') from None
