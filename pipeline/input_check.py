"""The local runner's check of its input before the pipeline starts.

Every file the pipeline's ExampleGen will read is read here with the
SequenceBatcher's own readers and checks (``decode``, ``sequences``): the
same rules, so an input that passes here passes the batcher, and an input
that fails stops the run at once with the batcher's one-line error naming
the file, sequence key and row, before ExampleGen, Transform or the trainer
spend any time, and before anything can be blessed or pushed. The module
file is imported (a module file is trusted code: importing it runs it).

What is checked, per split (``train/`` and ``eval/`` folders, or the files
of the data root, which ExampleGen splits by a hash of the key):

* CSV: every file has a UTF-8 header naming the key, order and label
  columns (and the named features), the same header in every file of a split
  (ExampleGen needs it), and data lines with as many fields as the header;
  every sequence is then built as the batcher builds it (missing or
  non-numeric values, NaN or infinity, duplicate ``(key, order)`` rows, a
  per-sequence label that changes, a sequence longer than
  ``max_sequence_length``, ...);
* SequenceExamples: every file is a readable TFRecord file (a corrupt one is
  named), every record a ``tf.train.SequenceExample`` decoded and built as
  the batcher does, every key in one record only;
* no split is empty, including the eval split that ExampleGen's hash of the
  key would give.

The data is read in one process: the local runner's input is local.
"""

from __future__ import annotations

import bisect
import collections
import glob
import hashlib
import os
from typing import Dict, List, Sequence, Tuple

from components.sequence_batcher import layout
from components.sequence_batcher import sequences as seqlib
from pipeline import pipeline_config

InputDataError = seqlib.InputDataError


def split_files(config: pipeline_config.PipelineConfig
               ) -> Dict[str, List[str]]:
  """The files ExampleGen reads, per split (``input`` when it splits them
  itself by the hash of the key)."""
  root = config.data_root
  if all(os.path.isdir(os.path.join(root, s)) for s in ('train', 'eval')):
    patterns = {'train': os.path.join(root, 'train', '*'),
                'eval': os.path.join(root, 'eval', '*')}
  else:
    patterns = {'input': os.path.join(root, '*')}
  out = {}
  for split, pattern in patterns.items():
    paths = sorted(glob.glob(pattern))
    if not paths:
      raise InputDataError(f'{pattern}: no files')
    for path in paths:
      if os.path.isdir(path):
        raise InputDataError(f'{path}: a directory where ExampleGen reads '
                             'data files')
      if not os.access(path, os.R_OK):
        raise InputDataError(f'{path}: not readable (permission denied)')
    out[split] = paths
  return out


def _columns(config: pipeline_config.PipelineConfig) -> seqlib.ColumnConfig:
  return seqlib.ColumnConfig(
      key_column=config.key_column,
      order_column=config.order_column or None,
      label_column=config.label_column or None,
      feature_columns=config.feature_columns or None,
      exclude_columns=tuple(config.exclude_columns))


def _layout(config: pipeline_config.PipelineConfig) -> layout.LayoutConfig:
  return layout.LayoutConfig(
      batch_size=config.batch_size or 1, num_unroll=config.num_unroll or 1,
      mode=config.mode, label_kind=config.label_kind,
      max_sequence_length=config.max_sequence_length,
      truncate=config.truncate)


def _csv_chunks(paths: Sequence[str], columns: seqlib.ColumnConfig
               ) -> Tuple[List[seqlib.RowChunk], Dict[str, List[str]]]:
  from components.sequence_batcher import read_stage  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import decode  # pylint: disable=g-import-not-at-top
  headers = {}
  for path in paths:  # The batcher's header checks, file by file.
    headers.update(read_stage.read_csv_headers(path.replace('[', '[[]'),
                                            columns))
  first = paths[0]
  for path in paths[1:]:
    if headers[path] != headers[first]:
      raise InputDataError(
          f'{path}: its header {headers[path]} differs from that of {first} '
          f'{headers[first]} (the files of a split share one header)')
  chunks = []
  for path in paths:
    chunks += list(decode.read_csv_file(path, columns))
  return chunks, headers


