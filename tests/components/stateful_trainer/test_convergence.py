"""The budget by convergence (``TrainConfig.budget='convergence'``) and
selection by the carve's loss (``select_by='loss'``): scripted loss and score
curves, the rate the optimizer follows, a fit to convergence, a resumed one
and the run's plan."""

import os

import numpy as np
import pytest
import tensorflow as tf

from components.stateful import model_spec as ms
from components.stateful import objective as objective_lib
from components.stateful_trainer import recipe as recipe_lib
from components.stateful_trainer import optimizers
from components.stateful_trainer import run as trainer_run
from components.stateful_trainer import selection
from components.stateful_trainer import settings
from components.stateful_trainer import training
from tests.components.stateful_trainer import helpers
from tests.components.stateful_trainer import test_selection as ts


def _plateau(**kw):
  args = dict(patience_steps=100, min_epochs=3, factor=0.1, max_reductions=2)
  args.update(kw)
  return selection.Plateau(**args)


def _walk(losses, steps_per_epoch, plateau, accuracies=None):
  """Feeds a scripted carve curve through ``BestWeights`` and ``plateau``;
  returns the verdict after each epoch, until a stop."""
  model = ts._model(1.0)
  best = selection.BestWeights(model)
  verdicts = []
  for epoch, loss in enumerate(losses):
    metrics = {'loss': loss}
    if accuracies is not None:
      metrics['accuracy'] = accuracies[epoch]
    best.offer(model, metrics, epoch)
    verdicts.append(plateau.after_epoch(epoch, best.last_gain(),
                                        steps_per_epoch,
                                        (epoch + 1) * steps_per_epoch))
    if verdicts[-1] == selection.STOP:
      break
  return verdicts


def test_a_falling_loss_never_stops_training():
  """While the carve's loss falls, however slowly, no rate drop and no
  stop: the epochs rule's count is no reason to stop."""
  losses = [1.0 / (1 + 0.01 * e) for e in range(200)]
  verdicts = _walk(losses, 5, _plateau())
  assert set(verdicts) == {selection.CONTINUE} and len(verdicts) == 200


def test_a_scripted_plateau_drops_the_rate_then_stops():
  """Falls for 10 epochs of 10 steps, then flat: the rate drops after 10
  quiet epochs (100 steps), again 10 epochs later, and the third plateau
  stops training; a fall after the first drop restarts the count."""
  plateau = _plateau()
  losses = [1.0 - 0.05 * e for e in range(10)] + [0.6] * 100
  verdicts = _walk(losses, 10, plateau)
  drops = [e for e, v in enumerate(verdicts) if v == selection.REDUCE]
  assert drops == [19, 29]
  assert verdicts[-1] == selection.STOP and len(verdicts) == 40
  assert plateau.drop_steps() == [200, 300]
  # A lower loss after the first drop: patience counts from it.
  plateau = _plateau()
  losses = ([1.0 - 0.05 * e for e in range(10)] + [0.6] * 12 + [0.5] +
            [0.5] * 100)
  verdicts = _walk(losses, 10, plateau)
  assert [e for e, v in enumerate(verdicts)
          if v == selection.REDUCE] == [19, 32]
  assert len(verdicts) == 43
  # A flat accuracy (ties keep the later epoch) is still a plateau.
  verdicts = _walk([0.5] * 60, 10, _plateau(), accuracies=[0.4] * 60)
  assert verdicts.index(selection.REDUCE) == 10


def test_patience_is_counted_in_steps_with_a_floor_of_epochs():
  """An epoch of 50 steps: 2 quiet epochs are 100 steps but fewer than the
  3-epoch floor; an epoch of 2 steps: 50 quiet epochs before a drop."""
  flat = [0.5] * 200
  assert _walk(flat, 50, _plateau()).index(selection.REDUCE) == 3
  assert _walk(flat, 2, _plateau()).index(selection.REDUCE) == 50


def test_nothing_drops_or_stops_before_the_floor():
  """A model on the class prior for 12 epochs of 33 steps before it
  learns: with a floor of 20 epochs (the epochs rule's role), the plateau
  neither drops the rate nor stops it; without the floor it would drop at
  epoch 10."""
  losses = [2.0] * 12 + [2.0 - 0.05 * e for e in range(1, 20)] + [1.0] * 80
  assert _walk(losses, 33, _plateau(min_epochs=10)).index(
      selection.REDUCE) == 10
  verdicts = _walk(losses, 33, _plateau(min_epochs=10, floor_epochs=20))
  assert [e for e, v in enumerate(verdicts)
          if v == selection.REDUCE] == [41, 51]
  assert len(verdicts) == 62 and verdicts[-1] == selection.STOP


