"""The plain stateful LSTM (or GRU) baseline module of the benchmarks
(``--module-file benchmarks/lstm_module.py``): ``LSTM(64) -> Dense`` per
step. It imports only ``tf_keras``, so the copy stored with the weights
loads alone."""

import tf_keras as keras

UNITS = 64
CELLS = {'lstm': keras.layers.LSTM, 'gru': keras.layers.GRU}


def build_model(spec) -> keras.Model:
  """Input[B, T, F] -> LSTM(64, per step) -> Dense(K), seeded by spec.seed;
  hyperparameters ``units`` (section 9 widens it) and ``cell`` = ``gru``
  (recipe.py's plain GRU)."""
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