def _tfrecords(path: str):
  """The records of one TFRecord file; a corrupt file is named."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  compression = 'GZIP' if path.endswith('.gz') else ''  # As Beam reads it.
  try:
    for record in tf.data.TFRecordDataset(
        path, compression_type=compression).as_numpy_iterator():
      yield record
  except (tf.errors.DataLossError, tf.errors.OpError) as e:
    detail = ' '.join(str(e.message).split())[:200]
    raise InputDataError(f'{path}: not a readable TFRecord file '
                         f'({type(e).__name__}: {detail})') from None


def _sequence_example_chunks(paths: Sequence[str],
                             columns: seqlib.ColumnConfig
                            ) -> Tuple[List[seqlib.RowChunk], Dict[str, bytes]]:
  """Chunks, and each key's serialized context feature (what ExampleGen
  hashes to split)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from google.protobuf import message  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import decode  # pylint: disable=g-import-not-at-top
  chunks, features = [], {}
  for path in paths:
    for i, record in enumerate(_tfrecords(path)):
      try:
        chunk = decode.decode_sequence_example(record, columns,
                                               f'{path} (record {i})')
      except message.DecodeError:
        raise InputDataError(f'{path}: record {i} is not a '
                             'tf.train.SequenceExample') from None
      chunks.append(chunk)
      features[chunk.key] = tf.train.SequenceExample.FromString(
          record).context.feature[columns.key_column].SerializeToString(
              deterministic=True)
  return chunks, features


def _text_key_feature(key: str) -> bytes:
  """The serialized key feature the CSV ExampleGen writes (text keys)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[key.encode('utf-8')])).SerializeToString(deterministic=True)


def _partition(feature: bytes, buckets: List[int]) -> int:
  """The split ExampleGen gives a key (TFX 1.16's hash partition: sha256 of
  the serialized partition feature, modulo the buckets)."""
  digest = hashlib.sha256(feature).hexdigest()
  return bisect.bisect(buckets, int(digest, 16) % buckets[-1])


def check_input(config: pipeline_config.PipelineConfig) -> Dict[str, int]:
  """Raises ``InputDataError`` (one line: file, key, row) on bad input, or
  ``ModuleError`` for a module file that does not import; returns the
  number of sequences per split."""
  if config.module_file:
    from components.stateful import model_io  # pylint: disable=g-import-not-at-top
    model_io.resolve_module(config.module_file)
  columns = _columns(config)
  layout_config = _layout(config)
  counts = {}
  for split, paths in split_files(config).items():
    if config.input_format == 'csv':
      chunks, _ = _csv_chunks(paths, columns)
      features = None
    else:
      chunks, features = _sequence_example_chunks(paths, columns)
    where = paths[0] if len(paths) == 1 else os.path.dirname(paths[0])
    if not chunks:
      raise InputDataError(f'{where}: no data rows (an empty split)')
    by_key: Dict[str, List[seqlib.RowChunk]] = collections.defaultdict(list)
    for chunk in chunks:
      by_key[chunk.key].append(chunk)
    if config.input_format != 'csv':
      for key, parts in by_key.items():
        if len(parts) > 1:
          raise InputDataError(
              f'{parts[0].source}, {parts[1].source}: the key {key!r} names '
              'more than one SequenceExample')
    names = list(columns.feature_columns or columns.candidate_features(
        set().union(*(c.columns for c in chunks))))
    if not names:
      raise InputDataError(f'{where}: no feature column (every column is '
                           'the key, order, label or excluded)')
    for key in sorted(by_key):
      seqlib.build_sequence(key, by_key[key], names, columns, layout_config)
    if split == 'input':
      buckets = [config.train_hash_buckets,
                 config.train_hash_buckets + config.eval_hash_buckets]
      sizes = collections.Counter(
          _partition(features[k] if features else _text_key_feature(k),
                     buckets) for k in by_key)
      for index, name in enumerate(('train', 'eval')):
        if not sizes[index]:
          raise InputDataError(
              f'{config.data_root}: the {split!r} files hold '
              f'{len(by_key)} sequence(s), and the hash of their keys puts '
              f'none in the {name} split; add sequences, or give train/ and '
              'eval/ folders')
      counts.update(train=sizes[0], eval=sizes[1])
    else:
      counts[split] = len(by_key)
  return counts
