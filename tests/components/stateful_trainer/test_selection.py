"""Model selection on the validation carve with the initial weights as a
candidate (``TrainConfig.score_initial``): training is kept only when an
epoch scores better than the weights it started from."""

import itertools

import numpy as np
import pytest
import tf_keras as keras

from components.sequence_batcher import layout
from components.stateful import batches as batches_lib
from components.stateful import model_spec as ms
from components.stateful import objective as objective_lib
from components.stateful_trainer import optimizers
from components.stateful_trainer import selection
from components.stateful_trainer import settings
from components.stateful_trainer import training
from components.stateful_trainer import validation
from tests.components.stateful_trainer import helpers

B, T = 4, 5


def _source(tmp_path):
  """Per-step regression, label = 2 x + noise, 40 sequences."""
  rng = np.random.default_rng(0)
  seqs = []
  for i in range(40):
    x = rng.normal(size=(int(rng.integers(3, 12)), 1)).astype(np.float32)
    y = (2.0 * x[:, 0] + 0.1 * rng.normal(size=x.shape[0])).astype(np.float32)
    seqs.append(layout.SequenceArrays(f's{i:03d}', x, y))
  root = helpers.write_batches(str(tmp_path), {'train': seqs}, batch_size=B,
                               num_unroll=T, label_kind=ms.PER_STEP)
  return batches_lib.BatchSource.open(root, 'train')


def _model(kernel):
  inputs = keras.Input(shape=(T, 1), batch_size=B)
  out = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(
      kernel), name='head')(inputs)
  return keras.Model(inputs, out)


def _fit(model, source, learning_rate, epochs=3, clock=None, **config):
  spec = ms.ModelSpec(batch_size=B, num_unroll=T, stateful=True,
                      feature_names=('x',), label_kind=ms.PER_STEP,
                      task=ms.REGRESSION, output_size=1)
  optimizer = optimizers.make_optimizer(settings.OptimizerConfig(
      learning_rate=learning_rate, clip_global_norm=None))
  return training.fit(model, optimizer=optimizer,
                      objective=objective_lib.make_objective(spec),
                      train=source, config=settings.TrainConfig(
                          epochs=epochs, validation_fraction=0.3,
                          log_every_n_steps=0, **config),
                      **({'clock': clock} if clock else {}))


def _carve_loss(model, source):
  """The validation carve's weighted MSE, by hand."""
  num = den = 0.0
  for batch in source.dataset(validation_fraction=0.3).as_numpy_iterator():
    out = model(batch['features']).numpy()[..., 0]
    w = batch['valid_weight']
    num += float(np.sum(w * (out - batch['labels']) ** 2))
    den += float(np.sum(w))
  return num / den


def test_initial_weights_are_kept_when_no_epoch_beats_them(tmp_path, caplog):
  source = _source(tmp_path)
  model = _model(2.0)  # The optimum, up to the noise.
  before = [w.copy() for w in model.get_weights()]
  initial_loss = _carve_loss(model, source)
  caplog.set_level('INFO')
  result = _fit(model, source, learning_rate=0.5)  # Overshoots.
  assert result.best_epoch == selection.INITIAL
  for w, b in zip(model.get_weights(), before):
    np.testing.assert_array_equal(w, b)
  assert all(e.valid['loss'] > initial_loss for e in result.epochs)
  assert 'validation before training' in caplog.text
  assert 'no epoch improved on them' in caplog.text
  # The logged initial score is the carve's loss of the initial weights.
  assert abs(_carve_loss(model, source) - initial_loss) < 1e-9


def test_an_epoch_that_beats_the_initial_weights_is_kept(tmp_path):
  source = _source(tmp_path)
  model = _model(0.0)
  initial_loss = _carve_loss(model, source)
  result = _fit(model, source, learning_rate=0.05, epochs=4)
  assert result.best_epoch is not None and result.best_epoch >= 0
  assert _carve_loss(model, source) < 0.5 * initial_loss


def test_score_initial_off_never_keeps_the_initial_weights(tmp_path):
  source = _source(tmp_path)
  model = _model(2.0)
  result = _fit(model, source, learning_rate=0.5, score_initial=False)
  assert result.best_epoch >= 0
  assert not np.allclose(model.get_weights()[0], 2.0)


def test_a_tie_with_the_initial_weights_keeps_them():
  model = _model(1.0)
  best = selection.BestWeights(model)
  best.offer(model, {'accuracy': 0.9, 'loss': 0.3}, selection.INITIAL)
  model.set_weights([w + 1.0 for w in model.get_weights()])
  assert not best.offer(model, {'accuracy': 0.9, 'loss': 0.2}, 0)
  assert best.offer(model, {'accuracy': 0.95, 'loss': 0.2}, 1)
  assert int(best.epoch) == 1
  # Between epochs a tie still goes to the later one.
  assert best.offer(model, {'accuracy': 0.95, 'loss': 0.1}, 2)


