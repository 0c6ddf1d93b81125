"""The SequenceBatcher as Beam transforms.

``BatchSequences`` is the whole thing (its input read and decoded by
``read_stage``, its output written by ``write_stage``): time-step rows
(serialized ``tf.train.Example``s or CSV lines) or whole sequences
(serialized ``tf.train.SequenceExample``s) in; ordered, sharded TFRecord
batches and a ``metadata.json`` out, for one split. It only uses Beam primitives
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
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from components.sequence_batcher import layout
from components.sequence_batcher import plan as plan_lib
from components.sequence_batcher import read_stage
from components.sequence_batcher import sequences as seqlib
from components.sequence_batcher import write_stage

_LOG = logging.getLogger(__name__)


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
               input_format: str = read_stage.TF_EXAMPLE,
               columns: seqlib.ColumnConfig = seqlib.ColumnConfig(),
               config: layout.LayoutConfig = layout.LayoutConfig(),
               source: Optional[str] = None,
               csv_headers: Optional[Dict[str, List[str]]] = None,
               layout_choice: Optional[beam.PCollection] = None,
               auto_layout: Tuple[bool, bool] = (False, False),
               decode_batch_sizes: Tuple[int, int] = (
                   1, read_stage.DECODE_BATCH),
               feature_names: Optional[Sequence[str]] = None,
               chunk_bytes: int = write_stage.CHUNK_BYTES,
               decoded: bool = False,
               transform_graph: Optional[str] = None):
    """See the class docstring. ``feature_names``: the feature columns when
    ``columns`` names none, if the caller knows them (e.g. from the CSV
    headers, ``read_stage.csv_feature_names``); otherwise they are inferred
    from the rows. ``chunk_bytes``: features a writer assembles at a time
    (see ``write_stage.WriteChunkFn``; the output does not depend on it).
    ``layout_choice``: an optional singleton ``(batch_size, num_unroll)``
    (e.g. ``plan.ChooseLayout`` of the train split) that replaces the fields
    flagged in ``auto_layout``. ``decode_batch_sizes``: see
    ``read_stage.DecodeRows``. ``decoded``: the input is already
    ``DecodeRows``' output (``(key, RowChunk)``), e.g. shared with
    ``plan.ChooseLayout`` so that the split is read and decoded once.
    ``transform_graph``: a tf.Transform graph applied to raw ``tf_example``
    rows as they are decoded (see ``read_stage.DecodeRows``)."""
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
    self._decode = read_stage.DecodeRows(
        input_format, columns, source=self._source, csv_headers=csv_headers,
        decode_batch_sizes=decode_batch_sizes,
        transform_graph=transform_graph)
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
        columns, config, names,
        grouped=self._format != read_stage.SEQUENCE_EXAMPLE)
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
