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
from pipeline import class_labels
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


def _check_output_dir(config: pipeline_config.PipelineConfig) -> None:
  """An output folder inside the input would be read as input next time."""
  data = os.path.realpath(config.data_root)
  out = os.path.realpath(config.output_dir)
  if os.path.commonpath([data, out]) == data:
    raise InputDataError(
        f'--output-dir {config.output_dir} is inside --data-root '
        f'{config.data_root}: the next run would read the outputs as input; '
        'choose an output folder outside the data')


def _csv_features(paths_by_split: Dict[str, List[str]],
                  headers: Dict[str, Dict[str, List[str]]],
                  columns: seqlib.ColumnConfig) -> List[str]:
  """The features, decided once from the first split (train, or the files
  ExampleGen splits) and the flags; every split's files carry each of them,
  and no split has a column the first split lacks (unless excluded)."""
  first = next(iter(paths_by_split))
  first_path = paths_by_split[first][0]
  first_header = headers[first][first_path]
  names = list(columns.feature_columns or
               columns.candidate_features(first_header))
  known = set(first_header) | set(columns.exclude_columns)
  for split, paths in paths_by_split.items():
    for path in paths:
      header = headers[split][path]
      absent = [n for n in names if n not in header]
      if absent:
        raise InputDataError(
            f'{path}: the feature column {absent[0]!r} of the {first} split '
            f'({first_path}) is not in this file\'s header {header}; every '
            'split must carry every feature')
      extra = [c for c in header if c not in known]
      if extra:
        raise InputDataError(
            f'{path}: the column {extra[0]!r} is not in the {first} split '
            f'({first_path}); add it there, or list it in --exclude-columns')
  return names


def check_input(config: pipeline_config.PipelineConfig) -> Dict[str, int]:
  """Raises ``InputDataError`` (one line: file, key, row) on bad input, or
  ``ModuleError`` for a module file that does not import; returns the
  number of sequences per split.

  The features are decided here, once: from the train split's header (or
  the named ``feature_columns``), and every split must carry each of them
  (``feature_names`` gives them).
  """
  return check_input_details(config)[0]


def check_input_details(config: pipeline_config.PipelineConfig
                       ) -> Tuple[Dict[str, int], List[str], int]:
  """``check_input``, also returning the feature names it decided and the
  length of the longest training sequence."""
  _check_output_dir(config)
  if config.module_file:
    from components.stateful import model_io  # pylint: disable=g-import-not-at-top
    model_io.resolve_module(config.module_file)
  columns = _columns(config)
  layout_config = _layout(config)
  counts = {}
  paths_by_split = split_files(config)
  chunks_by_split, features_by_split, headers = {}, {}, {}
  for split, paths in paths_by_split.items():
    if config.input_format == 'csv':
      chunks_by_split[split], headers[split] = _csv_chunks(paths, columns)
      features_by_split[split] = None
    else:
      chunks_by_split[split], features_by_split[split] = (
          _sequence_example_chunks(paths, columns))
  feature_names = None
  if config.input_format == 'csv':
    feature_names = _csv_features(paths_by_split, headers, columns)
  num_classes = None
  if (config.input_format == 'csv' and config.label_column and
      config.task == 'classification'):
    # Class labels as users have them (text, any integers): indices into
    # the training rows' classes, as the pipeline's Transform makes them.
    if 'input' in paths_by_split:
      buckets = [config.train_hash_buckets,
                 config.train_hash_buckets + config.eval_hash_buckets]
      in_train = lambda split, key: _partition(  # pylint: disable=g-long-lambda
          _text_key_feature(key), buckets) == 0
    else:
      in_train = lambda split, key: split == 'train'
    vocabulary = class_labels.vocabulary(config, chunks_by_split, in_train)
    for chunks in chunks_by_split.values():
      class_labels.apply_vocabulary(config, chunks, vocabulary)
    num_classes = max(len(vocabulary), 2)
    class_names = sorted(vocabulary, key=vocabulary.get)
  else:
    class_names = None
  key_sources: Dict[str, Tuple[str, str]] = {}
  built = {}
  for split, paths in paths_by_split.items():
    chunks, features = chunks_by_split[split], features_by_split[split]
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
    for key, parts in by_key.items():  # A key in two splits is a leak.
      if key in key_sources and key_sources[key][0] != split:
        other_split, other = key_sources[key]
        raise InputDataError(
            f'{parts[0].source}: the sequence key {key!r} is in both the '
            f'{other_split} split ({other}) and the {split} split: a '
            'sequence belongs to one split')
      key_sources.setdefault(key, (split, parts[0].source))
    names = feature_names or list(
        columns.feature_columns or columns.candidate_features(
            set().union(*(c.columns for c in chunks))))
    if feature_names is None and config.input_format != 'csv':
      feature_names = names  # The first split decides.
    if not names:
      raise InputDataError(f'{where}: no feature column (every column is '
                           'the key, order, label or excluded)')
    built[split] = {}
    for key in sorted(by_key):
      seq = seqlib.build_sequence(key, by_key[key], names, columns,
                                  layout_config, class_names)
      built[split][key] = (', '.join(sorted({c.source for c in by_key[key]})),
                           seq)
    if split == 'input':
      buckets = [config.train_hash_buckets,
                 config.train_hash_buckets + config.eval_hash_buckets]
      parts = {k: _partition(features[k] if features else _text_key_feature(k),
                             buckets) for k in by_key}
      sizes = collections.Counter(parts.values())
      for index, name in enumerate(('train', 'eval')):
        if not sizes[index]:
          raise InputDataError(
              f'{config.data_root}: the {split!r} files hold '
              f'{len(by_key)} sequence(s), and the hash of their keys puts '
              f'none in the {name} split; add sequences, or give train/ and '
              'eval/ folders')
      counts.update(train=sizes[0], eval=sizes[1])
      built = {name: {k: v for k, v in built['input'].items()
                      if parts[k] == index}
               for index, name in enumerate(('train', 'eval'))}
    else:
      counts[split] = len(by_key)
  if num_classes is None:  # No vocabulary: labels are class indices.
    num_classes = class_labels.check_class_indices(config, built)
  feature_names = list(feature_names or [])
  # The model module: imported, its hooks and hyperparameter keys checked,
  # and build_model called once on this data's spec (a few seconds).
  from components.stateful_trainer import module_check  # pylint: disable=g-import-not-at-top
  module_check.check_module(
      config.module_file, dict(config.hyperparameters),
      len(feature_names), config.task, num_classes,
      label_kind=config.label_kind, feature_names=feature_names)
  longest = max((seq.length for _, seq in built.get('train', {}).values()),
                default=0)
  return counts, feature_names, longest
