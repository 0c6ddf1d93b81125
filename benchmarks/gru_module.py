"""Baseline model module: a plain GRU, the twin of ``lstm_module.py``.

One ``GRU(64)`` layer and a ``Dense`` head, per step, nothing else: what a
user writes from the documented module contract (``build_model(spec)``;
README, "A model module"). Used by ``benchmarks/recipe.py``:

  python -m pipeline.local_runner ... --module-file benchmarks/gru_module.py

It imports only ``tf_keras`` so that the copy the trainer stores next to the
weights loads on its own.
"""

import tf_keras as keras

UNITS = 64


def build_model(spec) -> keras.Model:
  """Input[B, T, F] -> GRU(64, per step) -> Dense(K), seeded by spec.seed."""
  seed = int(getattr(spec, 'seed', 0) or 0)
  inputs = keras.Input(
      batch_shape=(spec.batch_size, spec.num_unroll, spec.num_features),
      name='features')
  x = keras.layers.GRU(
      UNITS, return_sequences=True, stateful=spec.stateful,
      kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
      recurrent_initializer=keras.initializers.Orthogonal(seed=seed + 1),
      name='gru')(inputs)
  outputs = keras.layers.Dense(
      spec.output_units,
      kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2),
      name='head')(x)
  return keras.Model(inputs, outputs, name='plain_gru64')
