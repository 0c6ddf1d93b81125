"""The SequenceBatcher as Beam transforms.

``BatchSequences`` is the whole thing: time-step rows (serialized
``tf.train.Example``s or CSV lines) or whole sequences (serialized
``tf.train.SequenceExample``s) in; ordered, sharded TFRecord batches and a
``metadata.json`` out, for one split. It only uses Beam primitives
(ParDo, GroupByKey, CoGroupByKey, CombineGlobally), so it runs unchanged on
the Direct, Dask, Dataflow, Flink and Spark runners.

Stages::

  records -> DecodeRows -> (key, RowChunk) -> GroupByKey -> build_sequence
          -> SequenceArrays --(key, length)--> ToList -> LanePlan
  plan placements + sequences -> CoGroupByKey -> cut_segments
          -> (chunk, packed segments) + the plan's chunk ranges -> CoGroupByKey
          -> assemble + write one chunk file (at most CHUNK_BYTES of features)
          -> (shard, chunk stats) -> GroupByKey -> concatenate a shard's chunk
             files in order -> shard stats
  shard stats + plan + row count -> CoGroupByKey -> metadata.json

The lane plan is computed from (key, length) pairs only; the data itself
never goes through a single worker, and no worker holds more than one chunk
of batches (a few MiB) decoded at a time, whatever the input's size.
Data-derived values reach later stages by joins, not side inputs (except the
inferred feature names and the train split's layout choice), so runners that
evaluate side inputs lazily (Beam's DaskRunner) read the input once.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from components.sequence_batcher import layout
from components.sequence_batcher import plan as plan_lib
from components.sequence_batcher import sequences as seqlib
from components.sequence_batcher import write_stage

TF_EXAMPLE = 'tf_example'
SEQUENCE_EXAMPLE = 'sequence_example'
CSV = 'csv'
CSV_FILES = 'csv_files'
INPUT_FORMATS = (TF_EXAMPLE, SEQUENCE_EXAMPLE, CSV, CSV_FILES)

_DECODE_BATCH = 2048
_LOG = logging.getLogger(__name__)


class DecodeRows(beam.PTransform):
  """Records -> ``(key, RowChunk)``, one chunk per key per bundle of input.

  Input elements: serialized ``tf.train.Example`` (``tf_example``),
  ``(file_name, line)`` pairs (``csv``, as ``ReadFromTextWithFilename`` gives
  them, header skipped), CSV file paths (``csv_files``: each file is parsed in
  blocks by pandas' C parser, the fastest path; files are the unit of
  parallelism) or serialized ``tf.train.SequenceExample``
  (``sequence_example``; one chunk per sequence).
  """

  def __init__(self, input_format: str, columns: seqlib.ColumnConfig, *,
               source: str = 'input',
               csv_headers: Optional[Dict[str, List[str]]] = None,
               decode_batch_sizes: Tuple[int, int] = (1, _DECODE_BATCH)):
    """``decode_batch_sizes``: ``(min, max)`` records decoded in one call
    (``beam.BatchElements``, adaptive in between); the output does not
    depend on it (tests fix it to show that)."""
    super().__init__()
    if not 1 <= decode_batch_sizes[0] <= decode_batch_sizes[1]:
      raise ValueError('decode_batch_sizes must be (min, max) with 1 <= min '
                       f'<= max, got {decode_batch_sizes}')
    if input_format not in INPUT_FORMATS:
      raise ValueError(f'input_format must be one of {INPUT_FORMATS}, got '
                       f'{input_format!r}')
    if input_format == CSV and not csv_headers:
      raise ValueError('csv input needs csv_headers (see read_csv_headers)')
    if input_format != SEQUENCE_EXAMPLE and not columns.order_column:
      raise ValueError('row input needs an order_column: rows of a sequence '
                       'have no defined order otherwise')
    self._format = input_format
    self._columns = columns
    self._source = source
    self._headers = csv_headers
    self._batch_sizes = tuple(decode_batch_sizes)

  def expand(self, records):
    # Imported here so that launching a pipeline does not need TF loaded.
    from components.sequence_batcher import decode  # pylint: disable=g-import-not-at-top
    columns, source = self._columns, self._source
    if self._format == SEQUENCE_EXAMPLE:
      if drops_finish_bundle_output(records.pipeline):  # ReadRecords' lists
        records = records | 'Unbatch' >> beam.FlatMap(_as_batch)
      return records | 'DecodeSequenceExamples' >> beam.Map(
          lambda r: _keyed(decode.decode_sequence_example(r, columns, source)))
    if self._format == CSV_FILES:
      return (records
              | 'SpreadFiles' >> beam.Reshuffle()
              | 'ReadCsvFiles' >> beam.FlatMap(
                  lambda path: map(_keyed, decode.read_csv_file(path,
                                                                columns))))
    if drops_finish_bundle_output(records.pipeline):
      # BatchElements emits a bundle's last batch from finish_bundle, whose
      # outputs Beam 2.74's DaskRunner drops (a record per partition is lost
      # even with batches of one): decode the lists ReadRecords reads there,
      # and any other record alone.
      batches = records | 'Batch' >> beam.Map(_as_batch)
    else:
      batches = records | 'Batch' >> beam.BatchElements(
          min_batch_size=self._batch_sizes[0],
          max_batch_size=self._batch_sizes[1])
    if self._format == TF_EXAMPLE:
      return batches | 'DecodeExamples' >> beam.FlatMap(
          lambda rs: map(_keyed, decode.decode_examples(rs, columns, source)))
    headers = self._headers
    return batches | 'DecodeCsv' >> beam.FlatMap(_decode_csv_batch, headers,
                                                 columns)


def _as_batch(record) -> list:
  return record if isinstance(record, list) else [record]


def drops_finish_bundle_output(pipeline: beam.Pipeline) -> bool:
  """True on Beam's DaskRunner, whose ``apply_dofn_to_bundle`` (Beam 2.74)
  collects a partition's outputs before ``finish_bundle`` runs, so whatever a
  DoFn emits there is lost."""
  return type(getattr(pipeline, 'runner', None)).__name__ == 'DaskRunner'


def _keyed(chunk: seqlib.RowChunk) -> Tuple[str, seqlib.RowChunk]:
  return chunk.key, chunk


def _decode_csv_batch(pairs, headers, columns):
  from components.sequence_batcher import decode  # pylint: disable=g-import-not-at-top
  by_file: Dict[str, List[str]] = {}
  for name, line in pairs:
    if line.strip():
      by_file.setdefault(name, []).append(line)
  for name in sorted(by_file):
    header = headers.get(name)
    if header is None:
      raise seqlib.InputDataError(f'{name}: no header was read for this file')
    for chunk in decode.decode_csv_lines(by_file[name], header, columns, name):
      yield chunk.key, chunk


def read_csv_headers(pattern: str, columns: seqlib.ColumnConfig
                    ) -> Dict[str, List[str]]:
  """Reads the header line of every CSV file matching ``pattern``.

  Runs on the launcher and reads one line per file, not the data.
  """
  from components.sequence_batcher import decode  # pylint: disable=g-import-not-at-top
  matches = FileSystems.match([pattern])[0].metadata_list
  if '://' not in pattern:
    # Beam's match leaves out what it cannot read as a file (a directory, a
    # broken link); nothing that matches is skipped silently.
    import glob  # pylint: disable=g-import-not-at-top
    found = {os.path.abspath(m.path) for m in matches}
    for path in sorted(glob.glob(pattern)):
      if os.path.abspath(path) not in found:
        raise seqlib.InputDataError(
            f'{path}: matches {pattern!r} but is not a readable file (a '
            'directory or a broken link)')
  if not matches:
    raise seqlib.InputDataError(f'no file matches {pattern!r}')
  headers = {}
  for meta in sorted(matches, key=lambda m: m.path):
    with FileSystems.open(meta.path) as f:
      raw = f.readline()
    try:
      first = raw.decode('utf-8-sig')
    except UnicodeDecodeError as e:
      raise seqlib.InputDataError(
          f'{meta.path}: the header line is not UTF-8 text ({e.reason} at '
          f'byte {e.start})') from None
    if not first.strip():
      raise seqlib.InputDataError(f'{meta.path}: empty file (no header line)')
    headers[meta.path] = decode.read_csv_header(first, meta.path, columns)
  return headers


def csv_feature_names(paths: Iterable[str], columns: seqlib.ColumnConfig
                     ) -> Optional[List[str]]:
  """The feature columns of CSV files as the workers will see them, when
  every file has the same columns; None when they differ (then they are
  inferred from the rows). Runs on the launcher; reads one line per file.

  The header is read by the same pandas call the workers use
  (``decode.read_csv_file``), so names match theirs exactly.
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top
  seen = None
  for path in paths:
    with FileSystems.open(path) as f:
      try:
        frame = pd.read_csv(f, nrows=0, skipinitialspace=True,
                            encoding='utf-8-sig')
      except (ValueError, UnicodeDecodeError):
        return None  # The workers report it, naming the file and row.
    names = tuple(str(c) for c in frame.columns)
    if seen is not None and names != seen:
      return None
    seen = names
  if seen is None:
    return None
  return columns.candidate_features(seen)


