"""``read_batches``: the one way the trainer and the evaluator read batches."""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from components.sequence_batcher import batch_format
from components.sequence_batcher import metadata as metadata_lib


def load_metadata(path: str, split: Optional[str] = None) -> Tuple[str, dict]:
  """``(split_directory, split_metadata)`` of a SequenceBatcher output."""
  return metadata_lib.resolve(path, split, read_json=batch_format.read_json)


def shard_files(split_dir: str, meta: dict) -> List[str]:
  """The shard file names listed in a split's ``metadata.json``, checked.

  A name must be a plain file name inside the split's folder: one with a path
  separator, ``..`` or nothing in it is rejected (``ValueError`` naming the
  metadata file), so a crafted ``metadata.json`` cannot make the reader open
  files elsewhere.
  """
  names = meta.get('files')
  where = os.path.join(split_dir, metadata_lib.METADATA_FILE)
  if not isinstance(names, list) or not names:
    raise ValueError(f'{where}: "files" must be a non-empty list of shard '
                     f'file names, got {names!r}')
  seps = {'/', '\\', os.sep} | ({os.altsep} if os.altsep else set())
  for name in names:
    if (not isinstance(name, str) or not name or name in ('.', '..')
        or '..' in name or any(sep in name for sep in seps)
        or '\x00' in name):
      raise ValueError(f'{where}: shard file name {name!r} is not a plain '
                       'file name (no path separator or "..")')
  return names


def read_batches(path: str,
                 split: Optional[str] = None,
                 *,
                 group_order: Optional[Sequence[int]] = None
                ) -> tf.data.Dataset:
  """Reads one split's batches as a ``tf.data.Dataset``, in batch order.

  Never shuffled: batch ``n + 1`` follows batch ``n``, so segment ``k + 1`` of
  a sequence comes one batch after segment ``k`` in the same lane.

  Args:
    path: a SequenceBatcher output root (or a ``Split-*`` folder of it).
    split: the split, e.g. ``'train'``; optional when there is only one.
    group_order: ``bucketed`` mode only: a permutation of the group indices
      (``metadata['groups']``) giving the order in which whole groups are
      read, e.g. a seeded per-epoch shuffle. Segments inside a group keep
      their order.

  Returns:
    A dataset of dicts with static shapes: ``features`` float32[B, T, F],
    ``labels`` int64 or float32[B, T], ``mask`` float32[B, T],
    ``label_weight`` float32[B, T], ``reset`` int64[B], ``key`` string[B],
    ``segment_index`` int64[B] (-1 on padding lanes), ``sequence_length``
    int64[B] (0 on padding lanes) and ``batch_index`` int64[].
  """
  sdir, meta = load_metadata(path, split)
  files = [os.path.join(sdir, name) for name in shard_files(sdir, meta)]
  spec = batch_format.feature_spec(meta)
  if group_order is None:
    records = tf.data.TFRecordDataset(files)
  else:
    records = _records_in_group_order(files, meta, group_order)
  return records.map(lambda r: tf.io.parse_single_example(r, spec),
                     num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True)


def _records_in_group_order(files: List[str], meta: dict,
                            group_order: Sequence[int]) -> tf.data.Dataset:
  """Records of whole groups, the groups in ``group_order``."""
  groups = meta.get('groups')
  if groups is None:
    raise ValueError('group_order needs a bucketed-mode output; this split is '
                     f'{meta["mode"]!r}')
  if sorted(int(g) for g in group_order) != list(range(len(groups))):
    raise ValueError(f'group_order must be a permutation of '
                     f'range({len(groups)}), got {list(group_order)[:10]}...')
  per_shard = meta['batches_per_shard']
  # A group may cross shard boundaries: read it as (file, skip, take) pieces.
  pieces = []
  for g in group_order:
    first, count = groups[int(g)]
    batch = first
    while batch < first + count:
      shard = batch // per_shard
      skip = batch - shard * per_shard
      take = min(first + count - batch, per_shard - skip)
      pieces.append((shard, skip, take))
      batch += take
  shards, skips, takes = (list(x) for x in zip(*pieces))
  file_table = tf.constant(files)

  def piece(shard, skip, take):
    return tf.data.TFRecordDataset(tf.gather(file_table, shard)).skip(
        skip).take(take)

  return tf.data.Dataset.from_tensor_slices(
      (tf.constant(shards, tf.int64), tf.constant(skips, tf.int64),
       tf.constant(takes, tf.int64))).flat_map(piece)