def test_selection_by_loss_does_not_keep_a_noise_epoch():
  """A small carve: its accuracy jumps by one sequence from epoch to epoch
  (a lucky peak at epoch 1), while its loss falls to epoch 7. By score the
  lucky epoch is kept; by loss the trained one."""
  accuracies = [0.29, 0.57, 0.14, 0.43, 0.29, 0.43, 0.43, 0.43, 0.29, 0.43]
  losses = [2.2, 2.0, 1.8, 1.6, 1.5, 1.4, 1.35, 1.3, 1.32, 1.36]
  model = ts._model(1.0)
  by_score = selection.BestWeights(model)
  by_loss = selection.BestWeights(model, by='loss')
  for epoch, (acc, loss) in enumerate(zip(accuracies, losses)):
    for best in (by_score, by_loss):
      best.offer(model, {'accuracy': acc, 'loss': loss}, epoch)
  assert int(by_score.epoch) == 1
  assert int(by_loss.epoch) == 7
  assert float(by_loss.score) == pytest.approx(1.3)
  assert selection.BestWeights.unbeatable({'accuracy': 1.0, 'loss': 0.1})
  assert not selection.BestWeights.unbeatable(
      {'accuracy': 1.0, 'loss': 0.1}, by='loss')


def test_the_rate_follows_the_drops_and_the_replay_repeats_them():
  config = settings.OptimizerConfig(learning_rate=0.01, warmup_fraction=0.0)
  live = _plateau()
  rate = optimizers.learning_rate(config, 100, live)
  assert float(rate(0)) == pytest.approx(0.01)
  live.after_epoch(5, 0, 50, 300)  # 5 quiet epochs of 50 steps: a drop.
  assert live.drop_steps() == [300]
  assert float(rate(300)) == pytest.approx(0.001)
  replay = _plateau(boundaries=selection.replay_of(live, 1000))
  replayed = optimizers.learning_rate(config, 100, replay)
  assert float(replayed(299)) == pytest.approx(0.01)
  assert float(replayed(300)) == pytest.approx(0.001)
  assert selection.replay_of(live, 300) == ()  # A refit of 300 steps.
  # The warm-up still ramps over the planned steps.
  warm = optimizers.learning_rate(settings.OptimizerConfig(
      learning_rate=0.01, warmup_fraction=0.1), 100, _plateau())
  assert float(warm(4)) == pytest.approx(0.005)


def _fit(model, source, plateau, epochs, **kw):
  spec = ms.ModelSpec(batch_size=ts.B, num_unroll=ts.T, stateful=True,
                      feature_names=('x',), label_kind=ms.PER_STEP,
                      task=ms.REGRESSION, output_size=1)
  optimizer = optimizers.make_optimizer(settings.OptimizerConfig(
      learning_rate=0.05, clip_global_norm=None, warmup_fraction=0.0),
                                        epochs * source.num_batches, plateau)
  return training.fit(model, optimizer=optimizer,
                      objective=objective_lib.make_objective(spec),
                      train=source, config=settings.TrainConfig(
                          epochs=epochs, validation_fraction=0.3,
                          log_every_n_steps=0, score_initial=False),
                      plateau=plateau, **kw)


def test_fit_trains_to_convergence_and_says_why(tmp_path, caplog):
  """Linear regression with noise: the carve's loss stops falling once the
  fit is as good as the noise allows; the rate drops twice, then training
  stops well before the cap, with the reason in the result and the log."""
  source = ts._source(tmp_path)
  caplog.set_level('INFO')
  plateau = _plateau(patience_steps=2 * source.num_batches, min_epochs=2)
  result = _fit(ts._model(0.0), source, plateau, epochs=300)
  assert result.stop_reason == 'converged', result.stop_reason
  assert result.finished and len(result.epochs) < 300
  assert int(plateau.reductions) == 2
  drops = plateau.drop_steps()
  assert drops[0] < drops[1] <= result.steps
  assert 'the rate drops 10x after epoch' in caplog.text
  assert 'converged after epoch' in caplog.text
  assert ts._carve_loss(ts._model(2.0), source) == pytest.approx(
      result.epochs[result.best_epoch].valid['loss'], rel=0.05)