class MatchFilePaths(beam.PTransform):
  """A file pattern -> the paths of the matching files (read by workers)."""

  def __init__(self, pattern: str):
    super().__init__()
    self._pattern = pattern

  def expand(self, pbegin):
    from apache_beam.io import fileio  # pylint: disable=g-import-not-at-top
    return (pbegin
            | 'Pattern' >> beam.Create([self._pattern])
            | 'Match' >> fileio.MatchAll(
                empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
            | 'Path' >> beam.Map(lambda m: m.path))


class ReadRecords(beam.PTransform):
  """A TFRecord file pattern -> its records (``.gz`` files read as GZIP),
  read by the workers: the pattern is the only element created on the
  launcher. Unlike ``beam.io.ReadFromTFRecord`` (a ``beam.io.Read``, which
  Beam 2.74's DaskRunner does not translate) it runs on every runner.

  On the DaskRunner, which drops what ``BatchElements`` emits from
  ``finish_bundle`` (``drops_finish_bundle_output``), the elements are
  lists of up to ``_DECODE_BATCH`` records of one file instead, which
  ``DecodeRows`` decodes in one call: decoding records one by one costs
  about 75 times as much per record (5.2 ms against 68 us, measured on the
  bundled sample's transformed examples).
  """

  def __init__(self, pattern: str):
    super().__init__()
    self._pattern = pattern

  def expand(self, pbegin):
    created = pbegin | 'Pattern' >> beam.Create([self._pattern])
    if not drops_finish_bundle_output(pbegin.pipeline):
      return created | 'Read' >> beam.io.ReadAllFromTFRecord()
    return (created
            | 'Match' >> beam.FlatMap(_matching_files)
            | 'SpreadFiles' >> beam.Reshuffle()
            | 'ReadBatches' >> beam.FlatMap(_record_batches, _DECODE_BATCH))


def _matching_files(pattern: str) -> List[str]:
  return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _record_batches(path: str, size: int) -> Iterable[List[bytes]]:
  """A TFRecord file's records in lists of at most ``size`` (CRCs checked by
  TensorFlow's reader; ``.gz`` read as GZIP, as ``ReadAllFromTFRecord``
  infers from the name)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dataset = tf.data.TFRecordDataset(
      [path], compression_type='GZIP' if path.endswith('.gz') else '')
  for batch in dataset.batch(size).as_numpy_iterator():
    yield list(batch)


class JoinOutputs(beam.PTransform):
  """A tuple of PCollections (e.g. each split's metadata) -> one element, the
  list of all their elements, so that the pipeline has a single leaf: Beam
  2.74's DaskRunner computes only the last leaf of a graph. No side input,
  no default value."""

  def expand(self, pcolls):
    return (tuple(pcolls)
            | 'Flatten' >> beam.Flatten()
            | 'KeyAll' >> beam.Map(lambda x: (None, x))
            | 'GroupAll' >> beam.GroupByKey()
            | 'Values' >> beam.Map(lambda kv: list(kv[1])))


class InferFeatureNames(beam.PTransform):
  """``(key, RowChunk)`` -> a single sorted list of the feature columns."""

  def __init__(self, columns: seqlib.ColumnConfig):
    super().__init__()
    self._columns = columns

  def expand(self, chunks):
    columns = self._columns
    return (chunks
            | 'Names' >> beam.Map(lambda kc: frozenset(kc[1].columns))
            | 'Union' >> beam.CombineGlobally(_union).without_defaults()
            | 'Features' >> beam.Map(columns.candidate_features))


def _union(sets: Iterable[frozenset]) -> frozenset:
  out = set()
  for s in sets:
    out.update(s)
  return frozenset(out)


class BuildSequences(beam.PTransform):
  """``(key, RowChunk)`` -> ``SequenceArrays``: merged, ordered, checked."""

  def __init__(self, columns: seqlib.ColumnConfig,
               config: layout.LayoutConfig, feature_names, *,
               grouped: bool = True):
    """``feature_names``: a list, or a singleton PCollection of one.

    ``grouped=False`` skips the GroupByKey when every key has exactly one
    chunk (SequenceExample input); duplicate keys are then caught by the plan.
    """
    super().__init__()
    self._columns = columns
    self._config = config
    self._names = feature_names
    self._grouped = grouped

  def expand(self, chunks):
    columns, config = self._columns, self._config
    names = self._names
    if isinstance(names, beam.PCollection):
      names = beam.pvalue.AsSingleton(names)
    if self._grouped:
      grouped = chunks | 'GroupRowsByKey' >> beam.GroupByKey()
    else:
      grouped = chunks | 'Single' >> beam.Map(lambda kc: (kc[0], [kc[1]]))
    return grouped | 'Build' >> beam.Map(
        lambda kv, fn: seqlib.build_sequence(kv[0], kv[1], fn, columns,
                                             config), names)


class BatchSequences(beam.PTransform):
  """Sequence data -> ordered batches in one split's folder; returns metadata.

  Example::

    with beam.Pipeline() as p:
      meta = (p
              | beam.io.ReadFromTFRecord('rows-*.tfrecord')
              | BatchSequences('/out/Split-train', split='train',
                               input_format='tf_example',
                               columns=ColumnConfig('seq_id', 't', 'label'),
                               config=LayoutConfig(batch_size=32,
                                                   num_unroll=32)))

  The output PCollection holds one element: the split's metadata dict (also
  written to ``<split_dir>/metadata.json``).
  """

  def __init__(self,
               split_dir: str,
               *,
               split: str = 'train',
               input_format: str = TF_EXAMPLE,
               columns: seqlib.ColumnConfig = seqlib.ColumnConfig(),
               config: layout.LayoutConfig = layout.LayoutConfig(),
               source: Optional[str] = None,
               csv_headers: Optional[Dict[str, List[str]]] = None,
               layout_choice: Optional[beam.PCollection] = None,
               auto_layout: Tuple[bool, bool] = (False, False),
               decode_batch_sizes: Tuple[int, int] = (1, _DECODE_BATCH),
               feature_names: Optional[Sequence[str]] = None,
               chunk_bytes: int = write_stage.CHUNK_BYTES,
               decoded: bool = False):
    """See the class docstring. ``feature_names``: the feature columns when
    ``columns`` names none, if the caller knows them (e.g. from the CSV
    headers, ``csv_feature_names``); otherwise they are inferred from the
    rows. ``chunk_bytes``: features a writer assembles at a time (see
    ``write_stage.WriteChunkFn``; the output does not depend on it).
    ``layout_choice``:
    an optional singleton
    ``(batch_size, num_unroll)`` (e.g. ``plan.ChooseLayout`` of the train
    split) that replaces the fields flagged in ``auto_layout``.
    ``decode_batch_sizes``: see ``DecodeRows``. ``decoded``: the input is
    already ``DecodeRows``' output (``(key, RowChunk)``), e.g. shared with
    ``plan.ChooseLayout`` so that the split is read and decoded once."""
    super().__init__()
    if not split_dir:
      raise ValueError('split_dir must be set')
    if not isinstance(columns, seqlib.ColumnConfig):
      raise TypeError('columns must be a ColumnConfig')
    if not isinstance(config, layout.LayoutConfig):
      raise TypeError('config must be a LayoutConfig')
    self._split_dir = split_dir
    self._split = split
    self._source = source or f'split {split!r}'
    self._decode = DecodeRows(input_format, columns, source=self._source,
                              csv_headers=csv_headers,
                              decode_batch_sizes=decode_batch_sizes)
    self._decoded = bool(decoded)
    self._format = input_format
    self._columns = columns
    self._config = config
    self._choice = layout_choice
    self._auto = tuple(auto_layout)
    if chunk_bytes < 1:
      raise ValueError(f'chunk_bytes must be positive, got {chunk_bytes}')
    self._chunk_bytes = int(chunk_bytes)
    self._feature_names = (tuple(feature_names) if feature_names is not None
                           else None)

  def expand(self, records):
    columns, config, split = self._columns, self._config, self._split
    split_dir = self._split_dir
    FileSystems.mkdirs(split_dir) if not FileSystems.exists(split_dir) else None
    chunks = records if self._decoded else records | 'Decode' >> self._decode
    # Everything after decoding joins by key (CoGroupByKey) rather than
    # through side inputs of data-derived values: a runner that evaluates a
    # side input lazily (Beam's DaskRunner recomputes its whole upstream for
    # every partition that reads it) would otherwise read the input again.
    if columns.feature_columns:
      names = list(columns.feature_columns)
    elif self._feature_names is not None:
      names = list(self._feature_names)
    else:
      names = chunks | 'InferFeatureNames' >> InferFeatureNames(columns)
    input_rows = (chunks
                  | 'Rows' >> beam.Map(lambda kc: kc[1].num_rows)
                  | 'CountRows' >> beam.CombineGlobally(sum).without_defaults())
    seqs = chunks | 'BuildSequences' >> BuildSequences(
        columns, config, names, grouped=self._format != SEQUENCE_EXAMPLE)
    plan = seqs | 'PlanLanes' >> plan_lib.PlanLanes(
        config, names, split=split, choice=self._choice, auto=self._auto,
        source=self._source)
    placements = plan | 'Placements' >> beam.FlatMap(write_stage.placements)
    keyed = seqs | 'KeySequences' >> beam.Map(lambda s: (s.key, s))
    segments = ({'seq': keyed, 'place': placements}
                | 'JoinPlan' >> beam.CoGroupByKey()
                | 'CutSegments' >> beam.FlatMap(write_stage.cut,
                                                 self._chunk_bytes))
    chunk_keys = plan | 'ChunkKeys' >> beam.FlatMap(write_stage.chunk_keys,
                                                    self._chunk_bytes)
    stats = ({'seg': segments, 'plan': chunk_keys}
             | 'GroupByChunk' >> beam.CoGroupByKey()
             | 'WriteChunks' >> beam.ParDo(
                 write_stage.WriteChunkFn(split_dir, split))
             | 'GroupByShard' >> beam.GroupByKey()
             | 'WriteShards' >> beam.ParDo(
                 write_stage.WriteShardFn(split_dir, split)))
    parts = {
        'shards': stats | 'KeyShardStats' >> beam.Map(lambda s: (None, s)),
        'plan': plan | 'KeyPlan' >> beam.Map(lambda p: (None, p)),
        'rows': input_rows | 'KeyRows' >> beam.Map(lambda n: (None, n)),
    }
    if isinstance(names, beam.PCollection):
      parts['names'] = names | 'KeyNames' >> beam.Map(lambda n: (None, n))
      names = None  # Joined instead.
    return (parts
            | 'JoinSplitResults' >> beam.CoGroupByKey()
            | 'WriteMetadata' >> beam.Map(_write_metadata, split, split_dir,
                                          names, columns))


def _write_metadata(joined, split: str, split_dir: str, names,
                    columns: seqlib.ColumnConfig) -> dict:
  """The joined results of a split -> ``_finish_metadata``."""
  _, parts = joined
  plans, rows = list(parts['plan']), list(parts['rows']) or [0]
  if len(plans) != 1 or len(rows) != 1:
    raise layout.LayoutError(f'split {split!r}: {len(plans)} plans and '
                             f'{len(rows)} row counts (expected one each)')
  if 'names' in parts:
    names = list(parts['names'])[0]
  return write_stage.finish_metadata(list(parts['shards']), plans[0], rows[0],
                                     split, split_dir, names, columns)
