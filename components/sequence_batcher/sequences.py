"""Rows -> whole sequences, with the input checks. Plain NumPy, no TF or Beam.

Rows arrive in *chunks*: all rows of one sequence key found in one bundle of
input, as columns (``RowChunk``). Chunks of a key are merged, ordered by the
order column and checked (``build_sequence``), so the hot path handles whole
sequences as arrays, never a Python object per time step.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from components.declared import setting
from components.sequence_batcher import layout
from components.sequence_batcher import order_values as order_values_lib


class InputDataError(ValueError):
  """Bad input data; the message names the source, sequence key and row."""


@dataclasses.dataclass(frozen=True)
class ColumnConfig:
  """Which input columns mean what. Each field's help text is in its
  metadata (``components/declared.py``): the one declaration of the column
  settings, taken over by the pipeline's ``PipelineConfig``.
  """
  key_column: str = setting('seq_id', 'rows sharing its value form one '
                            'sequence')
  order_column: Optional[str] = setting(
      't', 'orders the rows of a sequence (a timestamp or step index); '
      "duplicates are an error; unset ('') only for SequenceExamples, whose "
      "feature lists' order is used")
  label_column: Optional[str] = setting(
      'label', "the target; unset ('') for unlabeled data (labels are "
      'zeros, label_weight zero everywhere)')
  feature_columns: Optional[Tuple[str, ...]] = setting(
      None, 'the features, in order, comma-separated; a non-numeric one is '
      'an error', shown='every other column, sorted by name')
  exclude_columns: Tuple[str, ...] = setting(
      (), 'columns that are neither key, order, label nor feature (ignored)')

  def __post_init__(self):
    if not self.key_column:
      raise ValueError('key_column must be set')
    if self.feature_columns is not None:
      object.__setattr__(self, 'feature_columns', tuple(self.feature_columns))
      if not self.feature_columns:
        raise ValueError('feature_columns, when given, must not be empty')
      special = {self.key_column, self.order_column, self.label_column}
      clash = sorted(special.intersection(self.feature_columns) - {None})
      if clash:
        raise ValueError(f'{clash} cannot be both a feature and the key, '
                         'order or label column')
    object.__setattr__(self, 'exclude_columns', tuple(self.exclude_columns))

  @property
  def reserved(self) -> Tuple[str, ...]:
    named = (self.key_column, self.order_column, self.label_column)
    return tuple(c for c in named if c) + self.exclude_columns

  def candidate_features(self, columns: Iterable[str]) -> List[str]:
    """Feature columns among ``columns`` when none were named."""
    reserved = set(self.reserved)
    return sorted(c for c in columns if c not in reserved)


@dataclasses.dataclass
class RowChunk:
  """Some rows of one sequence, as columns.

  Attributes:
    key: the sequence key.
    source: where the rows came from (a file name or split), for errors.
    columns: column name -> values [n] (int64, float64 or object for text).
    missing: column name -> bool[n], True where a row has no value; only for
      columns where some row misses it.
  """
  key: str
  source: str
  columns: Dict[str, np.ndarray]
  missing: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  @property
  def num_rows(self) -> int:
    for values in self.columns.values():
      return int(values.shape[0])
    return 0


def key_to_str(value, source: str = 'input') -> str:
  """Sequence keys are compared as text: b'a' and 'a' are the same key.

  Raises ``InputDataError`` naming ``source`` for a key that is not UTF-8.
  """
  if isinstance(value, bytes):
    try:
      return value.decode('utf-8')
    except UnicodeDecodeError:
      raise InputDataError(f'{source}: the sequence key {value!r} is not '
                           'UTF-8 text') from None
  if isinstance(value, (float, np.floating)) and float(value).is_integer():
    return str(int(value))
  return str(value)


def chunk_rows(keys: Sequence, columns: Dict[str, np.ndarray],
               missing: Dict[str, np.ndarray], source: str,
               key_column: str) -> List[RowChunk]:
  """Splits columnar rows into one ``RowChunk`` per key (vectorised).

  Args:
    keys: the key column's value of every row (already text).
    columns: other columns, each [n].
    missing: as in ``RowChunk``.
    source: for error messages.
    key_column: its name, for error messages.
  """
  keys = np.asarray(keys, dtype=object)
  if keys.size == 0:
    return []
  if key_column in missing and missing[key_column].any():
    row = int(np.argmax(missing[key_column]))
    raise InputDataError(f'{source}: a row has no value for the key column '
                         f'{key_column!r} (row {row} of its bundle: '
                         f'{_describe_row(columns, row)})')
  names, codes = np.unique(keys, return_inverse=True)
  return chunk_rows_by_code(codes, [str(n) for n in names], columns, missing,
                            source)


def chunk_rows_by_code(codes: np.ndarray, key_names: Sequence[str],
                       columns: Dict[str, np.ndarray],
                       missing: Dict[str, np.ndarray],
                       source: str) -> List[RowChunk]:
  """Like ``chunk_rows`` with keys given as codes: row i has key
  ``key_names[codes[i]]``. Sorting integer codes keeps this vectorised."""
  codes = np.asarray(codes)
  if codes.size == 0:
    return []
  order = np.argsort(codes, kind='stable')
  sorted_codes = codes[order]
  bounds = np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1
  starts = np.concatenate([[0], bounds])
  ends = np.concatenate([bounds, [len(codes)]])
  chunks = []
  for s, e in zip(starts, ends):
    idx = order[s:e]
    chunks.append(RowChunk(
        key=key_names[int(sorted_codes[s])], source=source,
        columns={n: v[idx] for n, v in columns.items()},
        missing={n: m[idx] for n, m in missing.items() if m[idx].any()}))
  return chunks


def _describe_row(columns: Dict[str, np.ndarray], row: int) -> str:
  return ', '.join(f'{n}={v[row]!r}' for n, v in sorted(columns.items())[:6])


def _numeric(values: np.ndarray, what: str, key: str, sources: str,
             order_values: Optional[np.ndarray]) -> np.ndarray:
  """Returns ``values`` as int64/float64 or raises naming the bad row."""
  if values.dtype.kind == 'b':  # pandas reads true/false as booleans.
    raise InputDataError(
        f'{sources}: sequence {key!r}{_where(order_values, 0)}: {what} has '
        f'the non-numeric value {str(values[0]).lower()!r} (true/false are '
        'not numbers; write 1/0)')
  if values.dtype != object:
    return values
  for i, v in enumerate(values):
    try:
      float(v)
    except (TypeError, ValueError):
      where = _where(order_values, i)
      raise InputDataError(
          f'{sources}: sequence {key!r}{where}: {what} has the non-numeric '
          f'value {v!r}') from None
  as_float = values.astype(np.float64)
  return as_float


def _where(order_values: Optional[np.ndarray], i: int) -> str:
  if order_values is None:
    return f' step {i}'
  return f' at order value {_shown(order_values[i])}'


def _shown(value) -> str:
  """An order value as written (text as is, numbers as their repr)."""
  return value if isinstance(value, str) else repr(value)


def merge_chunks(key: str, chunks: Iterable[RowChunk]) -> RowChunk:
  """Concatenates the chunks of one key (columns absent from a chunk missing)."""
  chunks = list(chunks)
  names = sorted(set().union(*(c.columns for c in chunks)))
  sources = sorted({c.source for c in chunks})
  columns, missing = {}, {}
  for name in names:
    parts, holes = [], []
    for c in chunks:
      n = c.num_rows
      if name in c.columns:
        parts.append(c.columns[name])
        holes.append(c.missing.get(name, np.zeros(n, bool)))
      else:
        parts.append(np.zeros(n, np.float64))
        holes.append(np.ones(n, bool))
    if any(p.dtype == object for p in parts):
      parts = [p.astype(object) for p in parts]
    columns[name] = np.concatenate(parts)
    hole = np.concatenate(holes)
    if hole.any():
      missing[name] = hole
  return RowChunk(key=key, source=', '.join(sources), columns=columns,
                  missing=missing)


def build_sequence(key: str, chunks: Iterable[RowChunk],
                   feature_names: Sequence[str], columns: ColumnConfig,
                   config: layout.LayoutConfig,
                   class_names: Optional[Sequence[str]] = None
                  ) -> layout.SequenceArrays:
  """Merges, orders and checks the rows of one sequence.

  Raises ``InputDataError`` naming the source, key and row on: a missing
  order/feature/label value, a non-numeric value, NaN or infinity in a
  feature, duplicate order values, a per-sequence label that changes, or a
  sequence longer than ``max_sequence_length`` (unless truncating).

  ``class_names``: where the labels are already class indices (the input
  check's class vocabulary), their names, for the error messages.

  Returns:
    ``SequenceArrays`` with ``features`` float32[L, F] in feature_names order
    and ``labels`` int64[L] (integral labels) or float32[L].
  """
  row = merge_chunks(key, chunks)
  src = row.source
  n = row.num_rows
  if n == 0:
    raise InputDataError(f'{src}: sequence {key!r} has no time steps')
  order_values = None
  if columns.order_column:
    oc = columns.order_column
    if oc not in row.columns or oc in row.missing:
      raise InputDataError(
          f'{src}: sequence {key!r}: {_count_missing(row, oc, n)} of its rows '
          f'have no value for the order column {oc!r}')
    try:
      order_keys, _ = order_values_lib.sort_keys(row.columns[oc])
    except order_values_lib.OrderValueError as e:
      raise InputDataError(f'{src}: sequence {key!r}: order column {oc!r}: '
                           f'{e}') from None
    perm = np.argsort(order_keys, kind='stable')
    order_keys = order_keys[perm]
    order_values = order_values_lib.display(row.columns[oc])[perm]
    dup = np.flatnonzero(order_keys[1:] == order_keys[:-1])
    if dup.size:
      raise InputDataError(
          f'{src}: sequence {key!r} has duplicate rows: more than one row '
          f'with {oc}={_shown(order_values[dup[0]])} ({dup.size} duplicates '
          'in all)')
  else:
    perm = np.arange(n)

  feats = np.empty((n, len(feature_names)), dtype=np.float32)
  for j, name in enumerate(feature_names):
    if name not in row.columns or name in row.missing:
      hole = row.missing.get(name, np.ones(n, bool))[perm]
      where = _where(order_values, int(np.argmax(hole)))
      raise InputDataError(
          f'{src}: sequence {key!r}{where}: no value for feature {name!r} '
          f'({int(hole.sum())} of {n} rows miss it)')
    values = _numeric(row.columns[name][perm], f'feature {name!r}', key, src,
                      order_values)
    bad = ~np.isfinite(values.astype(np.float64))
    if bad.any():
      i = int(np.argmax(bad))
      raise InputDataError(
          f'{src}: sequence {key!r}{_where(order_values, i)}: feature '
          f'{name!r} is {values[i]!r} (NaN and infinity are not allowed)')
    _within_float32(values, f'feature {name!r}', key, src, order_values)
    feats[:, j] = values

  if columns.label_column:
    lc = columns.label_column
    if lc not in row.columns or lc in row.missing:
      hole = row.missing.get(lc, np.ones(n, bool))[perm]
      raise InputDataError(
          f'{src}: sequence {key!r}{_where(order_values, int(np.argmax(hole)))}'
          f': no value for the label column {lc!r}')
    labels = _numeric(row.columns[lc][perm], f'label {lc!r}', key, src,
                      order_values)
    if labels.dtype.kind == 'f' and not np.isfinite(labels).all():
      i = int(np.argmax(~np.isfinite(labels)))
      raise InputDataError(f'{src}: sequence {key!r}{_where(order_values, i)}'
                           f': label {lc!r} is {labels[i]!r}')
    if labels.dtype.kind == 'f':
      _within_float32(labels, f'label {lc!r}', key, src, order_values)
    if config.label_kind == layout.PER_SEQUENCE:
      # Labels already mapped to class indices are shown by their names.
      shown = ((lambda v: class_names[int(v)]) if class_names else
               (lambda v: v))
      changed = np.flatnonzero(labels != labels[0])
      if changed.size:
        i = int(changed[0])
        raise InputDataError(
            f'{src}: sequence {key!r}: the per-sequence label {lc!r} changes '
            f'within the sequence ({shown(labels[0])!r} at the start, '
            f'{shown(labels[i])!r}{_where(order_values, i)}); use '
            'label_kind=per_step for a per-step target')
    labels = (labels.astype(np.int64) if labels.dtype.kind in 'iu' else
              labels.astype(np.float32))
  else:
    labels = np.zeros(n, np.int64)
  return limit_length(layout.SequenceArrays(
      key=key, features=feats, labels=labels,
      labeled=bool(columns.label_column)), config, src)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _within_float32(values: np.ndarray, what: str, key: str, src: str,
                    order_values: Optional[np.ndarray]) -> None:
  """Refuses a value that is finite as float64 but not as float32 (the
  batches, the model and the transform graph hold float32)."""
  if values.dtype.kind != 'f':
    if values.dtype.kind in 'iu':
      values = values.astype(np.float64)
    else:
      return
  big = np.abs(values) > _FLOAT32_MAX
  if big.any():
    i = int(np.argmax(big))
    raise InputDataError(
        f'{src}: sequence {key!r}{_where(order_values, i)}: {what} is '
        f'{values[i]!r}, beyond float32\'s range (+-3.4e38)')


def _count_missing(row: RowChunk, name: str, n: int) -> str:
  if name not in row.columns:
    return 'all'
  return str(int(row.missing[name].sum()))


def limit_length(seq: layout.SequenceArrays, config: layout.LayoutConfig,
                 source: str) -> layout.SequenceArrays:
  """Applies ``max_sequence_length``: an error, or truncation when asked."""
  cap = config.max_sequence_length
  if cap is None or seq.length <= cap:
    return seq
  if not config.truncate:
    raise InputDataError(
        f'{source}: sequence {seq.key!r} has {seq.length} steps, more than '
        f'max_sequence_length={cap} (set truncate=True to keep its first '
        f'{cap} steps)')
  return layout.SequenceArrays(key=seq.key, features=seq.features[:cap],
                               labels=seq.labels[:cap],
                               truncated=seq.length - cap,
                               labeled=seq.labeled)
