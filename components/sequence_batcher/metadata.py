"""``metadata.json``: what a SequenceBatches output holds. Plain JSON, no TF.

Layout of an output directory::

  <root>/metadata.json                     # config + {"splits": {name: stats}}
  <root>/Split-<name>/metadata.json        # config + that split's stats
  <root>/Split-<name>/batches-SSSSS-of-NNNNN.tfrecord

Every batch is one ``tf.train.Example`` record; shards and the records in them
are in batch order, so reading the files in the listed order gives batch 0,
1, 2, ... of the split.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterable, Optional, Tuple

FORMAT_VERSION = 1
METADATA_FILE = 'metadata.json'
SPLIT_PREFIX = 'Split-'

# Keys shared by every split of one output (the layout configuration).
CONFIG_KEYS = ('format_version', 'batch_size', 'num_unroll', 'mode',
               'label_kind', 'feature_names', 'num_features', 'label_dtype',
               'key_column', 'order_column', 'label_column')


def split_dir(root: str, split: str) -> str:
  return os.path.join(root, SPLIT_PREFIX + split)


def shard_name(shard: int, num_shards: int) -> str:
  return f'batches-{shard:05d}-of-{num_shards:05d}.tfrecord'


def merge_splits(split_metadatas: Iterable[dict]) -> dict:
  """Builds the root ``metadata.json`` from per-split metadata dicts."""
  merged: Optional[dict] = None
  splits: Dict[str, dict] = {}
  for meta in split_metadatas:
    config = {k: meta[k] for k in CONFIG_KEYS}
    if merged is None:
      merged = dict(config)
    elif config != merged:
      diff = sorted(k for k in CONFIG_KEYS if config[k] != merged[k])
      raise ValueError(f'split {meta["split"]!r} differs from the others in '
                       f'{diff}')
    splits[meta['split']] = {
        k: v for k, v in meta.items() if k not in CONFIG_KEYS and k != 'split'
    }
  if merged is None:
    raise ValueError('no splits to merge')
  merged['splits'] = {name: splits[name] for name in sorted(splits)}
  return merged


def _read_json(path: str) -> dict:
  # tf.io.gfile would add cloud paths; keep this module TF-free and let the
  # caller pass a local or mounted path (Beam's FileSystems is used in beam.py).
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def resolve(path: str, split: Optional[str] = None,
            read_json=_read_json) -> Tuple[str, dict]:
  """Finds one split's directory and metadata.

  Args:
    path: an output root (with ``Split-*`` folders) or one split's folder.
    split: the split name; may be None when the root has exactly one split.
    read_json: reads a JSON file (injectable for other file systems).

  Returns:
    ``(split_directory, split_metadata)``.
  """
  meta_path = os.path.join(path, METADATA_FILE)
  try:
    meta = read_json(meta_path)
  except FileNotFoundError:
    raise FileNotFoundError(
        f'{meta_path} not found: {path!r} is not a SequenceBatcher output'
    ) from None
  if 'splits' not in meta:  # A split folder.
    if split is not None and split != meta.get('split'):
      raise ValueError(f'{path!r} holds split {meta.get("split")!r}, not '
                       f'{split!r}')
    return path, meta
  names = sorted(meta['splits'])
  if split is None:
    if len(names) != 1:
      raise ValueError(f'{path!r} has splits {names}; pass split=')
    split = names[0]
  if split not in meta['splits']:
    raise ValueError(f'{path!r} has no split {split!r}; it has {names}')
  sdir = split_dir(path, split)
  return sdir, read_json(os.path.join(sdir, METADATA_FILE))


def dumps(meta: dict) -> str:
  """Stable JSON text (sorted keys) so equal metadata gives equal bytes."""
  return json.dumps(meta, indent=1, sort_keys=True) + '\n'


def write_root_metadata(output_dir: str) -> dict:
  """Merges every ``Split-*/metadata.json`` into ``<output_dir>/metadata.json``.

  Reads and writes through Beam's ``FileSystems`` (local, gs://, ...),
  imported here so that readers of this module stay free of Beam.

  Returns:
    The merged metadata dict.
  """
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  pattern = os.path.join(output_dir, SPLIT_PREFIX + '*', METADATA_FILE)
  metas = []
  for match in FileSystems.match([pattern])[0].metadata_list:
    with FileSystems.open(match.path) as f:
      metas.append(json.loads(f.read().decode('utf-8')))
  metas.sort(key=lambda m: m.get('split', ''))
  merged = merge_splits(metas)
  with FileSystems.create(os.path.join(output_dir, METADATA_FILE)) as f:
    f.write(dumps(merged).encode('utf-8'))
  return merged
