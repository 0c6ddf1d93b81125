"""Model module for ``benchmarks/evaluation.py``: stacked LSTM or GRU layers
and a Dense head, per step (``rnn_type``, ``units`` hyperparameters). It
imports only ``tf_keras``: section 5's old evaluator loads the stored copy."""

import tf_keras as keras


def build_model(spec) -> keras.Model:
  """Input[B, T, F] -> RNN x len(units) -> Dense(K), seeded by spec.seed."""
  hp = dict(spec.hyperparameters)
  layer = keras.layers.GRU if hp.get('rnn_type') == 'gru' else (
      keras.layers.LSTM)
  seed = int(getattr(spec, 'seed', 0) or 0)
  inputs = keras.Input(
      batch_shape=(spec.batch_size, spec.num_unroll, spec.num_features),
      name='features')
  x = inputs
  for i, units in enumerate(hp.get('units', [32])):
    x = layer(int(units), return_sequences=True, stateful=spec.stateful,
              kernel_initializer=keras.initializers.GlorotUniform(
                  seed=seed + 7 * i),
              recurrent_initializer=keras.initializers.Orthogonal(
                  seed=seed + 7 * i + 1), name=f'rnn_{i}')(x)
  out = keras.layers.Dense(
      spec.output_units, name='head',
      kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 503))(x)
  return keras.Model(inputs, out)
