"""The per-split numbers of a lane plan (``metadata.json``): counts,
padding efficiency and the sequence-length histogram, and the whole
``metadata.json`` dict of a split (``split_metadata``, shared by the Beam
writer and the NumPy reference). Plain NumPy."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from components.sequence_batcher import metadata as metadata_lib
from components.sequence_batcher.layout import LanePlan


def length_histogram(lengths: np.ndarray,
                     num_unroll: int) -> Dict[str, List[int]]:
  """Counts of sequence lengths in power-of-two bins.

  Returns:
    ``{'edges': [...], 'counts': [...]}`` where ``counts[i]`` is the number
    of lengths in ``[edges[i], edges[i + 1])`` (the last bin is closed).
  """
  del num_unroll  # Bins are absolute lengths; T is in the metadata.
  if lengths.size == 0:
    return {'edges': [1, 2], 'counts': [0]}
  top = int(lengths.max())
  edges = [1]
  while edges[-1] <= top:
    edges.append(edges[-1] * 2)
  counts, _ = np.histogram(lengths, bins=np.array(edges))
  return {'edges': edges, 'counts': [int(c) for c in counts]}


def split_statistics(plan: LanePlan, truncated_timesteps: int = 0) -> dict:
  """The per-split numbers written to ``metadata.json``."""
  lengths = plan.lengths
  stats = {
      'num_sequences': plan.num_sequences,
      'num_batches': plan.num_batches,
      'num_shards': plan.num_shards,
      'batches_per_shard': plan.batches_per_shard,
      'real_timesteps': plan.real_timesteps,
      'padded_timesteps': plan.total_timesteps - plan.real_timesteps,
      'truncated_timesteps': int(truncated_timesteps),
      'efficiency': plan.efficiency,
      'length_histogram': length_histogram(lengths, plan.config.num_unroll),
      'min_length': int(lengths.min()) if lengths.size else 0,
      'median_length': float(np.median(lengths)) if lengths.size else 0.0,
      'max_length': int(lengths.max()) if lengths.size else 0,
  }
  if plan.groups is not None:
    stats['groups'] = [list(g) for g in plan.groups]
  return stats


def split_metadata(plan: LanePlan, truncated_timesteps: int, *, split: str,
                   feature_names: Sequence[str], label_dtype: str,
                   key_column: str, order_column: str, label_column: str,
                   files: Sequence[str], input_timesteps: int,
                   nbytes: int) -> dict:
  """A split's ``metadata.json``: its layout, columns and files, and
  ``split_statistics``."""
  config = plan.config
  meta = {
      'format_version': metadata_lib.FORMAT_VERSION,
      'split': split,
      'batch_size': config.batch_size,
      'num_unroll': config.num_unroll,
      'mode': config.mode,
      'label_kind': config.label_kind,
      'feature_names': list(feature_names),
      'num_features': len(feature_names),
      'label_dtype': label_dtype,
      'key_column': key_column,
      'order_column': order_column,
      'label_column': label_column,
      'files': list(files),
      'input_timesteps': int(input_timesteps),
      'bytes': int(nbytes),
  }
  meta.update(split_statistics(plan, truncated_timesteps))
  return meta
