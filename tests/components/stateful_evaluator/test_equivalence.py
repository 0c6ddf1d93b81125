"""The chunking equivalence check (chunked stateful outputs == whole-sequence
serving), the sample it replays, and the model-fit checks."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from components.stateful_evaluator.extraction import chunked as chunked_lib
from components.stateful_evaluator.checks import equivalence as equivalence_lib
from components.stateful_evaluator.extraction import models as models_lib
from components.stateful_evaluator import settings as S
from components.stateful_trainer import export as trainer_export
from components.stateful import model_io
from components.stateful import model_spec as ms
from tests.components.stateful_evaluator import helpers

T = 4  # num_unroll of the regression batches.


def _serving(uri):
  return os.path.join(uri, helpers.SERVING_DIR)


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
      config=S.StatefulSettings(serving_signature=signature))
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
      config=S.StatefulSettings(equivalence_reference=reference),
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
      config=S.StatefulSettings())
  assert result.ok and result.reference == 'signature serving_default'
  assert result.note is None and result.max_abs_diff == 0.0


def test_reference_loaded_ahead_in_a_thread_is_used_and_closed(models):
  """The evaluator loads the reference beside the chunked pass and hands
  the check its future: the same result, the session closed after."""
  import concurrent.futures
  samples = [_running_sum_sample('s', 7, 0)]
  serving = _serving(models['running_sum'])
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    future = pool.submit(equivalence_lib.load_reference, serving,
                         S.StatefulSettings(), 2)
    result = equivalence_lib.check_equivalence(
        serving, samples, num_outputs=1, num_unroll=T,
        config=S.StatefulSettings(), loaded=future.result)
  assert result.ok and result.max_abs_diff == 0.0
  assert result.reference == 'signature serving_default'
  assert future.result().served._session._closed  # pylint: disable=protected-access


def test_reference_that_failed_to_load_ahead_does_not_bless(models):
  def loaded():
    raise models_lib.EvaluationError('no SavedModel at /x')

  result = equivalence_lib.check_equivalence(
      '/x', [_sample('a', 6)], num_outputs=1, num_unroll=T,
      config=S.StatefulSettings(), loaded=loaded)
  assert not result.ok and 'no SavedModel at /x' in result.error


def test_equivalence_check_reports_nan_as_a_failure(models):
  bad = _sample('a', 5)
  bad.chunked = np.cumsum(bad.features.sum(axis=1))[:, None]
  bad.chunked[2, 0] = np.nan
  result = equivalence_lib.check_equivalence(
      _serving(models['running_sum']), [bad], num_outputs=1, num_unroll=T,
      config=S.StatefulSettings())
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
  sampler = chunked_lib.SequenceSampler(3, seed=0, num_unroll=2)
  sampler.offer('a', 3)
  feats = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
  # Pieces are keyed by their first step (packed: segment k at k * T).
  sampler.add('a', 2, feats[1], feats[1][:, :1])
  sampler.add('a', 0, feats[0], feats[0][:, :1])
  (seq,) = sampler.sequences()
  np.testing.assert_array_equal(seq.features, feats.reshape(4, 2)[:3])
  np.testing.assert_array_equal(seq.chunked[:, 0], [0, 2, 4])
  # Dense pieces: unpadded, of any length.
  sampler.offer('c', 3)
  sampler.add('c', 0, feats[0][:1], feats[0][:1, :1])
  sampler.add('c', 1, feats[1], feats[1][:, :1])
  seq_c = [q for q in sampler.sequences() if q.key == 'c'][0]
  np.testing.assert_array_equal(seq_c.chunked[:, 0], [0, 4, 6])
  sampler.offer('b', 5)
  sampler.add('b', 0, feats[0], feats[0][:, :1])
  sampler.add('b', 3, feats[1], feats[1][:, :1])  # Step 2 is missing.
  with pytest.raises(models_lib.EvaluationError, match='not whole'):
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
