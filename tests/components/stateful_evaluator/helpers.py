"""Fixture builders for the StatefulEvaluator tests.

Models with known outputs, stored as the StatefulTrainer stores them
(``model_io.save_stateful``: ``<uri>/stateful/{spec.json,module.py,weights}``)
plus the trainer's serving SavedModel in ``<uri>/Format-Serving``
(``export.export_serving_model``: ``serving_default`` takes ``features``
float32[N, L, F] and ``lengths`` int64[N]).

* running sum: a linear SimpleRNN with identity weights followed by a fixed
  Dense, so ``output[t] = scale * sum(x[0..t, :])`` since the sequence start.
  Integer features keep every value exact in float32.
* forgetful: the same, but its stateful build zeroes the RNN state at the
  start of every call, i.e. it drops the state between chunks (the serving
  twin is correct). The equivalence check must catch it.
* classifier: the running sum fed into logits ``[0, scale * sum]``: class 1
  when the running sum is positive.
"""

from __future__ import annotations

import os
import textwrap
from typing import List, Optional, Sequence

import numpy as np

from components.sequence_batcher import in_memory
from components.sequence_batcher import layout
from components.stateful_trainer import export as trainer_export
from components.stateful import model_io
from components.stateful import model_spec as ms

SERVING_DIR = 'Format-Serving'  # tfx.types path_constants.SERVING_MODEL_DIR
FEATURES = ('x0', 'x1')

# Regression batches use B=3, T=4: in packed mode many lanes reset mid-lane;
# sequences span 1 to 4 segments, lengths T and T + 1 included.
REGRESSION_LENGTHS = (1, 3, 4, 5, 9, 13, 2, 8, 6)
# Classification batches use B=4, T=3.
CLASSIFICATION_LENGTHS = (2, 7, 4, 11, 5, 1, 9, 6, 3, 12, 8, 10)

_COMMON = '''
import tensorflow as tf
import tf_keras as keras


def _rnn(spec, layer_cls):
  f = spec.num_features
  return layer_cls(
      f, activation=None, use_bias=False, return_sequences=True,
      stateful=spec.stateful,
      kernel_initializer=keras.initializers.Identity(),
      recurrent_initializer=keras.initializers.Identity(), name='sum')


def _input(spec):
  return keras.Input(shape=(spec.num_unroll, spec.num_features),
                     batch_size=spec.batch_size, name='features')
'''

RUNNING_SUM = _COMMON + '''

def build_model(spec):
  """output[t] = scale * (x0 + x1 + ...) summed since the sequence start."""
  scale = float(spec.hyperparameters.get('scale', 1.0))
  inputs = _input(spec)
  h = _rnn(spec, keras.layers.SimpleRNN)(inputs)
  out = keras.layers.Dense(
      1, use_bias=False, kernel_initializer=keras.initializers.Constant(scale),
      name='head')(h)
  return keras.Model(inputs, out)
'''

FORGETFUL = _COMMON + '''

class ForgetfulSimpleRNN(keras.layers.SimpleRNN):
  """Deliberately broken: forgets its state at the start of every call."""

  # Not autograph-converted: converting Keras' RNN code takes ~30 s.
  @tf.autograph.experimental.do_not_convert
  def call(self, inputs, mask=None, training=None, initial_state=None):
    for state in tf.nest.flatten(self.states):
      state.assign(tf.zeros_like(state))
    return super().call(inputs, mask=mask, training=training)


def build_model(spec):
  scale = float(spec.hyperparameters.get('scale', 1.0))
  inputs = _input(spec)
  layer_cls = ForgetfulSimpleRNN if spec.stateful else keras.layers.SimpleRNN
  h = _rnn(spec, layer_cls)(inputs)
  out = keras.layers.Dense(
      1, use_bias=False, kernel_initializer=keras.initializers.Constant(scale),
      name='head')(h)
  return keras.Model(inputs, out)
'''

CLASSIFIER = _COMMON + '''

def build_model(spec):
  """logits [0, scale * running sum]: class 1 iff the running sum > 0."""
  scale = float(spec.hyperparameters.get('scale', 1.0))
  inputs = _input(spec)
  h = _rnn(spec, keras.layers.SimpleRNN)(inputs)
  kernel = [[0.0, scale]] * spec.num_features
  out = keras.layers.Dense(
      2, use_bias=False, kernel_initializer=keras.initializers.Constant(
          kernel), name='head')(h)
  return keras.Model(inputs, out)
'''


def write_model(root: str, name: str, source: str, *, task: str,
                label_kind: str, scale: float = 1.0,
                serving: bool = True) -> str:
  """Builds, saves and exports one model; returns its Model URI."""
  mod_dir = os.path.join(root, f'{name}_src')
  os.makedirs(mod_dir, exist_ok=True)
  mod_path = os.path.join(mod_dir, 'module.py')
  with open(mod_path, 'w') as f:
    f.write(textwrap.dedent(source))
  module = model_io.load_module_file(mod_path)
  spec = ms.ModelSpec(
      batch_size=1, num_unroll=None, stateful=True, feature_names=FEATURES,
      label_kind=label_kind, task=task,
      num_classes=2 if task == ms.CLASSIFICATION else None,
      output_size=1 if task == ms.REGRESSION else None,
      hyperparameters={'scale': scale})
  model = model_io.build_stateful(module, spec)
  uri = os.path.join(root, name)
  model_io.save_stateful(uri, model, spec, module)
  if serving:
    twin = model_io.build_serving(module, spec, weights_from=model)
    trainer_export.export_serving_model(os.path.join(uri, SERVING_DIR), twin,
                                        spec)
  return uri


def make_sequences(lengths: Sequence[int], *, label_kind: str, task: str,
                   seed: int = 0) -> List[layout.SequenceArrays]:
  """Sequences of small integer features with labels near the running sum.

  Regression labels are ``cumsum(x0 + x1) + offset`` with offsets in
  {-1, -0.5, 0, 0.5, 1}; classification labels are 1 when the running sum
  is positive, flipped on every third sequence.
  """
  rng = np.random.default_rng(seed)
  out = []
  for i, n in enumerate(lengths):
    x = rng.integers(-3, 4, size=(n, len(FEATURES))).astype(np.float32)
    total = np.cumsum(x.sum(axis=1))
    if task == ms.REGRESSION:
      labels = (total + rng.integers(-2, 3, size=n) * 0.5).astype(np.float32)
      if label_kind == ms.PER_SEQUENCE:
        labels = np.full(n, labels[-1], np.float32)
    else:
      cls = (total > 0).astype(np.int64)
      if i % 3 == 0:
        cls = 1 - cls
      labels = (np.full(n, cls[-1], np.int64)
                if label_kind == ms.PER_SEQUENCE else cls)
    out.append(layout.SequenceArrays(f'seq{i:02d}', x, labels))
  return out


def write_batches(root: str, sequences: List[layout.SequenceArrays], *,
                  label_kind: str, batch_size: int = 3, num_unroll: int = 4,
                  mode: str = layout.PACKED, split: str = 'eval',
                  train: Optional[List[layout.SequenceArrays]] = None) -> str:
  """A SequenceBatcher output with the ``split`` split (and a ``train``
  split when ``train`` is given: the no-skill predictors' labels); returns
  its URI."""
  config = layout.LayoutConfig(batch_size=batch_size, num_unroll=num_unroll,
                               mode=mode, label_kind=label_kind)
  in_memory.write_split(sequences, root, split=split, config=config,
                        feature_names=list(FEATURES))
  if train is not None:
    in_memory.write_split(train, root, split='train', config=config,
                          feature_names=list(FEATURES))
  return root
