"""min_carve_sequences: a carve too small to choose an epoch is not made."""

from __future__ import annotations

import os

from components.stateful import batches as batches_lib
from components.stateful import carve as carve_lib
from components.stateful_trainer import run as trainer_run
from components.stateful_trainer import settings
from tests.components.stateful_trainer import helpers

MODULE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))), 'benchmarks',
                      'lstm_module.py')


def _run(tmp, root, min_carve, refit=True):
  config = settings.TrainConfig(epochs=2, log_every_n_steps=0,
                                validation_fraction=0.3,
                                min_carve_sequences=min_carve, refit=refit)
  return trainer_run.run(trainer_run.TrainerArgs(
      batches_uri=root, model_uri=os.path.join(tmp, 'model'),
      serving_model_dir=os.path.join(tmp, 'model', 'Format-Serving'),
      model_run_dir=os.path.join(tmp, 'run'), eval_split=None,
      module_file=MODULE, train=config, hyperparameters={'units': 4}))


def test_a_small_carve_is_not_made_for_a_randomly_initialised_model(
    tmp_path):
  seqs = helpers.random_sequences([5, 7, 3, 9, 6, 4, 8, 5, 6, 7], 2, seed=3)
  root = helpers.write_batches(str(tmp_path / 'b'), {'train': seqs},
                               batch_size=2, num_unroll=4)
  source = batches_lib.BatchSource.open(root, 'train')
  held = carve_lib.count_validation_sequences(source, 0.3)
  keys = [s.key.encode() for s in seqs]
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  assert held == int(tf.reduce_sum(tf.cast(batches_lib.is_validation_key(
      tf.constant(keys), 0.3), tf.int32)))
  assert 0 < held < 10
  carved = _run(str(tmp_path / 'carved'), root, 0)
  # The carve was scored each epoch and chose one; the refit trained.
  assert carved.phases['validation'] > 0 and carved.phases['refit'] > 0
  whole = _run(str(tmp_path / 'whole'), root, held + 1)
  # No carve: every sequence for the budget, the last weights, no refit.
  assert whole.phases.get('validation', 0) == 0
  assert whole.phases.get('refit', 0) == 0
  assert whole.fit.best_epoch is None and whole.fit.carve is None
  assert whole.fit.stop_reason == 'epochs' and len(whole.fit.epochs) == 2
  kept = _run(str(tmp_path / 'kept'), root, held)  # Enough: carved.
  assert kept.phases['validation'] > 0


def test_the_refit_runs_by_default_for_a_model_from_random_weights(tmp_path):
  """``refit`` left at its default: a model trained from random weights
  (no adapt) is trained again on every sequence after the carve chose its
  epoch; ``settings.refits`` is the rule."""
  seqs = helpers.random_sequences([5, 7, 3, 9, 6, 4, 8, 5, 6, 7], 2, seed=3)
  root = helpers.write_batches(str(tmp_path / 'b'), {'train': seqs},
                               batch_size=2, num_unroll=4)
  run = _run(str(tmp_path / 'auto'), root, 0,
             refit=settings.TrainConfig().refit)
  assert run.phases['validation'] > 0 and run.phases['refit'] > 0
  carve = settings.TrainConfig(validation_fraction=0.2)
  assert settings.refits(carve)
  assert not settings.refits(carve.replace(refit=False))
  assert not settings.refits(carve.replace(validation_fraction=0.0))
