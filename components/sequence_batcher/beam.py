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

import dataclasses
import logging
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
import numpy as np

from components.sequence_batcher import layout
from components.sequence_batcher import statistics
from components.sequence_batcher import metadata as metadata_lib
from components.sequence_batcher import plan as plan_lib
from components.sequence_batcher import sequences as seqlib

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
      # even with batches of one): decode one record at a time.
      batches = records | 'Batch' >> beam.Map(lambda r: [r])
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
  Beam 2.74's DaskRunner does not translate) it runs on every runner."""

  def __init__(self, pattern: str):
    super().__init__()
    self._pattern = pattern

  def expand(self, pbegin):
    return (pbegin
            | 'Pattern' >> beam.Create([self._pattern])
            | 'Read' >> beam.io.ReadAllFromTFRecord())


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


# A chunk, the unit the writers assemble, holds about this many bytes of
# feature data (capped by the shard): what one worker holds decoded at a time.
CHUNK_BYTES = 4 << 20
_CHUNKS_DIR = '_chunks'
_COPY_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class ChunkRange:
  """Batches ``[first, last)`` of output shard ``shard``, chunk ``index``
  (global) and ``position`` within the shard."""
  index: int
  shard: int
  position: int
  first: int
  last: int


def chunks_per_shard(summary: plan_lib.PlanSummary,
                     chunk_bytes: int = CHUNK_BYTES) -> Tuple[int, int]:
  """``(batches per chunk, chunks per shard)`` for a plan: a chunk holds
  about ``chunk_bytes`` of features (at least one batch).

  A chunk never straddles two shards, so a shard is its chunks in order.
  """
  config = summary.config
  bytes_per_batch = max(1, config.batch_size * config.num_unroll *
                        max(1, summary.num_features) * 4)
  per_chunk = max(1, min(summary.batches_per_shard,
                         chunk_bytes // bytes_per_batch))
  return per_chunk, -(-summary.batches_per_shard // per_chunk)


def chunk_of(batch_index: int, summary: plan_lib.PlanSummary,
             chunk_bytes: int = CHUNK_BYTES) -> int:
  """The global index of the chunk holding ``batch_index``."""
  per_chunk, per_shard = chunks_per_shard(summary, chunk_bytes)
  shard, within = divmod(int(batch_index), summary.batches_per_shard)
  return shard * per_shard + within // per_chunk


def chunk_ranges(summary: plan_lib.PlanSummary,
                 chunk_bytes: int = CHUNK_BYTES) -> List[ChunkRange]:
  """Every chunk of the split, in batch order (empty ones left out)."""
  per_chunk, per_shard = chunks_per_shard(summary, chunk_bytes)
  out = []
  for shard in range(summary.num_shards):
    shard_first = shard * summary.batches_per_shard
    shard_last = min(shard_first + summary.batches_per_shard,
                     summary.num_batches)
    for pos in range(per_shard):
      first = shard_first + pos * per_chunk
      last = min(first + per_chunk, shard_last)
      if first < last:
        out.append(ChunkRange(shard * per_shard + pos, shard, pos, first,
                              last))
  return out


def _chunk_keys(plan_info, chunk_bytes: int
               ) -> Iterable[Tuple[int, Tuple[ChunkRange,
                                              plan_lib.PlanSummary]]]:
  """``(chunk index, (ChunkRange, PlanSummary))`` for every chunk."""
  summary = plan_info[1]
  for rng in chunk_ranges(summary, chunk_bytes):
    yield rng.index, (rng, summary)


def _placements(plan_info):
  """``(key, (lane, start_batch, summary))`` for every planned sequence."""
  plan, summary, _ = plan_info
  for key, (lane, start) in plan.placements():
    yield key, (lane, start, summary)


def _cut(joined, chunk_bytes: int):
  """``(key, {'seq': [SequenceArrays], 'place': [placement]})`` ->
  ``(chunk index, packed segments)``: the pieces ``layout.cut_segments``
  gives, one element per chunk they fall in (``pack_segments``)."""
  key, parts = joined
  seqs, places = list(parts['seq']), list(parts['place'])
  if len(seqs) != 1 or len(places) != 1:
    raise seqlib.InputDataError(
        f'sequence {key!r}: {len(seqs)} sequences and {len(places)} placements '
        '(a key must name exactly one sequence)')
  lane, start, summary = places[0]
  by_chunk: Dict[int, List[layout.Segment]] = {}
  for seg in layout.cut_segments(seqs[0], lane, start, summary.config):
    by_chunk.setdefault(chunk_of(seg.batch_index, summary, chunk_bytes),
                        []).append(seg)
  for chunk, segs in by_chunk.items():
    yield chunk, pack_segments(segs)


def pack_segments(segments: Sequence[layout.Segment]) -> Dict[str, object]:
  """Segments -> one element: per ``Segment`` field, the values stacked
  (arrays of one shape and dtype: ``[n, ...]``) or listed (anything else).

  Beam's default coder pickles every NumPy array on its own; one element of
  a few stacked arrays per sequence and chunk, instead of one ``Segment``
  (five arrays) per segment, cuts that cost several-fold. Generic over the
  fields, so ``Segment`` may gain fields.
  """
  columns: Dict[str, object] = {'_n': len(segments)}
  for field in dataclasses.fields(layout.Segment):
    values = [getattr(s, field.name) for s in segments]
    first = values[0]
    if isinstance(first, np.ndarray) and all(
        isinstance(v, np.ndarray) and v.shape == first.shape and
        v.dtype == first.dtype for v in values):
      columns[field.name] = np.stack(values)
    else:
      columns[field.name] = values
  return columns


def unpack_segments(columns: Dict[str, object]) -> List[layout.Segment]:
  """The inverse of ``pack_segments`` (arrays are views of the stacks)."""
  fields = [n for n in columns if n != '_n']
  return [layout.Segment(**{n: columns[n][i] for n in fields})
          for i in range(columns['_n'])]


def _chunk_path(split_dir: str, index: int) -> str:
  return os.path.join(split_dir, _CHUNKS_DIR, f'chunk-{index:06d}.tfrecord')


class WriteChunkFn(beam.DoFn):
  """``(chunk, {'seg': [packed segments], 'plan': [(ChunkRange,
  PlanSummary)]})`` ->
  one temporary TFRecord file of that chunk's batches, in batch order.

  A chunk holds at most ``CHUNK_BYTES`` of features (all the segments of its
  batches, however many pieces a lane has), so a worker's memory is bounded
  by the layout, not by the input. The file is written under a temporary
  name and renamed, so a retried bundle leaves no partial file. Emits
  ``(shard, chunk statistics)``.
  """

  def __init__(self, split_dir: str, split: str):
    super().__init__()
    self._split_dir = split_dir
    self._split = split

  def process(self, element):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from components.sequence_batcher import batch_format  # pylint: disable=g-import-not-at-top
    index, parts = element
    t0 = time.time()
    plans = list(parts['plan'])
    if len(plans) != 1:
      raise layout.LayoutError(f'split {self._split!r}: chunk {index} got '
                               'segments outside the plan\'s batches')
    rng, summary = plans[0]
    by_batch: Dict[int, List[layout.Segment]] = {}
    for packed in parts['seg']:
      for seg in unpack_segments(packed):
        by_batch.setdefault(seg.batch_index, []).append(seg)
    label_dtype = batch_format.LABEL_DTYPES[summary.label_dtype]
    path = _chunk_path(self._split_dir, rng.index)
    tmp = path + '.tmp-' + os.urandom(6).hex()
    tf.io.gfile.makedirs(os.path.dirname(path))
    real = nbytes = 0
    with tf.io.TFRecordWriter(tmp) as writer:
      for b in range(rng.first, rng.last):
        batch = layout.assemble_batch(b, by_batch.pop(b, ()), summary.config,
                                      summary.num_features, label_dtype)
        real += int(batch['mask'].sum())
        record = batch_format.serialize_batch(batch)
        nbytes += len(record)
        writer.write(record)
    if by_batch:
      raise layout.LayoutError(
          f'split {self._split!r}: chunk {rng.index} got segments of batches '
          f'{sorted(by_batch)[:5]} outside [{rng.first}, {rng.last})')
    tf.io.gfile.rename(tmp, path, overwrite=True)
    _LOG.info('split %s: wrote chunk %d (shard %d): %d batches, %d real '
              'steps in %.2f s', self._split, rng.index, rng.shard + 1,
              rng.last - rng.first, real, time.time() - t0)
    yield rng.shard, {'chunk': rng, 'path': path, 'real_timesteps': real,
                      'bytes': nbytes, 'num_shards': summary.num_shards}


class WriteShardFn(beam.DoFn):
  """``(shard, [chunk statistics])`` -> the shard's TFRecord file.

  Concatenates the shard's chunk files in batch order, a block at a time
  (TFRecord framing is per record, so the bytes equal one writer writing
  every batch in turn), under a temporary name, then renames it. Emits the
  shard's statistics. The chunk files are removed with the split's metadata.
  """

  def __init__(self, split_dir: str, split: str):
    super().__init__()
    self._split_dir = split_dir
    self._split = split

  def process(self, element):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    shard, chunks = element
    t0 = time.time()
    chunks = sorted(chunks, key=lambda c: c['chunk'].position)
    positions = [c['chunk'].position for c in chunks]
    if positions != list(range(len(chunks))):
      raise layout.LayoutError(f'split {self._split!r}: shard {shard} got '
                               f'chunks {positions}')
    num_shards = chunks[0]['num_shards']
    name = metadata_lib.shard_name(shard, num_shards)
    path = os.path.join(self._split_dir, name)
    tmp = path + '.tmp-' + os.urandom(6).hex()
    with tf.io.gfile.GFile(tmp, 'wb') as out:
      for c in chunks:
        with tf.io.gfile.GFile(c['path'], 'rb') as f:
          while True:
            block = f.read(_COPY_BLOCK)
            if not block:
              break
            out.write(block)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    real = sum(c['real_timesteps'] for c in chunks)
    nbytes = sum(c['bytes'] for c in chunks)
    batches = chunks[-1]['chunk'].last - chunks[0]['chunk'].first
    secs = max(time.time() - t0, 1e-9)
    _LOG.info('split %s: wrote shard %d/%d: %d batches, %d real steps, %.1f MB '
              'in %.2f s', self._split, shard + 1, num_shards, batches, real,
              nbytes / 1e6, secs)
    yield {'shard': shard, 'file': name, 'num_batches': batches,
           'real_timesteps': real, 'bytes': nbytes}


def _finish_metadata(shard_stats: List[dict], plan_info, input_rows: int,
                     split: str, split_dir: str, feature_names: Sequence[str],
                     columns: seqlib.ColumnConfig) -> dict:
  """Checks the accounting, removes the chunk files and writes the split's
  ``metadata.json``."""
  plan, summary, truncated = plan_info
  chunks_dir = os.path.join(split_dir, _CHUNKS_DIR)
  if FileSystems.exists(chunks_dir):
    FileSystems.delete([chunks_dir])
  shard_stats = sorted(shard_stats, key=lambda s: s['shard'])
  if [s['shard'] for s in shard_stats] != list(range(summary.num_shards)):
    raise layout.LayoutError(
        f'split {split!r}: expected shards 0..{summary.num_shards - 1}, got '
        f'{[s["shard"] for s in shard_stats]}')
  written = sum(s['real_timesteps'] for s in shard_stats)
  if not written == plan.real_timesteps == input_rows - truncated:
    raise layout.LayoutError(
        f'split {split!r}: time steps do not add up: {input_rows} input, '
        f'{truncated} truncated, {plan.real_timesteps} planned, {written} '
        'written')
  config = summary.config
  meta = {
      'format_version': metadata_lib.FORMAT_VERSION,
      'split': split,
      'batch_size': config.batch_size,
      'num_unroll': config.num_unroll,
      'mode': config.mode,
      'label_kind': config.label_kind,
      'feature_names': list(feature_names),
      'num_features': len(feature_names),
      'label_dtype': summary.label_dtype,
      'key_column': columns.key_column,
      'order_column': columns.order_column,
      'label_column': columns.label_column,
      'files': [s['file'] for s in shard_stats],
      'input_timesteps': int(input_rows),
      'bytes': sum(s['bytes'] for s in shard_stats),
  }
  meta.update(statistics.split_statistics(plan, truncated))
  path = os.path.join(split_dir, metadata_lib.METADATA_FILE)
  with FileSystems.create(path) as f:
    f.write(metadata_lib.dumps(meta).encode('utf-8'))
  _LOG.info('split %s: %d sequences, %d real + %d padded time steps in %d '
            'batches (efficiency %.3f)', split, meta['num_sequences'],
            meta['real_timesteps'], meta['padded_timesteps'],
            meta['num_batches'], meta['efficiency'])
  return meta


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
               chunk_bytes: int = CHUNK_BYTES,
               decoded: bool = False):
    """See the class docstring. ``feature_names``: the feature columns when
    ``columns`` names none, if the caller knows them (e.g. from the CSV
    headers, ``csv_feature_names``); otherwise they are inferred from the
    rows. ``chunk_bytes``: features a writer assembles at a time (see
    ``WriteChunkFn``; the output does not depend on it). ``layout_choice``:
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
    placements = plan | 'Placements' >> beam.FlatMap(_placements)
    keyed = seqs | 'KeySequences' >> beam.Map(lambda s: (s.key, s))
    segments = ({'seq': keyed, 'place': placements}
                | 'JoinPlan' >> beam.CoGroupByKey()
                | 'CutSegments' >> beam.FlatMap(_cut, self._chunk_bytes))
    chunk_keys = plan | 'ChunkKeys' >> beam.FlatMap(_chunk_keys,
                                                    self._chunk_bytes)
    stats = ({'seg': segments, 'plan': chunk_keys}
             | 'GroupByChunk' >> beam.CoGroupByKey()
             | 'WriteChunks' >> beam.ParDo(WriteChunkFn(split_dir, split))
             | 'GroupByShard' >> beam.GroupByKey()
             | 'WriteShards' >> beam.ParDo(WriteShardFn(split_dir, split)))
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
  return _finish_metadata(list(parts['shards']), plans[0], rows[0], split,
                          split_dir, names, columns)
