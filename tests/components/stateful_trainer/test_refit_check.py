"""The refit guard (``refit.check_refit``): after the refit, which trained on
every sequence, the validation carve's included, the carve scores it and the
chosen epoch's weights by the same pass; a refit that scores strictly worse
there is not exported (the chosen epoch's weights are)."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tf_keras as keras

from components.stateful import model_io
from components.stateful_trainer import refit as refit_lib
from components.stateful_trainer import run as runner
from components.stateful_trainer import settings
from components.stateful_trainer import training
from components.stateful_trainer.fit_result import FitResult
from tests.components.stateful_trainer import helpers

B, T, F = 4, 4, 2


def _result(carve):
  return FitResult(epochs=[], evaluations=[], steps=1, resumed_from=None,
                   finished=True, best_epoch=0, carve=carve)


def _dense():
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  return model, [w.copy() for w in model.get_weights()]


@pytest.mark.parametrize('chosen, refit, kept', [
    ({'accuracy': 0.8, 'loss': 0.5}, {'accuracy': 0.6, 'loss': 0.4}, 'chosen'),
    ({'accuracy': 0.8, 'loss': 0.5}, {'accuracy': 0.8, 'loss': 0.9}, 'refit'),
    ({'accuracy': 0.8, 'loss': 0.5}, {'accuracy': 0.9, 'loss': 0.9}, 'refit'),
    ({'loss': 0.5}, {'loss': 0.7}, 'chosen'),
    ({'loss': 0.5}, {'loss': 0.5}, 'refit'),
])
def test_the_score_decides_and_a_tie_keeps_the_refit(chosen, refit, kept):
  model, chosen_weights = _dense()
  refit_weights = [w + 1.0 for w in chosen_weights]
  model.set_weights(refit_weights)
  check = refit_lib.check_refit(model, chosen_weights, _result(chosen),
                                _result(refit))
  assert check['kept'] == kept
  assert check['chosen'] == chosen and check['refit'] == refit
  want = chosen_weights if kept == 'chosen' else refit_weights
  for got, w in zip(model.get_weights(), want):
    np.testing.assert_array_equal(got, w)


def test_selection_by_loss_checks_the_refit_by_loss():
  """With ``select_by='loss'`` the carve chose by its loss, and the refit
  is held to the same: a better accuracy with a higher loss fails."""
  chosen, refit = {'accuracy': 0.8, 'loss': 0.5}, {'accuracy': 0.9,
                                                   'loss': 0.9}
  model, weights = _dense()
  assert refit_lib.check_refit(model, weights, _result(chosen),
                               _result(refit))['kept'] == 'refit'
  check = refit_lib.check_refit(model, weights, _result(chosen),
                                _result(refit), by='loss')
  assert check['kept'] == 'chosen' and check['score'] == 'loss'


def test_unscored_runs_are_not_checked():
  model, weights = _dense()
  assert refit_lib.check_refit(model, weights, _result(None),
                               _result({'loss': 1.0})) is None


@pytest.fixture(scope='module')
def batches_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('batches'))
  seqs = helpers.random_sequences([7, 12, 5, 9, 3, 10, 8, 6, 11, 4, 9, 7],
                                  F, seed=5)
  return helpers.write_batches(root, {'train': seqs}, batch_size=B,
                               num_unroll=T, feature_names=['x0', 'x1'])


def _run(batches_dir, out, monkeypatch, sabotage):
  """``run.run`` with the default module's LSTM, a carve and the refit;
  ``sabotage``: the refit's carve figures are replaced by ones worse than
  any the chosen epoch can have (accuracy 0, a huge loss). Returns the run's
  result, history and the weights each fit left."""
  real_fit = training.fit
  left = []

  def fit(model, **kw):
    result = real_fit(model, **kw)
    assert result.carve is not None  # The run asked for the carve pass.
    if kw['config'].validation_fraction == 0 and sabotage:  # The refit.
      result = dataclasses.replace(result, carve={'loss': 1e9,
                                                  'accuracy': 0.0})
    left.append([w.copy() for w in model.get_weights()])
    return result

  monkeypatch.setattr(training, 'fit', fit)
  result = runner.run(runner.TrainerArgs(
      batches_uri=batches_dir, model_uri=str(out / 'model'),
      serving_model_dir=str(out / 'model' / 'serving'),
      model_run_dir=str(out / 'run'), eval_split=None,
      hyperparameters={'model': 'lstm', 'units': [4]},
      train=settings.TrainConfig(epochs=3, log_every_n_steps=0,
                                 validation_fraction=0.4, refit=True,
                                 early_stopping_patience=0, seed=0)))
  with open(os.path.join(str(out / 'run'), runner.HISTORY_FILE)) as f:
    history = json.load(f)
  return result, history, left


def test_a_failed_refit_exports_the_chosen_weights(batches_dir, tmp_path,
                                                   monkeypatch, caplog):
  caplog.set_level('INFO')
  result, history, (chosen, refit) = _run(batches_dir, tmp_path, monkeypatch,
                                          sabotage=True)
  check = history['refit_check']
  assert check['kept'] == 'chosen', check
  assert check['chosen']['accuracy'] > 0.0  # So 0 is worse.
  for got, want in zip(result.model.get_weights(), chosen):
    np.testing.assert_array_equal(got, want)
  assert any(not np.array_equal(a, b) for a, b in zip(chosen, refit))
  assert "exporting the chosen epoch's weights" in caplog.text
  # The export holds them too: the stateful model saved beside it.
  saved, _ = model_io.load_stateful_model(
      os.path.dirname(result.stateful_dir), batch_size=B)
  for got, want in zip(saved.get_weights(), chosen):
    np.testing.assert_allclose(got, want)


def test_a_refit_that_holds_on_the_carve_is_exported(batches_dir, tmp_path,
                                                    monkeypatch):
  result, history, (chosen, refit) = _run(batches_dir, tmp_path, monkeypatch,
                                          sabotage=False)
  check = history['refit_check']
  name = check['score']
  sign = -1.0 if name == 'accuracy' else 1.0
  worse = (np.float32(sign * check['refit'][name]) >
           np.float32(sign * check['chosen'][name]))
  assert check['kept'] == ('chosen' if worse else 'refit')
  for got, want in zip(result.model.get_weights(),
                       chosen if worse else refit):
    np.testing.assert_array_equal(got, want)
  # The chosen epoch's carve figures are those of a pass over its weights.
  assert set(check['chosen']) == set(check['refit']) >= {'loss', 'accuracy'}