def test_a_resumed_fit_makes_the_same_decisions(tmp_path):
  source = ts._source(tmp_path)
  patience = dict(patience_steps=2 * source.num_batches, min_epochs=2)
  whole_plateau = _plateau(**patience)
  whole_model = ts._model(0.0)
  whole = _fit(whole_model, source, whole_plateau, epochs=300,
               checkpoint_dir=str(tmp_path / 'a'))
  stop_at = whole_plateau.drop_steps()[0] + 3
  first = _fit(ts._model(0.0), source, _plateau(**patience), epochs=300,
               checkpoint_dir=str(tmp_path / 'b'),
               after_step=lambda step: step >= stop_at)
  assert first.stop_reason == 'hook' and not first.finished
  resumed_plateau = _plateau(**patience)
  resumed_model = ts._model(0.0)
  resumed = _fit(resumed_model, source, resumed_plateau, epochs=300,
                 checkpoint_dir=str(tmp_path / 'b'))
  assert resumed.resumed_from and resumed.stop_reason == 'converged'
  assert resumed_plateau.drop_steps() == whole_plateau.drop_steps()
  assert resumed.best_epoch == whole.best_epoch
  for a, b in zip(resumed_model.get_weights(), whole_model.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_the_epochs_rule_gives_40_epochs():
  """40 epochs whatever the number of sequences (fewer for more sequences
  did worse, BENCHMARKS.md section 13); a module's default_epochs or a set
  count comes first."""
  plan = recipe_lib.plan_budget
  assert plan(settings.TrainConfig(), None, 6)[0].epochs == 40
  assert plan(settings.TrainConfig(), 5, 6)[0].epochs == 5
  assert plan(settings.TrainConfig(epochs=3), 5, 6)[0].epochs == 3


def test_the_plan_applies_convergence_only_where_the_rule_would():
  conv = settings.TrainConfig(budget='convergence')
  config, plan = recipe_lib.plan_budget(conv, None, 6)
  assert plan.convergence and config.epochs == 4 * settings.RULE_EPOCHS
  assert plan.planned_steps == settings.RULE_EPOCHS * 6
  assert plan.floor_epochs == settings.RULE_EPOCHS
  assert plan.plateau().floor_epochs == settings.RULE_EPOCHS
  # Set epochs, a module's default_epochs, or no carve: the epochs as before.
  assert not recipe_lib.plan_budget(conv.replace(epochs=7), None,
                                    6)[1].convergence
  config, plan = recipe_lib.plan_budget(conv, 5, 6)
  assert not plan.convergence and config.epochs == 5
  config, plan = recipe_lib.plan_budget(
      conv.replace(validation_fraction=0.0), None, 6)
  assert not plan.convergence and config.epochs == settings.RULE_EPOCHS
  assert plan.plateau() is None
  with pytest.raises(settings.TrainingConfigError, match='budget'):
    settings.TrainConfig(budget='forever')
  with pytest.raises(settings.TrainingConfigError, match='select_by'):
    settings.TrainConfig(select_by='luck')


def test_a_run_by_convergence_records_its_budget(tmp_path):
  seqs = helpers.random_sequences([5, 7, 3, 9, 6, 4, 8, 5, 6, 7, 5, 6], 2,
                                  seed=3)
  root = helpers.write_batches(str(tmp_path / 'b'), {'train': seqs},
                               batch_size=2, num_unroll=4)
  module = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.dirname(os.path.abspath(__file__))))), 'benchmarks',
                        'lstm_module.py')
  tmp = str(tmp_path / 'run')
  result = trainer_run.run(trainer_run.TrainerArgs(
      batches_uri=root, model_uri=os.path.join(tmp, 'model'),
      serving_model_dir=os.path.join(tmp, 'model', 'Format-Serving'),
      model_run_dir=os.path.join(tmp, 'run'), eval_split=None,
      module_file=module, hyperparameters={'units': 4},
      train=settings.TrainConfig(budget='convergence', log_every_n_steps=0,
                                 validation_fraction=0.3, refit=True)))
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(tmp, 'run', 'history.json')) as f:
    history = json.load(f)
  assert history['budget']['kind'] == 'convergence'
  assert history['budget']['cap_epochs'] == 4 * settings.RULE_EPOCHS
  assert history['selection']['stop_reason'] in ('converged', 'epochs')
  assert result.fit.stop_reason == 'epochs'  # The refit: its replayed epochs.
  drops = history['budget']['rate_drops_at_steps']
  assert drops == sorted(drops) and len(drops) <= settings.RATE_REDUCTIONS
