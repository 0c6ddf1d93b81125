"""Data preparation: the sample and generated sequences as arrays, splits,
padded copies and SequenceBatcher outputs (NumPy; TF imported lazily)."""

from __future__ import annotations

import os
import shutil
from typing import Dict, Optional

from benchmarks.harness.report import ROOT


def sample_sequences():
  """``data/sample`` (300 ``cue`` sequences) as ``SequenceArrays`` in key
  order, and the feature names."""
  import glob as glob_lib  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top
  paths = sorted(glob_lib.glob(os.path.join(ROOT, 'data', 'sample', '*.csv')))
  df = pd.concat([pd.read_csv(p, dtype={'seq_id': str}) for p in paths],
                 ignore_index=True)
  return frame_sequences(df)


def generated_sequences(num_sequences: int, *, seed: int, target: str = 'cue',
                        **kwargs):
  """``data.generate.generate(...)`` as ``SequenceArrays`` and names."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from data import generate as datagen  # pylint: disable=g-import-not-at-top
  return frame_sequences(pd.DataFrame(datagen.generate(
      num_sequences, seed=seed, target=target, **kwargs)))


def frame_sequences(df, names=None, dtype='float32'):
  """``seq_id,t,<features>,label`` rows as ``SequenceArrays`` in key order
  (features ``names``, default all sorted; ``dtype`` for the features and
  float labels), and the names."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import layout  # pylint: disable=g-import-not-at-top
  names = names or sorted(c for c in df.columns
                          if c not in ('seq_id', 't', 'label'))
  df = df.sort_values(['seq_id', 't'], kind='stable')
  keys = df['seq_id'].to_numpy()
  feats = df[names].to_numpy(dtype)
  labels = df['label'].to_numpy()
  labels = labels.astype(np.int64 if labels.dtype.kind in 'iu' else dtype)
  bounds = np.flatnonzero(keys[1:] != keys[:-1]) + 1
  starts = np.concatenate([[0], bounds])
  ends = np.concatenate([bounds, [keys.size]])
  return [layout.SequenceArrays(key=str(keys[s]), features=feats[s:e],
                                labels=labels[s:e])
          for s, e in zip(starts, ends)], names


def split_train_eval(seqs, every: int = 5):
  """Every ``every``-th sequence (in key order) to eval, the rest to train."""
  train = [s for i, s in enumerate(seqs) if i % every != every - 1]
  evals = [s for i, s in enumerate(seqs) if i % every == every - 1]
  return train, evals


def write_batches(root: str, splits, *, batch_size: int, num_unroll: int,
                  label_kind: str, feature_names, mode: str = 'packed') -> str:
  """A SequenceBatcher output (the NumPy reference writer: the same bytes
  as the Beam transform) with the given splits; returns ``root``."""
  from components.sequence_batcher import in_memory  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import layout  # pylint: disable=g-import-not-at-top
  return in_memory.write_splits(
      root, splits, feature_names=feature_names,
      config=layout.LayoutConfig(batch_size=batch_size, num_unroll=num_unroll,
                                 mode=mode, label_kind=label_kind))


def padded(seqs, length: Optional[int] = None):
  """Whole sequences zero-padded to ``length`` (default: the longest):
  ``(features float32[N, L, F], labels [N, L], mask float32[N, L])``."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  length = length or max(s.length for s in seqs)
  nfeat = seqs[0].features.shape[1]
  feats = np.zeros((len(seqs), length, nfeat), np.float32)
  labels = np.zeros((len(seqs), length), seqs[0].labels.dtype)
  mask = np.zeros((len(seqs), length), np.float32)
  for i, s in enumerate(seqs):
    feats[i, :s.length] = s.features
    labels[i, :s.length] = s.labels
    mask[i, :s.length] = 1.0
  return feats, labels, mask


def generated_csv(directory: str, num_sequences: int, *, num_shards: int = 8,
                  num_features: int = 5, log=None) -> str:
  """``data/generate.py`` CSV shards of ``num_sequences`` sequences (seed
  1) in ``directory/csv-<n>-seq``, generated once (a stamp beside the
  folder: ExampleGen reads every file in it, hidden ones too)."""
  import sys  # pylint: disable=g-import-not-at-top
  from benchmarks.harness import child  # pylint: disable=g-import-not-at-top
  out = os.path.join(directory, f'csv-{num_sequences}-seq')
  if os.path.exists(out + '.complete'):
    return out
  shutil.rmtree(out, ignore_errors=True)
  if log:
    log(f'generating {num_sequences} sequences in {out}')
  res = child.run_child(
      [sys.executable, os.path.join(ROOT, 'data', 'generate.py'),
       '--num-sequences', str(num_sequences), '--seed', '1', '--num-shards',
       str(num_shards), '--num-features', str(num_features), '--quiet',
       '--output', out])
  if res.returncode != 0:
    raise RuntimeError(f'{out}: data generation failed: {res.stderr[-2000:]}')
  with open(out + '.complete', 'w') as f:
    f.write('ok\n')
  return out


def csv_size(directory: str) -> Dict[str, int]:
  """Rows (lines minus headers), bytes and files of the CSV files in
  ``directory``."""
  rows = size = files = 0
  for name in sorted(os.listdir(directory)):
    if not name.endswith('.csv'):
      continue
    path = os.path.join(directory, name)
    files += 1
    size += os.path.getsize(path)
    with open(path, 'rb') as f:
      rows += sum(chunk.count(b'\n') for chunk in iter(
          lambda: f.read(1 << 20), b'')) - 1
  return {'rows': rows, 'bytes': size, 'files': files}
