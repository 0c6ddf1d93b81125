"""The training budget: why training stopped (``FitResult.stop_reason``),
the time budget (``max_seconds``) and the learning-rate warm-up."""

import itertools

import pytest
import tensorflow as tf
import tf_keras

from components.stateful_trainer import optimizers
from components.stateful_trainer import settings
from components.stateful_trainer import selection
from tests.components.stateful_trainer import test_selection as ts


def test_stop_reasons(tmp_path):
  source = ts._source(tmp_path)
  assert ts._fit(ts._model(0.0), source, 0.05, epochs=2).stop_reason == (
      'epochs')
  assert ts._fit(ts._model(0.0), source, 0.05, epochs=3,
                 max_steps=2).stop_reason == 'max_steps'
  # Overshooting from the optimum: the first epoch neither beats the
  # initial weights nor lowers the carve's loss, which stops training.
  early = ts._fit(ts._model(2.0), source, 0.5, epochs=6,
                  early_stopping_patience=1)
  assert early.stop_reason == 'no_gain' and len(early.epochs) == 1
  assert early.best_epoch == selection.INITIAL


def test_time_budget_stops_training_and_keeps_the_best_epoch(tmp_path):
  source = ts._source(tmp_path)
  ticks = itertools.count()
  clock = lambda: float(next(ticks))  # One "second" per call.
  model = ts._model(0.0)
  spec_fit = ts._fit(model, source, 0.05, epochs=50, max_seconds=400.0,
                     clock=clock)
  assert spec_fit.stop_reason == 'max_seconds'
  assert spec_fit.finished and 1 <= len(spec_fit.epochs) < 50
  assert spec_fit.best_epoch is not None
  with pytest.raises(settings.TrainingConfigError, match='max_seconds'):
    settings.TrainConfig(max_seconds=0)


def test_warm_up_ramps_the_rate_then_follows_the_schedule():
  config = settings.OptimizerConfig(learning_rate=0.1, lr_schedule='cosine',
                                    warmup_fraction=0.1)
  rate = optimizers.learning_rate(config, total_steps=100)
  got = [float(rate(tf.constant(s))) for s in (0, 4, 9, 10, 50, 99)]
  cosine = tf_keras.optimizers.schedules.CosineDecay(0.1, 100, alpha=0.01)
  assert got[0] == pytest.approx(0.1 * float(cosine(0)), rel=1e-5)
  assert got[1] == pytest.approx(0.5 * float(cosine(4)), rel=1e-5)
  for s, g in zip((9, 10, 50, 99), got[2:]):
    assert g == pytest.approx(float(cosine(s)), rel=1e-5)
  plain = settings.OptimizerConfig(learning_rate=0.1, lr_schedule='constant',
                                   warmup_fraction=0.0)
  assert optimizers.learning_rate(plain, 100) == pytest.approx(0.1)
  # A run of unknown length: the constant rate, whatever the schedule.
  assert optimizers.learning_rate(config, None) == pytest.approx(0.1)
  optimizers.make_optimizer(config, 100)  # Builds with the schedule.
  assert settings.OptimizerConfig.from_hyperparameters(
      settings.OPTIMIZER_DEFAULTS).warmup_fraction == 0.05
  with pytest.raises(settings.TrainingConfigError, match='warmup'):
    settings.OptimizerConfig(warmup_fraction=1.0)


def test_weight_decay_shrinks_matrices_and_spares_the_exempt_weights():
  """On the default module's LRU model (its real variable names): with
  zero gradients only the decay moves a weight, so the matrices (kernels,
  B and C) shrink by learning_rate * weight_decay and the rest stay."""
  import numpy as np
  from components.stateful import model_io
  from components.stateful import model_spec as ms
  config = settings.OptimizerConfig.from_hyperparameters(
      {'optimizer': 'sgd', 'learning_rate': 0.1, 'weight_decay': 0.5})
  assert config.weight_decay == 0.5
  spec = ms.ModelSpec(batch_size=2, num_unroll=4, stateful=True,
                      feature_names=('a',), task='classification',
                      num_classes=3, hyperparameters={'model': 'lru'},
                      seed=0)
  model = model_io.resolve_module().build_model(spec)
  weights = model.trainable_variables
  before = [w.numpy() for w in weights]
  optimizer = optimizers.make_optimizer(config, 10)
  optimizer.apply_gradients([(tf.zeros_like(w), w) for w in weights])
  decayed = set()
  for w, old in zip(weights, before):
    if np.allclose(w.numpy(), old * (1.0 - 0.1 * 0.5), atol=1e-7) and (
        np.abs(old).max() > 0):
      decayed.add(w.name)
    else:
      np.testing.assert_array_equal(w.numpy(), old, err_msg=w.name)
  leaf = lambda name: name.split('/')[-1].split(':')[0]
  assert {leaf(n) for n in decayed} == {'kernel', 'B_re', 'B_im', 'C_re',
                                        'C_im'}
  assert {leaf(w.name) for w in weights} - {leaf(n) for n in decayed} == {
      'bias', 'gamma', 'beta', 'nu_log', 'theta_log', 'D'}
  none = optimizers.make_optimizer(settings.OptimizerConfig(), 10)
  assert none.weight_decay is None
  with pytest.raises(settings.TrainingConfigError, match='weight_decay'):
    settings.OptimizerConfig(weight_decay=-1.0)
