"""Baseline model module for ``benchmarks/real_data.py``: a plain LSTM.

One ``LSTM(64)`` layer and a ``Dense`` head, per step, with no extras
(no stacking, dropout, normalisation or head layer): the "plain stateful
LSTM on the same batches" baseline, trained by the same StatefulTrainer on
the same SequenceBatcher batches as the default model:

  python -m pipeline.local_runner ... --module-file benchmarks/lstm_module.py

The module contract (``components/stateful/model_spec.py``):
``build_model(spec)`` returns a Keras 2 (``tf_keras``) model whose one input
``features`` is float32[B, T, F] (``B = spec.batch_size``, ``T =
spec.num_unroll``, both None for the serving twin, i.e. when
``spec.stateful`` is False; ``F = spec.num_features``) and whose output is
float32[B, T, K] per step (``K = spec.output_units``: logits for
classification, values for regression). When ``spec.stateful`` is True the
recurrent layer is ``stateful=True``; the serving twin is the same
architecture with ``stateful=False`` (same weights, same order).

It imports only TensorFlow and ``tf_keras`` so that the copy the trainer
stores next to the weights loads on its own.
"""

import tf_keras as keras

UNITS = 64


CELLS = {'lstm': keras.layers.LSTM, 'gru': keras.layers.GRU}


def build_model(spec) -> keras.Model:
  """Input[B, T, F] -> LSTM(64, per step) -> Dense(K), seeded by spec.seed.

  ``spec.hyperparameters['units']`` (an int) widens the LSTM (the
  distributed-training benchmark); every other run uses 64.
  ``spec.hyperparameters['cell']`` = ``gru`` makes it the plain GRU module
  of ``benchmarks/recipe.py`` (the same layer sizes and initialisers).
  """
  seed = int(getattr(spec, 'seed', 0) or 0)
  hyperparameters = getattr(spec, 'hyperparameters', None) or {}
  units = int(hyperparameters.get('units', UNITS))
  cell = str(hyperparameters.get('cell', 'lstm'))
  inputs = keras.Input(
      batch_shape=(spec.batch_size, spec.num_unroll, spec.num_features),
      name='features')
  x = CELLS[cell](
      units, return_sequences=True, stateful=spec.stateful,
      kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
      recurrent_initializer=keras.initializers.Orthogonal(seed=seed + 1),
      name=cell)(inputs)
  outputs = keras.layers.Dense(
      spec.output_units,
      kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2),
      name='head')(x)
  return keras.Model(inputs, outputs, name=f'plain_{cell}{units}')
