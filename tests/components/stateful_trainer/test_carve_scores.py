"""The validation carve scored on its own batches (``carve.carve_batches``)
gives the scores of the whole-batch pass it replaces: every batch of the
train split run statefully, only the carve's steps weighted
(``valid_weight``), up to the order of summation."""

import numpy as np
import pytest

from benchmarks import lstm_module
from components.sequence_batcher import layout
from components.stateful import batches as batches_lib
from components.stateful import carve as carve_lib
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful import objective as objective_lib
from components.stateful_trainer import model_setup
from components.stateful.distribution import replicas
from components.stateful_trainer import validation
from tests.components.stateful_trainer import helpers

B, T, F = 3, 4, 2
FRACTION = 0.4
# Many sequences on 3 lanes: each lane runs several back to back, so carve
# sequences start mid-lane, after other sequences' steps and state.
LENGTHS = [1, 2, 3, 4, 5, 7, 8, 9, 11, 13, 17, 23, 3, 4, 6, 2, 1, 12, 16, 5,
           9, 10, 4, 7]


def _source(tmp_path, mode, label_kind):
  seqs = helpers.random_sequences(
      LENGTHS, F, seed=11, per_step_labels=label_kind == ms.PER_STEP)
  root = helpers.write_batches(str(tmp_path / mode), {'train': seqs},
                               batch_size=B, num_unroll=T, mode=mode,
                               label_kind=label_kind,
                               feature_names=['x0', 'x1'])
  return batches_lib.BatchSource.open(root, 'train')


def _model(module_name, source, label_kind):
  hyperparameters = {'kernels': 24} if module_name == 'conv' else {}
  spec = ms.ModelSpec(batch_size=B, num_unroll=T, stateful=True,
                      feature_names=('x0', 'x1'), label_kind=label_kind,
                      task=ms.CLASSIFICATION, num_classes=2,
                      hyperparameters=hyperparameters, seed=3)
  module = model_io.resolve_module(
      module=lstm_module if module_name == 'plain_lstm' else None)
  # The default model's adapt fits its head: outputs that vary by lane.
  model, _ = model_setup.build(module, spec, source, 3)
  return model, objective_lib.make_objective(spec, module)


def _whole_batch_scores(model, objective, source):
  """The carve's scores as they were computed before its own batches:
  every train batch in order, weighted by ``valid_weight``."""
  metrics = objective.new_metrics()
  steps = replicas.compile_for(model, None, objective, eval_metrics=metrics)
  objective_lib.reset_metrics(metrics)
  steps.zero_all()
  for batch in source.dataset(validation_fraction=FRACTION):
    steps.eval({**batch, 'label_weight': batch['valid_weight']})
  steps.zero_all()
  return objective_lib.metric_results(metrics)


@pytest.mark.parametrize('module_name, label_kind, mode', [
    ('plain_lstm', ms.PER_SEQUENCE, layout.PACKED),
    ('plain_lstm', ms.PER_SEQUENCE, layout.BUCKETED),
    ('plain_lstm', ms.PER_SEQUENCE, layout.DENSE),
    ('plain_lstm', ms.PER_STEP, layout.PACKED),
    # The default model (its adapt fits the head: slower): per-lane and
    # per-step resets.
    ('conv', ms.PER_SEQUENCE, layout.PACKED),
    ('conv', ms.PER_SEQUENCE, layout.DENSE)])
def test_carve_batches_score_as_the_whole_batch_pass(tmp_path, mode,
                                                     module_name, label_kind):
  source = _source(tmp_path, mode, label_kind)
  model, objective = _model(module_name, source, label_kind)
  want = _whole_batch_scores(model, objective, source)
  carve = carve_lib.carve_batches(source, FRACTION)
  assert len(carve.batches) < source.num_batches
  got = validation._validate_only(model, objective, carve,
                                  objective.new_metrics())
  assert sorted(got) == sorted(want) and 'accuracy' in got
  for name in want:
    assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-6), name
  # Not a score any weights would give: the carve's loss is that of these
  # weights (a different model scores otherwise).
  model.set_weights([w * 0.5 for w in model.get_weights()])
  other = validation._validate_only(model, objective, carve,
                                    objective.new_metrics())
  assert abs(other['loss'] - got['loss']) > 1e-4


def test_a_runs_scorer_lays_out_once_and_scores_a_second_model_alike(
    tmp_path):
  """``CarveScorer``: a second model of the same shapes (the refit's) is
  scored through the first one's compiled step, as if compiled for it;
  the first keeps its weights; the carve is laid out once."""
  source = _source(tmp_path, layout.PACKED, ms.PER_SEQUENCE)
  first, objective = _model('plain_lstm', source, ms.PER_SEQUENCE)
  second, _ = _model('plain_lstm', source, ms.PER_SEQUENCE)
  second.set_weights([w * 0.5 for w in second.get_weights()])
  kept = [w.copy() for w in first.get_weights()]
  alone = validation._validate_only(
      second, objective, carve_lib.carve_batches(source, FRACTION),
      objective.new_metrics())
  scorer = validation.CarveScorer(source, objective)
  got_first = scorer.score(first, FRACTION)
  carve = scorer.batches(FRACTION)
  got_second = scorer.score(second, FRACTION)
  assert scorer.batches(FRACTION) is carve
  assert len(scorer._compiled) == 1  # One trace for both.
  for w, k in zip(first.get_weights(), kept):
    np.testing.assert_array_equal(w, k)
  for name in alone:
    assert got_second[name] == pytest.approx(alone[name], rel=1e-6), name
  assert abs(got_first['loss'] - got_second['loss']) > 1e-4
  assert scorer.score(first, FRACTION) == got_first