def test_selection_tolerance_keeps_the_latest_epoch_near_the_best():
  """Within ``tolerance`` of the best score seen, a later epoch replaces
  the kept one (its own score kept with it); outside it, it does not; the
  reference stays the best score, so a slow slide is not followed; the
  initial weights still need a strictly better score."""
  model = _model(1.0)
  best = selection.BestWeights(model, tolerance=0.1)
  assert best.offer(model, {'accuracy': 0.7, 'loss': 0.6}, 0)
  assert best.offer(model, {'accuracy': 0.6, 'loss': 0.5}, 1)  # Within.
  assert int(best.epoch) == 1
  assert float(best.score) == pytest.approx(-0.6)
  assert float(best.best) == pytest.approx(-0.7)
  assert not best.offer(model, {'accuracy': 0.55, 'loss': 0.5}, 2)
  assert best.offer(model, {'accuracy': 0.9, 'loss': 0.5}, 3)
  assert not best.offer(model, {'accuracy': 0.75, 'loss': 0.5}, 4)
  assert int(best.epoch) == 3 and float(best.best) == pytest.approx(-0.9)
  plain = selection.BestWeights(model)  # Tolerance 0: the best only.
  plain.offer(model, {'accuracy': 0.7, 'loss': 0.6}, 0)
  assert not plain.offer(model, {'accuracy': 0.69, 'loss': 0.5}, 1)
  first = selection.BestWeights(model, tolerance=0.1)
  first.offer(model, {'accuracy': 0.7, 'loss': 0.6}, selection.INITIAL)
  assert not first.offer(model, {'accuracy': 0.65, 'loss': 0.5}, 0)
  assert not first.offer(model, {'accuracy': 0.7, 'loss': 0.5}, 1)
  with pytest.raises(settings.TrainingConfigError,
                     match='selection_tolerance'):
    settings.TrainConfig(selection_tolerance=-0.1)


def test_selection_tolerance_in_the_loop(tmp_path, caplog, monkeypatch):
  """Scores 0, 1, 2, 3 (lower is better) at tolerance 1.5: epochs 1 and 2
  are kept (the log says why), epoch 3 is not, so the fit keeps epoch 2 and
  reports it as the best epoch."""
  scores = iter([0.0, 1.0, 1.5, 3.0])
  by_loss = {}  # Each epoch's carve metrics are scored more than once.

  def score_of(metrics, by='score'):
    del by
    if metrics['loss'] not in by_loss:
      by_loss[metrics['loss']] = next(scores)
    return 'accuracy', by_loss[metrics['loss']]

  monkeypatch.setattr(selection.BestWeights, 'score_of',
                      staticmethod(score_of))
  caplog.set_level('INFO')
  result = _fit(_model(0.0), _source(tmp_path), learning_rate=0.01,
                epochs=4, selection_tolerance=1.5, score_initial=False)
  assert result.best_epoch == 2
  assert caplog.text.count('(kept: within selection_tolerance') == 2
  assert '(best accuracy: epoch 3)' in caplog.text


def test_random_initial_weights_are_no_candidate(tmp_path, caplog):
  """A module whose adapt fits nothing (the default module's LSTM): the
  initial weights are random, so only trained epochs are candidates."""
  import os
  from components.stateful_trainer import run as trainer_run
  seqs = helpers.random_sequences([5, 8, 6, 7, 9, 4, 6, 8], 2, seed=3)
  root = helpers.write_batches(str(tmp_path / 'b'), {'train': seqs},
                               batch_size=B, num_unroll=T)
  caplog.set_level('INFO')
  result = trainer_run.run(trainer_run.TrainerArgs(
      batches_uri=root, model_uri=str(tmp_path / 'm'),
      serving_model_dir=os.path.join(str(tmp_path / 'm'), 'Format-Serving'),
      model_run_dir=str(tmp_path / 'r'), eval_split=None,
      hyperparameters={'model': 'lstm', 'units': [3]},
      train=settings.TrainConfig(epochs=2, log_every_n_steps=0,
                                 validation_fraction=0.5, refit=False)))
  assert 'the initial weights are not a candidate' in caplog.text
  assert 'validation before training' not in caplog.text
  assert result.fit.best_epoch in (0, 1)


