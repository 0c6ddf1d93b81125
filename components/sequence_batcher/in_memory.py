"""Single-process writer of a SequenceBatcher output from in-memory sequences.

The same files and ``metadata.json`` as the Beam transform, built with the
NumPy reference (``segments.layout_in_memory``). Meant for tests, notebooks
and small data; the Beam transform is the scalable path.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from components.sequence_batcher import batch_format
from components.sequence_batcher import layout
from components.sequence_batcher import segments as segments_lib
from components.sequence_batcher import statistics
from components.sequence_batcher import metadata as metadata_lib
from components.sequence_batcher import sequences as seqlib


def write_split(sequences: List[layout.SequenceArrays], output_dir: str, *,
                split: str = 'train',
                config: layout.LayoutConfig = layout.LayoutConfig(),
                feature_names: Optional[Sequence[str]] = None,
                key_column: str = seqlib.ColumnConfig.key_column,
                order_column: Optional[str] = seqlib.ColumnConfig.order_column,
                label_column: Optional[str] = seqlib.ColumnConfig.label_column
               ) -> dict:
  """Lays ``sequences`` out and writes ``<output_dir>/Split-<split>``.

  Also (re)writes ``<output_dir>/metadata.json`` with every split found there.

  Returns:
    The split's metadata dict.
  """
  plan, batches = segments_lib.layout_in_memory(sequences, config)
  nfeat = sequences[0].features.shape[1]
  names = list(feature_names or [f'f{i}' for i in range(nfeat)])
  if len(names) != nfeat:
    raise ValueError(f'{len(names)} feature names for {nfeat} features')
  all_int = all(s.labels.dtype.kind in 'iu' for s in sequences)
  sdir = metadata_lib.split_dir(output_dir, split)
  tf.io.gfile.makedirs(sdir)
  files = []
  nbytes = 0
  labels = statistics.LabelTally()
  for shard in range(plan.num_shards):
    name = metadata_lib.shard_name(shard, plan.num_shards)
    files.append(name)
    first = shard * plan.batches_per_shard
    with tf.io.TFRecordWriter(os.path.join(sdir, name)) as writer:
      for batch in batches[first:first + plan.batches_per_shard]:
        if all_int:
          batch['labels'] = batch['labels'].astype(np.int64)
        else:
          batch['labels'] = batch['labels'].astype(np.float32)
        labels.add_batch(batch['labels'], batch['label_weight'])
        record = batch_format.serialize_batch(batch)
        nbytes += len(record)
        writer.write(record)
  truncated = sum(s.truncated for s in sequences)
  meta = statistics.split_metadata(
      plan, truncated, split=split, feature_names=names,
      label_dtype='int64' if all_int else 'float32', key_column=key_column,
      order_column=order_column, label_column=label_column, files=files,
      input_timesteps=plan.real_timesteps + truncated, nbytes=nbytes,
      labels=labels)
  with tf.io.gfile.GFile(os.path.join(sdir, metadata_lib.METADATA_FILE),
                         'w') as f:
    f.write(metadata_lib.dumps(meta))
  metadata_lib.write_root_metadata(output_dir)
  return meta


def write_splits(output_dir: str,
                 splits: Dict[str, List[layout.SequenceArrays]], *,
                 config: layout.LayoutConfig,
                 feature_names: Optional[Sequence[str]] = None) -> str:
  """``write_split`` for every ``{split: sequences}``; returns output_dir."""
  for split, seqs in splits.items():
    write_split(seqs, output_dir, split=split, config=config,
                feature_names=feature_names)
  return output_dir
