"""The SequenceBatcher's write stage: planned segments -> chunk files ->
shards -> the split's ``metadata.json``.

A chunk is the unit one worker assembles: a run of consecutive batches of
one shard holding about ``CHUNK_BYTES`` of features. Segments travel to
their chunk packed per sequence (``pack_segments``), each chunk is assembled
and written to a temporary file (``WriteChunkFn``), and a shard is its chunk
files concatenated in order (``WriteShardFn``: TFRecord framing is per
record, so the bytes equal one writer's). ``finish_metadata`` checks that
every time step is accounted for and writes the metadata. The label
statistics are tallied as each chunk is assembled (``statistics.LabelTally``)
and joined in batch order. Used by ``beam.BatchSequences``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import time
from typing import Dict, Iterable, List, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
import numpy as np

from components.sequence_batcher import layout
from components.sequence_batcher import segments as segments_lib
from components.sequence_batcher import metadata as metadata_lib
from components.sequence_batcher import plan as plan_lib
from components.sequence_batcher import sequences as seqlib
from components.sequence_batcher import statistics

_LOG = logging.getLogger(__name__)


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


def chunk_keys(plan_info, chunk_bytes: int
               ) -> Iterable[Tuple[int, Tuple[ChunkRange,
                                              plan_lib.PlanSummary]]]:
  """``(chunk index, (ChunkRange, PlanSummary))`` for every chunk."""
  summary = plan_info[1]
  for rng in chunk_ranges(summary, chunk_bytes):
    yield rng.index, (rng, summary)


def placements(plan_info):
  """``(key, (lane, start_batch, summary))`` for every planned sequence."""
  plan, summary, _ = plan_info
  for key, (lane, start) in plan.placements():
    yield key, (lane, start, summary)


def cut(joined, chunk_bytes: int):
  """``(key, {'seq': [SequenceArrays], 'place': [placement]})`` ->
  ``(chunk index, packed segments)``: the pieces ``segments.cut_segments``
  gives, one element per chunk they fall in (``pack_segments``)."""
  key, parts = joined
  seqs, places = list(parts['seq']), list(parts['place'])
  if len(seqs) != 1 or len(places) != 1:
    raise seqlib.InputDataError(
        f'sequence {key!r}: {len(seqs)} sequences and {len(places)} placements '
        '(a key must name exactly one sequence)')
  lane, start, summary = places[0]
  by_chunk: Dict[int, List[segments_lib.Segment]] = {}
  for seg in segments_lib.cut_segments(seqs[0], lane, start, summary.config):
    by_chunk.setdefault(chunk_of(seg.batch_index, summary, chunk_bytes),
                        []).append(seg)
  for chunk, segs in by_chunk.items():
    yield chunk, pack_segments(segs)


def pack_segments(segments: Sequence[segments_lib.Segment]) -> bytes:
  """Segments -> one element: per ``Segment`` field, the values stacked
  (arrays of one shape and dtype: ``[n, ...]``) or listed (anything else),
  pickled together.

  Beam's default coder pickles every NumPy array on its own; one element of
  a few stacked arrays per sequence and chunk, instead of one ``Segment``
  (five arrays) per segment, cuts that cost several-fold, and one pickle of
  them all (bytes, which the coder passes through) instead of one per field
  cuts it again. Generic over the fields, so ``Segment`` may gain fields.
  """
  columns: Dict[str, object] = {'_n': len(segments)}
  for field in dataclasses.fields(segments_lib.Segment):
    values = [getattr(s, field.name) for s in segments]
    first = values[0]
    if isinstance(first, np.ndarray) and all(
        isinstance(v, np.ndarray) and v.shape == first.shape and
        v.dtype == first.dtype for v in values):
      columns[field.name] = np.stack(values)
    else:
      columns[field.name] = values
  return pickle.dumps(columns, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_segments(packed: bytes) -> List[segments_lib.Segment]:
  """The inverse of ``pack_segments`` (arrays are views of the stacks)."""
  columns = pickle.loads(packed)
  fields = [n for n in columns if n != '_n']
  return [segments_lib.Segment(**{n: columns[n][i] for n in fields})
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
  ``(shard, chunk statistics)``, the chunk's ``LabelTally`` among them.
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
    by_batch: Dict[int, List[segments_lib.Segment]] = {}
    for packed in parts['seg']:
      for seg in unpack_segments(packed):
        by_batch.setdefault(seg.batch_index, []).append(seg)
    label_dtype = batch_format.LABEL_DTYPES[summary.label_dtype]
    path = _chunk_path(self._split_dir, rng.index)
    tmp = path + '.tmp-' + os.urandom(6).hex()
    tf.io.gfile.makedirs(os.path.dirname(path))
    real = nbytes = 0
    labels = statistics.LabelTally()
    with tf.io.TFRecordWriter(tmp) as writer:
      for b in range(rng.first, rng.last):
        batch = segments_lib.assemble_batch(
            b, by_batch.pop(b, ()), summary.config, summary.num_features,
            label_dtype)
        real += int(batch['mask'].sum())
        labels.add_batch(batch['labels'], batch['label_weight'])
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
                      'bytes': nbytes, 'num_shards': summary.num_shards,
                      'labels': labels}


class WriteShardFn(beam.DoFn):
  """``(shard, [chunk statistics])`` -> the shard's TFRecord file.

  Concatenates the shard's chunk files in batch order, a block at a time
  (TFRecord framing is per record, so the bytes equal one writer writing
  every batch in turn), under a temporary name, then renames it. Emits the
  shard's statistics (its chunks' label tallies joined in order). The chunk files are removed with the split's metadata.
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
    labels = statistics.LabelTally()
    for c in chunks:
      labels.extend(c['labels'])
    nbytes = sum(c['bytes'] for c in chunks)
    batches = chunks[-1]['chunk'].last - chunks[0]['chunk'].first
    secs = max(time.time() - t0, 1e-9)
    _LOG.info('split %s: wrote shard %d/%d: %d batches, %d real steps, %.1f MB '
              'in %.2f s', self._split, shard + 1, num_shards, batches, real,
              nbytes / 1e6, secs)
    yield {'shard': shard, 'file': name, 'num_batches': batches,
           'real_timesteps': real, 'bytes': nbytes, 'labels': labels}


def finish_metadata(shard_stats: List[dict], plan_info, input_rows: int,
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
  labels = statistics.LabelTally()
  for s in shard_stats:
    labels.extend(s['labels'])
  meta = statistics.split_metadata(
      plan, truncated, split=split, feature_names=feature_names,
      label_dtype=summary.label_dtype, key_column=columns.key_column,
      order_column=columns.order_column, label_column=columns.label_column,
      files=[s['file'] for s in shard_stats], input_timesteps=input_rows,
      nbytes=sum(s['bytes'] for s in shard_stats), labels=labels)
  path = os.path.join(split_dir, metadata_lib.METADATA_FILE)
  with FileSystems.create(path) as f:
    f.write(metadata_lib.dumps(meta).encode('utf-8'))
  _LOG.info('split %s: %d sequences, %d real + %d padded time steps in %d '
            'batches (efficiency %.3f)', split, meta['num_sequences'],
            meta['real_timesteps'], meta['padded_timesteps'],
            meta['num_batches'], meta['efficiency'])
  return meta
