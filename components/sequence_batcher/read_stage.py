"""The batcher's read stage: input files -> decoded rows.

The input formats, ``ReadRecords`` (TFRecord files read by the workers, on
every runner), ``MatchFilePaths``, the launcher-side CSV header readers
(``read_csv_headers``, ``csv_feature_names``: one line per file, never the
data) and ``DecodeRows`` (records, CSV lines or CSV files -> ``(key,
RowChunk)``). ``beam.BatchSequences`` takes its input from here; the write
stage is ``write_stage.py``.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from components.sequence_batcher import sequences as seqlib
from components.sequence_batcher import transform_stage

TF_EXAMPLE = 'tf_example'
SEQUENCE_EXAMPLE = 'sequence_example'
CSV = 'csv'
CSV_FILES = 'csv_files'
INPUT_FORMATS = (TF_EXAMPLE, SEQUENCE_EXAMPLE, CSV, CSV_FILES)

DECODE_BATCH = 2048


class DecodeRows(beam.PTransform):
  """Records -> ``(key, RowChunk)``, one chunk per key per bundle of input.

  Input elements: serialized ``tf.train.Example`` (``tf_example``),
  ``(file_name, line)`` pairs (``csv``, as ``ReadFromTextWithFilename`` gives
  them, header skipped), CSV file paths (``csv_files``: each file is parsed in
  blocks by pandas' C parser, the fastest path; files are the unit of
  parallelism) or serialized ``tf.train.SequenceExample``
  (``sequence_example``; one chunk per sequence); with ``transform_graph``,
  raw tf.Example rows with the graph applied (``transform_stage``).
  """

  def __init__(self, input_format: str, columns: seqlib.ColumnConfig, *,
               source: str = 'input',
               csv_headers: Optional[Dict[str, List[str]]] = None,
               decode_batch_sizes: Tuple[int, int] = (1, DECODE_BATCH),
               transform_graph: Optional[str] = None):
    """``decode_batch_sizes``: ``(min, max)`` records decoded in one call
    (``beam.BatchElements``, adaptive in between); the output does not
    depend on it (tests fix it to show that). ``transform_graph``: a
    tf.Transform graph (``TransformGraph`` URI) to apply to raw
    ``tf_example`` rows as they are decoded (``transform_stage``)."""
    super().__init__()
    if transform_graph and input_format != TF_EXAMPLE:
      raise ValueError(f'a transform graph applies to {TF_EXAMPLE!r} rows, '
                       f'not to {input_format!r} input')
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
    self._graph = transform_graph

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
    if self._format == TF_EXAMPLE and self._graph:
      graph = self._graph
      return batches | 'TransformExamples' >> beam.FlatMap(
          lambda rs: map(_keyed, transform_stage.transform_examples(
              rs, graph, columns, source)))
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
    first = decode.header_line(meta.path)
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
  from components.sequence_batcher import decode  # pylint: disable=g-import-not-at-top
  seen = None
  for path in paths:
    try:
      names = tuple(decode.csv_header_names(path))
    except seqlib.InputDataError:
      return None  # The workers report it, naming the file and row.
    if seen is not None and names != seen:
      return None
    seen = names
  if seen is None:
    return None
  return columns.candidate_features(seen)


class MatchFilePaths(beam.PTransform):
  """A file pattern -> the paths of the matching files (read by workers).
  No match is an error unless ``allow_empty`` (then only a pattern without a
  wildcard must match, as ``ReadAllFromTFRecord`` has it)."""

  def __init__(self, pattern: str, *, allow_empty: bool = False):
    super().__init__()
    self._pattern = pattern
    self._allow_empty = allow_empty

  def expand(self, pbegin):
    from apache_beam.io import fileio  # pylint: disable=g-import-not-at-top
    treatment = (fileio.EmptyMatchTreatment.ALLOW_IF_WILDCARD
                 if self._allow_empty else
                 fileio.EmptyMatchTreatment.DISALLOW)
    return (pbegin
            | 'Pattern' >> beam.Create([self._pattern])
            | 'Match' >> fileio.MatchAll(empty_match_treatment=treatment)
            | 'Path' >> beam.Map(lambda m: m.path))


class ReadRecords(beam.PTransform):
  """A TFRecord file pattern -> its records (``.gz`` files read as GZIP),
  read by the workers: the pattern is the only element created on the
  launcher. Unlike ``beam.io.ReadFromTFRecord`` (a ``beam.io.Read``, which
  Beam 2.74's DaskRunner does not translate) it runs on every runner.

  On the DaskRunner, which drops what ``BatchElements`` emits from
  ``finish_bundle`` (``drops_finish_bundle_output``), the elements are
  lists of up to ``DECODE_BATCH`` records of one file instead, which
  ``DecodeRows`` decodes in one call: a call per record costs far more
  than the record itself.
  """

  def __init__(self, pattern: str):
    super().__init__()
    self._pattern = pattern

  def expand(self, pbegin):
    if not drops_finish_bundle_output(pbegin.pipeline):
      return (pbegin
              | 'Pattern' >> beam.Create([self._pattern])
              | 'Read' >> beam.io.ReadAllFromTFRecord())
    return (pbegin
            | 'Files' >> MatchFilePaths(self._pattern, allow_empty=True)
            | 'SpreadFiles' >> beam.Reshuffle()
            | 'ReadBatches' >> beam.FlatMap(_record_batches, DECODE_BATCH))


def _record_batches(path: str, size: int) -> Iterable[List[bytes]]:
  """A TFRecord file's records in lists of at most ``size`` (CRCs checked by
  TensorFlow's reader; ``.gz`` read as GZIP, as ``ReadAllFromTFRecord``
  infers from the name)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dataset = tf.data.TFRecordDataset(
      [path], compression_type='GZIP' if path.endswith('.gz') else '')
  for batch in dataset.batch(size).as_numpy_iterator():
    yield list(batch)
