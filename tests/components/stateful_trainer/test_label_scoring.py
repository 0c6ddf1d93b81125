"""Where a per-sequence label is scored when the model module has no
``label_scoring`` hook: from the model's structure
(``model_setup.label_scoring_rule`` over ``state.trainable_behind_state``)."""

import pytest
import tf_keras as keras

from components.stateful import batches as batches_lib
from components.stateful.layers import convolution as sl
from components.stateful.layers import pools
from components.stateful.layers import lru
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful_trainer import model_setup

B, T, F = 2, 3, 2


def _inputs():
  return keras.Input(shape=(T, F), batch_size=B)


def _lstm():
  x = _inputs()
  return keras.Model(x, keras.layers.Dense(2)(
      keras.layers.LSTM(4, return_sequences=True, stateful=True)(x)))


def _frozen_conv_pool_head():
  x = _inputs()
  h = sl.CausalConv1D(3, 2, stateful=True, trainable=False)(x)
  return keras.Model(x, keras.layers.Dense(2)(
      pools.RunningPool(('mean',), stateful=True)(h)))


def _trainable_encoder_before_pool():
  x = _inputs()
  h = keras.layers.Dense(3, name='encoder')(x)
  return keras.Model(x, keras.layers.Dense(2)(
      pools.RunningPool(('mean',), stateful=True)(h)))


def _lru():
  x = _inputs()
  return keras.Model(x, keras.layers.Dense(2)(
      lru.LinearRecurrence(4, stateful=True)(x)))


def _stateless():
  x = _inputs()
  return keras.Model(x, keras.layers.Dense(2)(keras.layers.Dense(3)(x)))


def _nested_lstm():
  x = _inputs()
  inner = _lstm()
  return keras.Model(x, keras.layers.Dense(2)(inner(x)))


def _default_conv():
  spec = ms.ModelSpec(batch_size=B, num_unroll=T, stateful=True,
                      feature_names=('a', 'b'), task='classification',
                      num_classes=2, hyperparameters={'kernels': 8})
  return model_io.build_stateful(model_io.resolve_module(), spec)


def _spec(typical_length):
  return ms.ModelSpec(batch_size=B, num_unroll=T, stateful=True,
                      feature_names=('a', 'b'), task='classification',
                      num_classes=2, typical_length=typical_length)


# Sequences of 4 segments of T steps (batches.WEIGHTED_MIN_SEGMENTS).
LONG = 4 * T


@pytest.mark.parametrize('build, want, named', [
    (_lstm, batches_lib.WEIGHTED, 'lstm'),
    (_frozen_conv_pool_head, batches_lib.LAST_STEP, None),
    (_trainable_encoder_before_pool, batches_lib.WEIGHTED, 'encoder'),
    (_lru, batches_lib.WEIGHTED, 'linear_recurrence'),
    (_stateless, batches_lib.LAST_STEP, None),
    (_nested_lstm, batches_lib.WEIGHTED, 'model'),
    (_default_conv, batches_lib.LAST_STEP, None),
])
def test_label_scoring_rule_from_the_model_structure(build, want, named):
  keras.backend.clear_session()
  scoring, why = model_setup.label_scoring_rule(build(), _spec(LONG))
  assert scoring == want
  if named:
    assert named in why and 'last segment' in why and '4 segments' in why
  else:
    assert 'no trainable weight shapes the carried state' in why


@pytest.mark.parametrize('typical_length, want', [
    (None, batches_lib.WEIGHTED),  # Unknown: assumed long.
    (LONG, batches_lib.WEIGHTED),
    (LONG - T + 1, batches_lib.WEIGHTED),  # Still 4 segments (the last short).
    (LONG - T, batches_lib.LAST_STEP),  # 3 segments.
    (1, batches_lib.LAST_STEP),
])
def test_a_recurrent_model_is_scored_weighted_only_on_long_sequences(
    typical_length, want):
  keras.backend.clear_session()
  scoring, why = model_setup.label_scoring_rule(_lstm(),
                                                _spec(typical_length))
  assert scoring == want, why
  assert 'lstm' in why
  assert batches_lib.recurrent_scoring(_spec(typical_length))[0] == want
