"""Randomised truncation (``TrainConfig.random_truncation``): seeded cut
points, the state carried across a cut, the gradient stopped there, and a
resumed run that cuts where the uninterrupted one did."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components.stateful import objective as objective_lib
from components.stateful import steps
from components.stateful_trainer import run as runner
from components.stateful_trainer import settings
from tests.components.stateful_trainer import helpers

B, T, F = 2, 6, 2


def test_cut_points_are_seeded_and_inside_the_segment():
  draws = [steps.cut_point(3, s, T, 0.5) for s in range(400)]
  assert draws == [steps.cut_point(3, s, T, 0.5) for s in range(400)]
  cuts = [c for c in draws if c is not None]
  assert set(cuts) == set(range(1, T))
  assert 0.4 < len(cuts) / len(draws) < 0.6
  assert draws != [steps.cut_point(4, s, T, 0.5) for s in range(400)]
  assert steps.cut_point(3, 0, T, 0.0) is None
  assert steps.cut_point(3, 0, 1, 1.0) is None  # T = 1: nowhere to cut.


def _batch(seed=0, dense=False):
  rng = np.random.default_rng(seed)
  reset = (np.zeros((B, T), np.int64) if dense else np.ones(B, np.int64))
  if dense:
    reset[:, 0] = 1
    reset[0, 4] = 1
  return {'features': tf.constant(rng.normal(size=(B, T, F)), tf.float32),
          'labels': tf.constant(rng.integers(0, 2, size=(B, T))),
          'mask': tf.ones((B, T)), 'label_weight': tf.ones((B, T)),
          'reset': tf.constant(reset)}


def test_split_batch_keeps_a_lane_reset_with_the_first_part():
  first, second = steps.split_batch(_batch(), 2)
  assert first['features'].shape == (B, 2, F)
  assert second['features'].shape == (B, T - 2, F)
  np.testing.assert_array_equal(first['reset'], [1, 1])
  np.testing.assert_array_equal(second['reset'], [0, 0])
  first, second = steps.split_batch(_batch(dense=True), 4)
  np.testing.assert_array_equal(second['reset'].numpy()[:, 0], [1, 0])


def _train(rate, probability, dense):
  keras.utils.set_random_seed(0)
  spec = helpers.classification_spec(B, T, ['a', 'b'], units=[3])
  from components.stateful import model_io  # pylint: disable=g-import-not-at-top
  module = model_io.resolve_module()
  # Any length: a cut batch runs as two parts.
  model = model_io.build_stateful(module, spec.replace(num_unroll=None))
  objective = objective_lib.make_objective(spec, module)
  optimizer = keras.optimizers.SGD(rate)
  optimizer.build(model.trainable_variables)
  fns = steps.compile_steps(model, optimizer, objective,
                            objective.new_metrics(), objective.new_metrics())
  train = steps.with_random_truncation(
      fns.train, lambda: int(optimizer.iterations), seed=0,
      probability=probability)
  for i in range(3):
    train(_batch(i, dense))
  return helpers.weights_of(model), helpers.state_values(model)


@pytest.mark.parametrize('dense', [False, True])
def test_a_cut_carries_the_state_and_stops_the_gradient(dense):
  # No update: the state after the cut batches is the uncut state.
  _, cut_states = _train(0.0, 1.0, dense)
  _, whole_states = _train(0.0, 0.0, dense)
  for a, b in zip(cut_states, whole_states):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # With updates the cut changes the gradients (and makes two steps).
  cut_weights, _ = _train(0.5, 1.0, dense)
  whole_weights, _ = _train(0.5, 0.0, dense)
  assert any(not np.allclose(a, b, atol=1e-6)
             for a, b in zip(cut_weights, whole_weights))


def test_a_resumed_run_cuts_where_the_uninterrupted_one_did(tmp_path):
  splits = {'train': helpers.random_sequences([9, 14, 7, 11, 5, 12], F,
                                              seed=3)}
  root = helpers.write_batches(str(tmp_path / 'b'), splits, batch_size=B,
                               num_unroll=4, feature_names=['a', 'b'])

  def args(name, **kw):
    return runner.TrainerArgs(
        batches_uri=root, model_uri=str(tmp_path / name / 'm'),
        serving_model_dir=str(tmp_path / name / 'm' / 's'),
        model_run_dir=str(tmp_path / name / 'r'), eval_split=None,
        checkpoint_dir=str(tmp_path / name / 'c'),
        hyperparameters={'model': 'lstm', 'units': [3]},
        train=settings.TrainConfig(
            epochs=3, random_truncation=0.7, validation_fraction=0.0,
            log_every_n_steps=0, checkpoint_every_n_steps=3, **kw))

  whole = runner.run(args('whole'))

  class Crash(RuntimeError):
    pass

  def crash(step):
    if step == 7:
      raise Crash()

  with pytest.raises(Crash):
    runner.run(args('resumed'), after_step=crash)
  resumed = runner.run(args('resumed'))
  assert resumed.fit.resumed_from is not None
  for a, b in zip(helpers.weights_of(whole.model),
                  helpers.weights_of(resumed.model)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