def test_early_stopping_waits_while_the_carve_loss_falls(tmp_path, caplog,
                                                        monkeypatch):
  """Patience counts from the last epoch that improved the score or
  lowered the loss: a score that stands still while the loss falls does
  not stop training (a small carve's accuracy can peak by luck early)."""
  model = _model(1.0)
  best = selection.BestWeights(model)
  best.offer(model, {'accuracy': 1.0, 'loss': 0.9}, 0)
  for epoch in range(1, 6):  # The accuracy drops, the loss keeps falling.
    best.offer(model, {'accuracy': 0.75, 'loss': 0.9 - 0.1 * epoch}, epoch)
  assert int(best.epoch) == 0 and best.last_improvement() == 5
  best.offer(model, {'accuracy': 0.75, 'loss': 0.5}, 6)  # Worse loss.
  assert best.last_improvement() == 5
  # In the loop: a score that gets worse every epoch (as after a lucky
  # first accuracy) while the loss falls runs every epoch...
  source = _source(tmp_path)
  worse = itertools.count()
  monkeypatch.setattr(selection.BestWeights, 'score_of', staticmethod(
      lambda metrics, by='score': ('accuracy', float(next(worse)))))
  result = _fit(_model(0.0), source, learning_rate=0.01, epochs=6,
                early_stopping_patience=2)
  losses = [e.valid['loss'] for e in result.epochs]
  assert all(b < a for a, b in zip(losses, losses[1:]))  # Falls throughout.
  assert result.stop_reason == 'epochs' and len(result.epochs) == 6
  # ... and with the loss rising too (from the optimum, overshooting), the
  # first epoch ends it: it does not beat the initial weights, the last
  # improvement (patience after a kept epoch: the scripted test below).
  caplog.set_level('INFO')
  result = _fit(_model(2.0), source, learning_rate=0.5, epochs=6,
                early_stopping_patience=2)
  assert result.stop_reason == 'no_gain' and len(result.epochs) == 1
  assert 'no lower validation loss than the initial weights' in caplog.text


@pytest.mark.parametrize('carve, epochs_run, best_epoch, reason', [
    # Epoch 1 neither beats the initial accuracy nor lowers the loss: stop.
    ([(0.8, 0.5), (0.8, 0.6), (0.9, 0.1), (0.9, 0.1)], 1, -1, 'no_gain'),
    ([(0.8, 0.5), (0.7, 0.5), (0.9, 0.1), (0.9, 0.1)], 1, -1, 'no_gain'),
    # A better accuracy goes on, with the patience (2) from there.
    ([(0.8, 0.5), (0.9, 0.6), (0.8, 0.7), (0.8, 0.8), (0.95, 0.1)], 3, 0,
     'early_stopping'),
    # So does a lower loss.
    ([(0.8, 0.5), (0.8, 0.4), (0.9, 0.3), (0.8, 0.8), (0.8, 0.2)], 4, 1,
     'epochs'),
    # A perfect initial score: no epoch can beat it, none runs.
    ([(1.0, 0.2), (1.0, 0.1)], 0, -1, 'initial_unbeatable'),
])
def test_fine_tuning_stops_at_the_first_sign_it_does_not_help(
    tmp_path, monkeypatch, carve, epochs_run, best_epoch, reason):
  """The carve's (accuracy, loss) scripted: before training, then after
  each epoch. The first epoch that neither scores better than the initial
  weights nor lowers the carve's loss ends training; a perfect initial
  score runs none."""
  scripted = iter([{'accuracy': a, 'loss': l} for a, l in carve])
  monkeypatch.setattr(validation, '_validate_only',
                      lambda *args, **kwargs: dict(next(scripted)))
  result = _fit(_model(1.0), _source(tmp_path), learning_rate=0.01,
                epochs=4, early_stopping_patience=2)
  assert len(result.epochs) == epochs_run
  assert result.best_epoch == best_epoch
  assert result.stop_reason == reason


def test_a_perfect_score_is_unbeatable():
  unbeatable = selection.BestWeights.unbeatable
  assert unbeatable({'accuracy': 1.0, 'loss': 0.3})
  assert not unbeatable({'accuracy': 0.99, 'loss': 0.0})
  assert unbeatable({'loss': 0.0}) and not unbeatable({'loss': 1e-6})


def test_each_epoch_is_scored_by_the_weights_it_ends_with(tmp_path):
  """Selection reads a pass over the carve after the epoch (the weights
  kept), not the figures streamed during it (each step's weights)."""
  source = _source(tmp_path)
  model = _model(0.0)
  result = _fit(model, source, learning_rate=0.05, epochs=1,
                score_initial=False)
  (stats,) = result.epochs
  assert result.best_epoch == 0
  assert stats.valid['loss'] == pytest.approx(_carve_loss(model, source),
                                              rel=1e-5)
  # The weights moved during the epoch, so the streamed figures differ.
  assert abs(stats.valid_streamed['loss'] - stats.valid['loss']) > 1e-3
