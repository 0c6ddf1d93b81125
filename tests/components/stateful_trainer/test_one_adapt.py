"""One ``adapt`` per run of the default conv model: with a validation carve,
the pass that fits the carve run's weights (its labels held out) also fits
the refit's (every labelled step), so the refit does not adapt again, and
the exported model is the one two passes gave."""

import os

import numpy as np
import pytest

from components.stateful.models import conv_adapt
from components.stateful_trainer import model_setup
from components.stateful_trainer import run as runner
from components.stateful_trainer import selection
from components.stateful_trainer import settings
from tests.components.stateful_trainer import helpers

B, T = 4, 8


@pytest.fixture(scope='module')
def batches_dir(tmp_path_factory):
  # Random labels: the carve cannot score the closed form perfectly.
  return helpers.random_train_batches(
      str(tmp_path_factory.mktemp('batches')), 48, seed=1,
      batch_size=B, num_unroll=T)


def _run(batches_dir, out, monkeypatch, shared=True, trained=False,
         **train):
  """``run.run`` of the default conv model (carve and refit on, epochs
  unset: the module's fine-tuning); returns (result, adapt passes).
  ``trained``: every new carve figure scores better than the last, so the
  carve keeps the last of 2 epochs and the refit trains 2 epochs from the
  refit's adapted weights."""
  calls = []
  if trained:
    scores = {}

    def score_of(metrics, by='score'):
      del by
      key = (metrics.get('loss'), metrics.get('accuracy'))
      return 'loss', scores.setdefault(key, 1.0 - len(scores))

    monkeypatch.setattr(selection.BestWeights, 'score_of',
                        staticmethod(score_of))
    train['epochs'] = 2
  real = conv_adapt._adapt_conv

  def counted(*args, **kwargs):
    calls.append(kwargs.get('refit', args[5] if len(args) > 5 else None))
    return real(*args, **kwargs)

  monkeypatch.setattr(conv_adapt, '_adapt_conv', counted)
  if not shared:  # As before: the refit adapts again on every sequence.
    monkeypatch.setattr(model_setup, 'takes_refit', lambda module: False)
  result = runner.run(runner.TrainerArgs(
      batches_uri=batches_dir, model_uri=os.path.join(out, 'm'),
      serving_model_dir=os.path.join(out, 'm', 'Format-Serving'),
      model_run_dir=os.path.join(out, 'r'), eval_split=None,
      hyperparameters={'kernels': 16},
      train=settings.TrainConfig(log_every_n_steps=0, **train)))
  monkeypatch.undo()
  return result, calls


@pytest.mark.parametrize('trained', [False, True])
def test_one_adapt_per_run_and_the_same_model(batches_dir, tmp_path,
                                              monkeypatch, caplog, trained):
  caplog.set_level('INFO')
  result, calls = _run(batches_dir, str(tmp_path / 'one'), monkeypatch,
                       trained=trained)
  assert len(calls) == 1 and calls[0] is not None
  assert "the same pass fitted the refit's weights" in caplog.text
  assert 'adapting again' not in caplog.text
  before, calls = _run(batches_dir, str(tmp_path / 'two'), monkeypatch,
                       shared=False, trained=trained)
  assert len(calls) == 2 and calls == [None, None]
  if trained:
    assert len(result.fit.epochs) == 2  # The refit: the carve chose epoch 2.
  assert len(result.fit.epochs) == len(before.fit.epochs)
  assert result.fit.carve == before.fit.carve
  for got, want in zip(result.model.get_weights(),
                       before.model.get_weights()):
    np.testing.assert_array_equal(got, want)


def test_no_refit_no_second_fit(batches_dir, tmp_path, monkeypatch):
  """Without the refit the carve run's adapt fits its weights alone."""
  _, calls = _run(batches_dir, str(tmp_path / 'norefit'), monkeypatch,
                  refit=False)
  assert calls == [None]
