"""Shared fixtures of the StatefulTrainer tests: tiny batch files and models.

Everything is small (a few lanes, a few steps, a handful of units) so that
the whole suite runs in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.sequence_batcher import in_memory
from components.sequence_batcher import layout
from components.stateful import batches as batches_lib
from components.stateful import model_spec as ms
from components.stateful import steps as steps_lib
from data import generate as datagen


def random_sequences(lengths: Sequence[int], num_features: int = 2, *,
                     seed: int = 0, num_classes: int = 2,
                     per_step_labels: bool = False,
                     float_labels: bool = False,
                     prefix: str = 's') -> List[layout.SequenceArrays]:
  """Sequences with Gaussian features and random (constant) labels."""
  rng = np.random.default_rng(seed)
  out = []
  for i, n in enumerate(lengths):
    feats = rng.normal(size=(n, num_features)).astype(np.float32)
    if float_labels:
      labels = rng.normal(size=n).astype(np.float32)
    elif per_step_labels:
      labels = rng.integers(0, num_classes, size=n).astype(np.int64)
    else:
      labels = np.full(n, rng.integers(0, num_classes), np.int64)
    out.append(layout.SequenceArrays(key=f'{prefix}{i:04d}', features=feats,
                                     labels=labels))
  return out


def write_batches(root: str, splits: Dict[str, List[layout.SequenceArrays]],
                  *, batch_size: int, num_unroll: int, mode: str = 'packed',
                  label_kind: str = 'per_sequence',
                  feature_names: Optional[Sequence[str]] = None) -> str:
  """Writes a SequenceBatcher output with the given splits; returns root."""
  return in_memory.write_splits(
      root, splits, feature_names=feature_names,
      config=layout.LayoutConfig(batch_size=batch_size, num_unroll=num_unroll,
                                 mode=mode, label_kind=label_kind))


def random_train_batches(root: str, count: int, *, seed: int,
                         batch_size: int, num_unroll: int) -> str:
  """A train split of ``count`` random sequences of 4 to 19 steps (lengths
  drawn with ``seed``, features and labels with ``seed + 3``), two features
  ``x0``, ``x1``, written as batches under ``root``; returns ``root``."""
  rng = np.random.default_rng(seed)
  seqs = random_sequences([int(n) for n in rng.integers(4, 20, size=count)],
                          2, seed=seed + 3)
  return write_batches(root, {'train': seqs}, batch_size=batch_size,
                       num_unroll=num_unroll, feature_names=['x0', 'x1'])


def cue_sequences(num_sequences: int, *, seed: int, num_unroll: int,
                  median_length: float, num_features: int = 3,
                  short_fraction: float = 0.5
                 ) -> Tuple[List[layout.SequenceArrays], List[str]]:
  """The long-memory ``cue`` task of ``data/generate.py`` as sequences.

  Short sequences are at most ``num_unroll`` long (they fit one segment, so
  a TBPTT model can learn to latch the cue); the others span several
  segments and can only be classified with state carried across batches.
  """
  cols = datagen.generate(
      num_sequences, seed=seed, median_length=median_length,
      max_length=int(4 * median_length), short_max_length=num_unroll,
      short_fraction=short_fraction, num_features=num_features)
  names = [f'f{j}' for j in range(num_features)]
  feats = np.stack([cols[n] for n in names], axis=1).astype(np.float32)
  ids = cols['seq_id']
  _, first, counts = np.unique(ids, return_index=True, return_counts=True)
  seqs = [
      layout.SequenceArrays(key=str(ids[s]), features=feats[s:s + n],
                            labels=cols['label'][s:s + n].astype(np.int64))
      for s, n in zip(first, counts)
  ]
  return seqs, names


def classification_spec(batch_size: int, num_unroll: int,
                        feature_names: Sequence[str], *,
                        label_kind: str = 'per_sequence', num_classes: int = 2,
                        seed: int = 0, **hyperparameters) -> ms.ModelSpec:
  """A stateful classification spec; the default module builds its
  recurrent model (``model='lstm'``) unless ``model`` is given."""
  return ms.ModelSpec(batch_size=batch_size, num_unroll=num_unroll,
                      stateful=True, feature_names=tuple(feature_names),
                      label_kind=label_kind, task='classification',
                      num_classes=num_classes,
                      hyperparameters={'model': 'lstm', **hyperparameters},
                      seed=seed)


def cumsum_model(batch_size: int, num_unroll: int, num_features: int, *,
                 stacked: bool = False, stateful: bool = True) -> keras.Model:
  """h_t = x_t + h_{t-1}: a linear SimpleRNN with identity weights.

  Its output is the running sum of the inputs since the last reset. With
  ``stacked`` a second identical layer follows (output: the running sum of
  the running sum), so that both layers' states must be handled.
  """
  inputs = keras.Input(shape=(num_unroll, num_features), batch_size=batch_size)
  x = inputs
  for i in range(2 if stacked else 1):
    x = keras.layers.SimpleRNN(
        num_features, activation='linear', use_bias=False,
        kernel_initializer=keras.initializers.Identity(),
        recurrent_initializer=keras.initializers.Identity(),
        return_sequences=True, stateful=stateful, name=f'cumsum_{i}')(x)
  return keras.Model(inputs, x)


def padded(seqs: Sequence[layout.SequenceArrays]
          ) -> Tuple[np.ndarray, np.ndarray]:
  """``(features float32[N, L, F] zero-padded to the longest, lengths
  int64[N])``."""
  length = max(s.length for s in seqs)
  x = np.zeros((len(seqs), length, seqs[0].features.shape[1]), np.float32)
  for i, s in enumerate(seqs):
    x[i, :s.length] = s.features
  return x, np.array([s.length for s in seqs], np.int64)


def run_step_signature(loaded, x: np.ndarray, chunks: Sequence[int],
                       reset_at: Sequence[int] = ()) -> Dict[str, np.ndarray]:
  """Feeds ``x`` [N, L, F] through an export's ``step`` signature in
  ``chunks`` (state carried; reset at chunk 0 and at ``reset_at``); returns
  the outputs concatenated over time."""
  n = x.shape[0]
  init = loaded.signatures['initial_state'](batch_size=tf.constant(n,
                                                                   tf.int64))
  states = dict(init)
  pieces: Dict[str, List[np.ndarray]] = {}
  start = 0
  for i, size in enumerate(chunks):
    reset = np.full(n, int(i == 0 or i in reset_at), np.int64)
    out = loaded.signatures['step'](
        features=tf.constant(x[:, start:start + size]),
        reset=tf.constant(reset), **states)
    states = {k: out[k] for k in init}
    for k, v in out.items():
      if not k.startswith('state_'):
        pieces.setdefault(k, []).append(v.numpy())
    start += size
  assert start == x.shape[1]
  return {k: np.concatenate(v, axis=1) for k, v in pieces.items()}


def outputs_by_sequence(model: keras.Model, source: batches_lib.BatchSource, *,
                        reset_all: bool = False,
                        shuffle_groups: bool = False, seed: int = 0,
                        epoch: int = 0) -> Dict[str, np.ndarray]:
  """Runs ``predict_batches`` and reassembles each sequence's outputs.

  Also checks that every sequence's segments come in order.

  Returns:
    key -> float32[L, K], the model outputs on the sequence's real steps.
  """
  ds = source.dataset(keys=None, shuffle_groups=shuffle_groups, seed=seed,
                      epoch=epoch)
  pairs = steps_lib.predict_batches(model, ds, reset_all=reset_all)
  return {r.key: r.outputs for r in batches_lib.lanes_to_sequences(
      pairs, int(source.meta['num_unroll']), fields=())}


def weights_of(model: keras.Model) -> List[np.ndarray]:
  return [w.numpy() for w in model.weights]


def state_values(model: keras.Model) -> List[np.ndarray]:
  from components.stateful.state import protocol as state  # pylint: disable=g-import-not-at-top
  return [v.numpy() for v in state.state_variables(model)]


def summary_tags(logdir: str) -> Dict[str, List[float]]:
  """tag -> values of all TensorBoard scalar events under ``logdir``."""
  tags: Dict[str, List[float]] = {}
  for path in tf.io.gfile.glob(os.path.join(logdir, '*', 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(
            float(tf.make_ndarray(value.tensor)))
  return tags
