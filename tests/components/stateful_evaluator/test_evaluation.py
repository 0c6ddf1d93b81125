"""The chunked stateful evaluation and the chunking equivalence check, on
models with known outputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from components.sequence_batcher import layout
from components.sequence_batcher import read_batches
from components.sequence_batcher import reader
from components.stateful_evaluator import config as C
from components.stateful_evaluator import evaluation as E
from components.stateful_evaluator import models as models_lib
from components.stateful_evaluator import equivalence as equivalence_lib
from components.stateful_evaluator import chunked as chunked_lib
from components.stateful_evaluator import metrics as M
from components.stateful_trainer import export as trainer_export
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful import state
from components.stateful import objective as objective_lib
from tests.components.stateful_evaluator import helpers

T = 4  # num_unroll of the regression batches.


def _serving(uri):
  return os.path.join(uri, helpers.SERVING_DIR)


@pytest.mark.parametrize('mode', layout.MODES)
def test_chunked_running_sum_is_exactly_the_numpy_cumsum(
    mode, models, regression_batches, regression_sequences):
  _, meta = reader.load_metadata(regression_batches[mode], 'eval')
  loaded = models_lib.load_model(models['running_sum'], meta)
  assert loaded.spec.batch_size == 3 and loaded.spec.num_unroll == T
  # Dirty state must not leak in: the pass zeroes every lane first.
  for var in state.state_variables(loaded.model):
    var.assign(tf.fill(var.shape, 100.0))
  objective = objective_lib.make_objective(loaded.spec, loaded.module)
  records = chunked_lib.run_chunked(loaded, read_batches(regression_batches[mode],
                                               'eval'), objective)
  got = helpers.per_sequence_outputs(records)
  assert sorted(got) == sorted(s.key for s in regression_sequences)
  for seq in regression_sequences:
    positions, outputs = got[seq.key]
    np.testing.assert_array_equal(positions, np.arange(seq.length))
    np.testing.assert_array_equal(outputs[:, 0],
                                  np.cumsum(seq.features.sum(axis=1)))
  # Metrics from label_weight only: every real step, nothing else.
  preds = np.concatenate([np.cumsum(s.features.sum(axis=1))
                          for s in regression_sequences]).astype(np.float64)
  labels = np.concatenate([s.labels for s in regression_sequences])
  settings = M.MetricSettings.for_task('regression', None, 1, C.EvalConfig())
  overall = M.compute_metrics(records, settings)
  assert overall['weighted_count'] == sum(helpers.REGRESSION_LENGTHS)
  assert overall['mae'] == pytest.approx(np.mean(np.abs(preds - labels)),
                                         abs=1e-12)
  assert overall['rmse'] == pytest.approx(
      np.sqrt(np.mean((preds - labels) ** 2)), abs=1e-12)
  assert overall['loss'] == pytest.approx(np.mean((preds - labels) ** 2),
                                          abs=1e-12)


@pytest.fixture(scope='module')
def running_sum_outcome(models, regression_batches):
  config = C.EvalConfig(thresholds=(C.MetricThreshold(
      'mae', value=C.ValueThreshold(upper_bound=2.0)),),
                        equivalence_sample_size=6)
  return E.evaluate(model_uri=models['running_sum'],
                    batches_uri=regression_batches['packed'], split='eval',
                    config=config, serving_dir=_serving(models['running_sum']))


def test_running_sum_passes_the_equivalence_check_and_is_blessed(
    running_sum_outcome):
  outcome = running_sum_outcome
  eq = outcome.validation['equivalence']
  assert eq['ok'] and eq['error'] is None
  assert eq['max_abs_diff'] <= 1e-6  # Float tolerance (here exactly 0).
  assert eq['compared'] == 'per_step'
  # Multi-segment sequences come first in the sample: all five of them.
  assert eq['num_sequences'] == 6 and eq['num_multi_segment'] == 5
  assert {s['key'] for s in eq['sequences']} >= {'seq03', 'seq04', 'seq05',
                                                 'seq07', 'seq08'}
  assert eq['num_values'] == sum(s['length'] for s in eq['sequences'])
  assert outcome.blessed and outcome.reasons == []
  assert 'rubber stamp' in outcome.message


def test_metrics_document_has_every_slice(running_sum_outcome):
  doc = running_sum_outcome.metrics
  cand = doc['metrics']['candidate']
  assert list(cand) == ['overall', 'length:short', 'length:medium',
                        'length:long', 'segment:first', 'segment:later']
  assert doc['metrics']['baseline'] is None
  # Segment slices partition the labelled steps.
  assert (cand['segment:first']['weighted_count'] +
          cand['segment:later']['weighted_count'] ==
          cand['overall']['weighted_count'])
  assert cand['segment:first']['weighted_count'] == sum(
      min(n, T) for n in helpers.REGRESSION_LENGTHS)
  # Length buckets partition the sequences: 9 sequences, 3 per bucket.
  assert [cand[f'length:{b}']['num_sequences']
          for b in ('short', 'medium', 'long')] == [3, 3, 3]
  assert doc['slices']['length_ranges'] == {
      'length:short': [1, 3], 'length:medium': [4, 6],
      'length:long': [8, 13]}
  assert doc['by_position']['edges'][-1] == 13  # Longest sequence.
  json.dumps(doc, allow_nan=False)


@pytest.mark.parametrize('reference, used', [
    ('auto', 'signature serving_default'), ('twin', 'serving twin')])
def test_model_that_drops_state_between_chunks_is_not_blessed(
    models, regression_batches, reference, used):
  outcome = E.evaluate(
      model_uri=models['forgetful'], batches_uri=regression_batches['packed'],
      split='eval', config=C.EvalConfig(equivalence_reference=reference),
      serving_dir=_serving(models['forgetful']))
  eq = outcome.validation['equivalence']
  assert eq['reference'] == used
  assert not eq['ok'] and not outcome.blessed
  assert eq['max_abs_diff'] > 1.0
  by_key = {s['key']: s for s in eq['sequences']}
  for row in by_key.values():
    if row['segments'] > 1:  # Wrong from the first chunk boundary on.
      assert row['first_bad_step'] == T and row['first_bad_segment'] == 1
      assert row['max_abs_diff'] > 1e-4
    else:  # One chunk: nothing to carry, identical.
      assert row['max_abs_diff'] == 0.0
  assert len(outcome.reasons) == 1
  assert 'differ' in outcome.reasons[0] and 'segment 1' in outcome.reasons[0]
  # Its first segments are right, its later segments are not.
  cand = outcome.metrics['metrics']['candidate']
  assert cand['segment:later']['mae'] > 2 * cand['segment:first']['mae']


def test_classifier_per_sequence_metrics_and_last_step_check(
    models, classification_batches, classification_sequences):
  config = C.EvalConfig(thresholds=(C.MetricThreshold(
      'accuracy', value=C.ValueThreshold(lower_bound=0.9)),))
  outcome = E.evaluate(model_uri=models['classifier'],
                       batches_uri=classification_batches, split='eval',
                       config=config,
                       serving_dir=_serving(models['classifier']))
  # Predicted class 1 iff the running sum at the last step is positive.
  scores = np.array([np.sum(s.features) for s in classification_sequences])
  labels = np.array([s.labels[-1] for s in classification_sequences])
  preds = (scores > 0).astype(np.int64)
  overall = outcome.metrics['metrics']['candidate']['overall']
  assert overall['weighted_count'] == len(classification_sequences)
  assert overall['accuracy'] == pytest.approx(np.mean(preds == labels))
  assert overall['recall/1'] == pytest.approx(
      np.mean(preds[labels == 1] == 1))
  assert overall['precision/0'] == pytest.approx(
      np.mean(labels[preds == 0] == 0))
  assert overall['auc'] == pytest.approx(
      M.binary_auc(scores, labels == 1, np.ones(len(labels))))
  eq = outcome.validation['equivalence']
  assert eq['ok'] and eq['compared'] == 'last_step'
  assert eq['num_values'] == 2 * eq['num_sequences']  # K = 2 logits each.
  # Every third label is flipped: accuracy is about 2/3, below 0.9.
  assert not outcome.blessed
  assert outcome.reasons == [
      r for r in outcome.reasons if r.startswith('threshold failed: accuracy')]
  failure = outcome.validation['thresholds']['failures'][0]
  assert failure['value'] == pytest.approx(overall['accuracy'])


def _sample(key, length, seed=0):
  rng = np.random.default_rng(seed)
  return chunked_lib.SampledSequence(key, length,
                           rng.integers(-2, 3, (length, 2)).astype(np.float32),
                           np.zeros((length, 1), np.float32))


@pytest.mark.parametrize('serving_dir, signature, match', [
    (None, 'serving_default', 'no serving SavedModel'),
    ('/nonexistent/Format-Serving', 'serving_default', 'no SavedModel at'),
    ('running_sum', 'nope', "no signature 'nope'"),
    ('running_sum', 'step', "'step' takes ['features', 'reset', 'state_0']"),
])
def test_equivalence_check_that_cannot_run_does_not_bless(
    models, serving_dir, signature, match):
  if serving_dir == 'running_sum':
    serving_dir = _serving(models['running_sum'])
  result = equivalence_lib.check_equivalence(
      serving_dir, [_sample('a', 6)], num_outputs=1, num_unroll=T,
      config=C.EvalConfig(serving_signature=signature))
  assert not result.ok and result.max_abs_diff is None
  assert match in result.error
  assert 'could not run' in result.message


class _Double(tf.Module):
  """Stands in for a Transform graph: "raw" features are half the
  transformed ones."""

  def __call__(self, features):
    return 2.0 * features


@pytest.fixture(scope='module')
def transform_export(tmp_path_factory, models):
  """The running-sum model exported by the trainer's ServingModule with a
  transform in front of the twin."""
  uri = models['running_sum']
  loaded = models_lib.load_model(uri, {'batch_size': 2, 'num_unroll': T,
                              'feature_names': list(helpers.FEATURES),
                              'label_kind': ms.PER_STEP,
                              'label_dtype': 'float32'})
  twin = model_io.build_serving(loaded.module, loaded.spec,
                                weights_from=loaded.model)
  module = trainer_export.ServingModule(loaded.spec, twin, _Double())
  path = str(tmp_path_factory.mktemp('transform_export') / 'Format-Serving')
  tf.saved_model.save(module, path, signatures={
      'serving_default': module.serving_default.get_concrete_function()})
  return path, loaded, twin


def _running_sum_sample(key, length, seed):
  sample = _sample(key, length, seed)
  sample.chunked = np.cumsum(sample.features.sum(axis=1))[:, None]
  return sample


@pytest.mark.parametrize('reference, ok, used', [
    ('auto', True, 'serving twin'),
    ('twin', True, 'serving twin'),
    ('signature', False, 'signature serving_default'),
])
def test_reference_when_the_export_embeds_a_transform(transform_export,
                                                      reference, ok, used):
  path, _, twin = transform_export
  samples = [_running_sum_sample(f's{i}', n, i)
             for i, n in enumerate([9, 5, 2])]
  result = equivalence_lib.check_equivalence(
      path, samples, num_outputs=1, num_unroll=T,
      config=C.EvalConfig(equivalence_reference=reference),
      twin_factory=lambda: twin)
  assert result.error is None
  assert result.ok is ok and result.reference == used
  if reference == 'auto':
    assert 'Transform graph' in result.note
  if not ok:  # Transformed features fed through the transform again.
    assert result.max_abs_diff > 1.0


def test_plain_export_is_checked_through_its_signature(models):
  samples = [_running_sum_sample('s', 7, 0)]
  result = equivalence_lib.check_equivalence(
      _serving(models['running_sum']), samples, num_outputs=1, num_unroll=T,
      config=C.EvalConfig())
  assert result.ok and result.reference == 'signature serving_default'
  assert result.note is None and result.max_abs_diff == 0.0


def test_equivalence_check_reports_nan_as_a_failure(models):
  bad = _sample('a', 5)
  bad.chunked = np.cumsum(bad.features.sum(axis=1))[:, None]
  bad.chunked[2, 0] = np.nan
  result = equivalence_lib.check_equivalence(
      _serving(models['running_sum']), [bad], num_outputs=1, num_unroll=T,
      config=C.EvalConfig())
  assert not result.ok and np.isnan(result.max_abs_diff)
  assert result.sequences[0]['first_bad_step'] == 2
  assert result.to_dict()['max_abs_diff'] == 'nan'


def test_sampler_prefers_multi_segment_sequences_whatever_the_order():
  offers = [('s%d' % i, n) for i, n in enumerate([1, 9, 2, 5, 3, 13, 4, 8])]

  def sample(order, size=3):
    sampler = chunked_lib.SequenceSampler(size, seed=7, num_unroll=T)
    for key, n in order:
      sampler.offer(key, n)
    return {k for k, _ in offers if sampler.wants(k)}

  chosen = sample(offers)
  assert chosen == sample(offers[::-1]) == sample(offers[3:] + offers[:3])
  assert len(chosen) == 3
  multi = {k for k, n in offers if n > T}
  assert chosen <= multi
  assert sample(offers, size=6) >= multi


def test_sampler_reassembles_segments_and_checks_them():
  sampler = chunked_lib.SequenceSampler(2, seed=0, num_unroll=2)
  sampler.offer('a', 3)
  feats = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
  sampler.add('a', 0, feats[0], feats[0][:, :1])
  sampler.add('a', 1, feats[1], feats[1][:, :1])
  (seq,) = sampler.sequences()
  np.testing.assert_array_equal(seq.features, feats.reshape(4, 2)[:3])
  np.testing.assert_array_equal(seq.chunked[:, 0], [0, 2, 4])
  sampler.offer('b', 5)
  with pytest.raises(models_lib.EvaluationError, match='segments'):
    sampler.sequences()
  with pytest.raises(models_lib.EvaluationError, match='starts twice'):
    sampler.offer('a', 3)


@pytest.mark.parametrize('change, match', [
    (dict(feature_names=('x0', 'y')), 'trained on features'),
    (dict(label_kind=ms.PER_SEQUENCE), 'per_sequence labels'),
    (dict(task=ms.CLASSIFICATION, num_classes=2, output_size=None),
     'class ids must be integers'),
])
def test_model_that_does_not_fit_the_batches_is_an_error(change, match):
  spec = ms.ModelSpec(batch_size=3, num_unroll=T, stateful=True,
                      feature_names=helpers.FEATURES,
                      label_kind=ms.PER_STEP, task=ms.REGRESSION,
                      output_size=1)
  meta = {'feature_names': list(helpers.FEATURES), 'label_kind': 'per_step',
          'label_dtype': 'float32'}
  models_lib.check_model_fits_batches(spec, meta)
  with pytest.raises(models_lib.EvaluationError, match=match):
    models_lib.check_model_fits_batches(spec.replace(**change), meta)


def test_thresholds_on_metrics_the_task_lacks_are_an_error(
    models, regression_batches):
  config = C.EvalConfig(thresholds=(C.MetricThreshold(
      'accuracy', value=C.ValueThreshold(lower_bound=0.5)),))
  with pytest.raises(C.EvalConfigError, match='not computed'):
    E.evaluate(model_uri=models['running_sum'],
               batches_uri=regression_batches['packed'], split='eval',
               config=config, serving_dir=None)
