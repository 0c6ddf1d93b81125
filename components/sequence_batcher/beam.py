"""The SequenceBatcher as Beam transforms.

``BatchSequences`` is the whole thing: time-step rows (serialized
``tf.train.Example``s or CSV lines) or whole sequences (serialized
``tf.train.SequenceExample``s) in; ordered, sharded TFRecord batches and a
``metadata.json`` out, for one split. It only uses Beam primitives
(ParDo, GroupByKey, CoGroupByKey, CombineGlobally, side inputs), so it runs
unchanged on the Direct, Dataflow, Flink and Spark runners.

Stages::

  records -> DecodeRows -> (key, RowChunk) -> GroupByKey -> build_sequence
          -> SequenceArrays --(key, length)--> CombineGlobally -> LanePlan
  plan placements + sequences -> CoGroupByKey -> cut_segments -> (shard, Segment)
          -> GroupByKey -> assemble + write one shard file -> shard stats
          -> CombineGlobally -> metadata.json

The lane plan is computed from (key, length) pairs only; the data itself
never goes through a single worker.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from components.sequence_batcher import layout
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
    batches = records | 'Batch' >> beam.BatchElements(
        min_batch_size=self._batch_sizes[0],
        max_batch_size=self._batch_sizes[1])
    if self._format == TF_EXAMPLE:
      return batches | 'DecodeExamples' >> beam.FlatMap(
          lambda rs: map(_keyed, decode.decode_examples(rs, columns, source)))
    headers = self._headers
    return batches | 'DecodeCsv' >> beam.FlatMap(_decode_csv_batch, headers,
                                                 columns)


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


def _cut(joined, summary: plan_lib.PlanSummary):
  key, parts = joined
  seqs, places = list(parts['seq']), list(parts['place'])
  if len(seqs) != 1 or len(places) != 1:
    raise seqlib.InputDataError(
        f'sequence {key!r}: {len(seqs)} sequences and {len(places)} placements '
        '(a key must name exactly one sequence)')
  lane, start = places[0]
  for seg in layout.cut_segments(seqs[0], lane, start, summary.config):
    yield seg.batch_index // summary.batches_per_shard, seg


class WriteShardFn(beam.DoFn):
  """``(shard, [Segment])`` -> one TFRecord file of that shard's batches.

  Batches are assembled and written in batch order. The file is written under
  a temporary name and renamed, so a retried bundle leaves no partial file.
  Emits the shard's statistics.
  """

  def __init__(self, split_dir: str, split: str):
    super().__init__()
    self._split_dir = split_dir
    self._split = split

  def process(self, element, summary: plan_lib.PlanSummary):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from components.sequence_batcher import batch_format  # pylint: disable=g-import-not-at-top
    shard, segments = element
    t0 = time.time()
    by_batch: Dict[int, List[layout.Segment]] = {}
    for seg in segments:
      by_batch.setdefault(seg.batch_index, []).append(seg)
    first = shard * summary.batches_per_shard
    last = min(first + summary.batches_per_shard, summary.num_batches)
    label_dtype = batch_format.LABEL_DTYPES[summary.label_dtype]
    name = metadata_lib.shard_name(shard, summary.num_shards)
    path = os.path.join(self._split_dir, name)
    tmp = path + '.tmp-' + os.urandom(6).hex()
    real = 0
    nbytes = 0
    with tf.io.TFRecordWriter(tmp) as writer:
      for b in range(first, last):
        batch = layout.assemble_batch(b, by_batch.pop(b, ()), summary.config,
                                      summary.num_features, label_dtype)
        real += int(batch['mask'].sum())
        record = batch_format.serialize_batch(batch)
        nbytes += len(record)
        writer.write(record)
    if by_batch:
      raise layout.LayoutError(f'shard {shard} got segments of batches '
                               f'{sorted(by_batch)[:5]} outside [{first}, '
                               f'{last})')
    tf.io.gfile.rename(tmp, path, overwrite=True)
    secs = max(time.time() - t0, 1e-9)
    _LOG.info('split %s: wrote shard %d/%d: %d batches, %d real steps, %.1f MB '
              'in %.2f s (%.0f steps/s)', self._split, shard + 1,
              summary.num_shards, last - first, real, nbytes / 1e6, secs,
              real / secs)
    yield {'shard': shard, 'file': name, 'num_batches': last - first,
           'real_timesteps': real, 'bytes': nbytes}


def _finish_metadata(shard_stats: List[dict], plan_info, input_rows: int,
                     split: str, split_dir: str, feature_names: Sequence[str],
                     columns: seqlib.ColumnConfig) -> dict:
  """Checks the accounting and writes the split's ``metadata.json``."""
  plan, summary, truncated = plan_info
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
  meta.update(layout.split_statistics(plan, truncated))
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
               decode_batch_sizes: Tuple[int, int] = (1, _DECODE_BATCH)):
    """See the class docstring. ``layout_choice``: an optional singleton
    ``(batch_size, num_unroll)`` (e.g. ``plan.ChooseLayout`` of the train
    split) that replaces the fields flagged in ``auto_layout``.
    ``decode_batch_sizes``: see ``DecodeRows``."""
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
    self._format = input_format
    self._columns = columns
    self._config = config
    self._choice = layout_choice
    self._auto = tuple(auto_layout)

  def expand(self, records):
    columns, config, split = self._columns, self._config, self._split
    split_dir = self._split_dir
    FileSystems.mkdirs(split_dir) if not FileSystems.exists(split_dir) else None
    chunks = records | 'Decode' >> self._decode
    if columns.feature_columns:
      names = list(columns.feature_columns)
      names_side = names
    else:
      names = chunks | 'InferFeatureNames' >> InferFeatureNames(columns)
      names_side = beam.pvalue.AsSingleton(names)
    input_rows = (chunks
                  | 'Rows' >> beam.Map(lambda kc: kc[1].num_rows)
                  | 'CountRows' >> beam.CombineGlobally(sum))
    seqs = chunks | 'BuildSequences' >> BuildSequences(
        columns, config, names, grouped=self._format != SEQUENCE_EXAMPLE)
    plan = seqs | 'PlanLanes' >> plan_lib.PlanLanes(
        config, names, split=split, choice=self._choice, auto=self._auto,
        source=self._source)
    plan_side = beam.pvalue.AsSingleton(plan)
    summary = beam.pvalue.AsSingleton(
        plan | 'Summary' >> beam.Map(lambda p: p[1]))
    placements = plan | 'Placements' >> beam.FlatMap(
        lambda p: p[0].placements())
    keyed = seqs | 'KeySequences' >> beam.Map(lambda s: (s.key, s))
    stats = (
        {'seq': keyed, 'place': placements}
        | 'JoinPlan' >> beam.CoGroupByKey()
        | 'CutSegments' >> beam.FlatMap(_cut, summary)
        | 'GroupByShard' >> beam.GroupByKey()
        | 'WriteShards' >> beam.ParDo(WriteShardFn(split_dir, split), summary))
    return (stats
            | 'GatherShardStats' >> beam.combiners.ToList()
            | 'WriteMetadata' >> beam.Map(
                _finish_metadata, plan_side,
                beam.pvalue.AsSingleton(input_rows), split, split_dir,
                names_side, columns))
