"""One evaluation end to end on models with known outputs: the chunked pass
writes exact extracts, TFMA computes metrics, slices, plots, diffs and
validations (read back with TFMA's own loaders), and the blessing combines
TFMA's verdict, the chunked == whole check and the no-skill gate."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma

from components.sequence_batcher import layout
from components.sequence_batcher import reader
from components.stateful import model_spec as ms
from components.stateful.state import protocol as state
from components.stateful_evaluator import evaluation as E
from components.stateful_evaluator.extraction import extracts as X
from components.stateful_evaluator.extraction import models as models_lib
from components.stateful_evaluator import settings as S
from components.stateful_evaluator.analysis import config as tfma_config
from components.stateful_evaluator.analysis import results as tfma_results
from components.stateful_evaluator.analysis import beam_run
from components.stateful_evaluator.analysis import metrics as tfma_metrics
from tests.components.stateful_evaluator import helpers

T = 4  # num_unroll of the regression batches.


def _serving(uri):
  return os.path.join(uri, helpers.SERVING_DIR)


def _read_extracts(path):
  out = []
  for record in tf.data.TFRecordDataset(path, compression_type='GZIP'):
    example = tf.train.Example.FromString(record.numpy())
    feats = example.features.feature
    out.append({k: (list(v.float_list.value) or list(v.int64_list.value) or
                    [b.decode() for b in v.bytes_list.value])
                for k, v in feats.items()})
  return out


def _mae_at_most(bound):
  cfg = tfma_config.default_eval_config(ms.REGRESSION, None)
  metric = cfg.metrics_specs[0].metrics.add(class_name='MeanAbsoluteError')
  del cfg.metrics_specs[0].metrics[-2]  # The default MAE (no threshold).
  metric.threshold.value_threshold.upper_bound.value = bound
  return cfg


@pytest.mark.parametrize('mode', layout.MODES)
def test_extracts_hold_every_labelled_step_exactly(
    tmp_path, mode, models, regression_batches, regression_sequences):
  """The chunked running sum is the NumPy cumsum at every step, each
  sequence once, whatever the lane layout; dirty state does not leak in."""
  uri = regression_batches[mode]
  _, meta = reader.load_metadata(uri, 'eval')
  loaded = models_lib.load_model(models['running_sum'], meta)
  for var in state.state_variables(loaded.model):
    var.assign(tf.fill(var.shape, 100.0))
  no_skill = X.NoSkill.from_batches(uri, 'train', loaded.spec)
  stats = X.write_extracts(loaded, None, uri, 'eval', no_skill,
                           str(tmp_path), log_every=1)
  rows = {r['key'][0]: r for r in _read_extracts(stats.path)}
  assert sorted(rows) == sorted(s.key for s in regression_sequences)
  assert stats.labelled_steps == sum(helpers.REGRESSION_LENGTHS)
  for seq in regression_sequences:
    row = rows[seq.key]
    np.testing.assert_array_equal(row['prediction'],
                                  np.cumsum(seq.features.sum(axis=1)))
    np.testing.assert_allclose(row['label'], seq.labels, rtol=1e-6)
    # Last observed value: the previous label (the training mean first).
    np.testing.assert_allclose(row['last_value_prediction'][1:],
                               seq.labels[:-1], rtol=1e-6)
    assert row['length'] == [seq.length]
    assert row['length_bucket'] == [X.length_bucket(seq.length)]


def test_length_buckets_are_powers_of_two():
  assert [X.length_bucket(n) for n in (1, 2, 3, 4, 7, 8, 100)] == [
      '1-1', '2-3', '2-3', '4-7', '4-7', '8-15', '64-127']


@pytest.fixture(scope='module', params=[layout.PACKED, layout.DENSE])
def regression_run(request, tmp_path_factory, models, regression_batches):
  """The whole evaluation (extracts, TFMA, chunked == whole, gate) on
  packed batches and on dense ones (sequences start inside segments)."""
  out = str(tmp_path_factory.mktemp('regression_eval'))
  outcome = E.evaluate(
      model_uri=models['running_sum'],
      batches_uri=regression_batches[request.param], split='eval',
      output_dir=out, eval_config=_mae_at_most(2.0),
      settings=S.StatefulSettings(equivalence_sample_size=6),
      serving_dir=_serving(models['running_sum']))
  E.write_outputs(outcome, out)
  return out, outcome


def test_per_step_regression_evaluates_every_labelled_step(
    regression_run, regression_sequences):
  out, outcome = regression_run
  preds = np.concatenate([np.cumsum(s.features.sum(axis=1))
                          for s in regression_sequences]).astype(np.float64)
  labels = np.concatenate([s.labels for s in regression_sequences])
  result = tfma.load_eval_result(out)
  overall = dict(result.slicing_metrics)[()]['']['']
  # One example per sequence, its labelled steps as arrays: TFMA counts
  # and scores every step.
  assert outcome.document['extracts']['examples'] == len(regression_sequences)
  assert overall['example_count']['doubleValue'] == sum(
      helpers.REGRESSION_LENGTHS)
  assert overall['weighted_example_count']['doubleValue'] == pytest.approx(
      sum(helpers.REGRESSION_LENGTHS))
  assert overall['mean_squared_error']['doubleValue'] == pytest.approx(
      np.mean((preds - labels) ** 2), rel=1e-5)
  assert overall['mean_absolute_error']['doubleValue'] == pytest.approx(
      np.mean(np.abs(preds - labels)), rel=1e-5)
  # A length slice per power-of-two bucket of the eval lengths.
  buckets = {X.length_bucket(n) for n in helpers.REGRESSION_LENGTHS}
  sliced = {dict(k).get(X.LENGTH_BUCKET) for k, _ in result.slicing_metrics}
  assert buckets <= sliced
  # Blessed: within the MAE bound, chunked == whole, far better than the
  # training mean and the last observed value.
  assert outcome.blessed, outcome.message
  gate = outcome.document['no_skill']['gate']
  assert set(gate['no_skill']) == {'no_skill', 'last_value'}
  assert gate['ok'] and gate['candidate'] < gate['best_no_skill']
  assert 'no blessed baseline yet' in outcome.message


def test_documents_and_report(regression_run):
  out, outcome = regression_run
  with open(os.path.join(out, E.DOCUMENT_FILE)) as f:
    doc = json.load(f)
  assert doc['blessed'] is True and doc['tfma']['validation_ok'] is True
  assert doc['equivalence']['ok'] is True
  assert doc['tfma']['metrics']['candidate']['overall'][
      'mean_squared_error'] == pytest.approx(
          outcome.results.metrics['candidate']['overall']['mean_squared_error'])
  with open(os.path.join(out, E.REPORT_FILE)) as f:
    page = f.read()
  assert page.startswith('<!DOCTYPE html>') and 'BLESSED' in page
  assert '<svg' in page and 'No-skill gate' in page
  assert 'http://' not in page.replace('http://www.w3.org/2000/svg', '')


def test_value_threshold_failure_is_not_blessed(tmp_path, models,
                                                regression_batches):
  outcome = E.evaluate(
      model_uri=models['running_sum'],
      batches_uri=regression_batches['packed'], split='eval',
      output_dir=str(tmp_path), eval_config=_mae_at_most(0.01),
      serving_dir=_serving(models['running_sum']))
  assert not outcome.blessed
  assert any('mean_absolute_error' in r for r in outcome.reasons)


@pytest.fixture(scope='module')
def classifier_runs(tmp_path_factory, models, classification_batches):
  """The classifier alone; the constant (no-skill) classifier; the
  classifier against the constant one as its baseline (which scores
  higher on this data); the classifier as its own baseline (a cached
  re-run); and with an incomparable (regression) baseline."""
  runs = {}
  for name, model, baseline in [
      ('alone', 'classifier', None),
      ('no_skill', 'no_skill_classifier', None),
      ('worse', 'classifier', 'no_skill_classifier'),
      ('itself', 'classifier', 'classifier'),
      ('incomparable', 'classifier', 'running_sum')]:
    out = str(tmp_path_factory.mktemp(f'classifier_{name}'))
    runs[name] = (out, E.evaluate(
        model_uri=models[model], batches_uri=classification_batches,
        split='eval', output_dir=out,
        serving_dir=_serving(models[model]),
        baseline_uri=models[baseline] if baseline else None))
  return runs


def _accuracy_by_hand(sequences, scale=1.0):
  right = [int((np.sum(s.features) * scale > 0) == s.labels[-1])
           for s in sequences]
  return float(np.mean(right))


def test_classifier_metrics_slices_and_confusion_matrix(
    classifier_runs, classification_sequences):
  out, outcome = classifier_runs['alone']
  result = tfma.load_eval_result(out)
  overall = dict(result.slicing_metrics)[()]['']['']
  assert overall['sparse_categorical_accuracy']['doubleValue'] == (
      pytest.approx(_accuracy_by_hand(classification_sequences)))
  assert overall['example_count']['doubleValue'] == len(
      classification_sequences)
  assert any(dict(k).get(X.LENGTH_BUCKET) for k, _ in result.slicing_metrics)
  plots = tfma.load_plots(out)
  assert any(p.plot_keys_and_values[0].value.HasField(
      'multi_class_confusion_matrix_at_thresholds') for p in plots)
  grid = outcome.results.confusion['overall']
  assert sum(map(sum, grid)) == len(classification_sequences)
  overall = outcome.results.metrics['candidate']['overall']
  # Agreement with the matrix: test_per_class_metrics_are_by_arg_max_...
  # (this classifier ties at probability 0.5 where its running sum is 0).
  for name in ('recall', 'precision'):
    assert f'{name}/class_0' in overall and f'{name}/class_1' in overall


def test_no_skill_candidate_is_not_blessed(classifier_runs):
  _, outcome = classifier_runs['no_skill']
  assert not outcome.blessed
  assert any('no better than no skill' in r for r in outcome.reasons)
  gate = outcome.document['no_skill']['gate']
  assert gate['candidate'] <= gate['best_no_skill']
  assert outcome.document['equivalence']['ok']  # The gate alone decides.


def test_change_threshold_fails_a_worse_candidate(classifier_runs):
  _, outcome = classifier_runs['worse']
  diff = outcome.results.metrics['diff']['overall']
  assert diff['sparse_categorical_accuracy'] < -0.01
  # The default change threshold: accuracy may not drop by more than 0.01.
  assert not outcome.blessed
  assert any(r.startswith('threshold failed: sparse_categorical_accuracy')
             for r in outcome.reasons), outcome.reasons
  assert outcome.document['baseline']['used']


def test_baseline_that_is_the_candidate_skips_change_thresholds(
    classifier_runs):
  _, outcome = classifier_runs['itself']
  assert 'the baseline is the candidate itself' in outcome.message
  assert 'diff' not in outcome.results.metrics
  assert outcome.blessed == classifier_runs['alone'][1].blessed


def test_incomparable_baseline_is_no_baseline(classifier_runs):
  _, outcome = classifier_runs['incomparable']
  assert 'is not comparable' in outcome.message
  assert 'diff' not in outcome.results.metrics
  assert outcome.blessed == classifier_runs['alone'][1].blessed


def test_gate_can_be_turned_off(tmp_path, models, classification_batches):
  outcome = E.evaluate(
      model_uri=models['no_skill_classifier'],
      batches_uri=classification_batches, split='eval',
      output_dir=str(tmp_path),
      settings=S.StatefulSettings(require_skill=False),
      serving_dir=_serving(models['no_skill_classifier']))
  assert outcome.blessed, outcome.message
  assert 'no-skill gate off' in outcome.message
  assert not outcome.document['no_skill']['gate']['ok']


def test_model_that_drops_state_between_chunks_is_not_blessed(
    tmp_path, models, regression_batches):
  outcome = E.evaluate(
      model_uri=models['forgetful'],
      batches_uri=regression_batches['packed'], split='eval',
      output_dir=str(tmp_path),
      serving_dir=_serving(models['forgetful']))
  assert not outcome.blessed
  assert any('differ from' in r for r in outcome.reasons)


def test_complete_config_thresholds_only_on_the_candidate():
  spec = ms.ModelSpec(batch_size=2, num_unroll=3, stateful=True,
                      feature_names=('a',), task=ms.CLASSIFICATION,
                      num_classes=3)
  cfg = tfma_config.complete_config(None, spec, with_baseline=True)
  names = [m.name for m in cfg.model_specs]
  assert names == ['candidate', 'baseline']  # No-skill: no_skill_gate.py.
  assert [m.is_baseline for m in cfg.model_specs] == [False, True]
  for metrics_spec in cfg.metrics_specs:
    has = any(m.HasField('threshold') for m in metrics_spec.metrics)
    assert not has or list(metrics_spec.model_names) == ['candidate']
  # Without a baseline the change thresholds go (nothing to change from).
  alone = tfma_config.complete_config(None, spec, with_baseline=False)
  assert not any(m.threshold.HasField('change_threshold')
                 for s in alone.metrics_specs for m in s.metrics)
  bad = tfma.EvalConfig(metrics_specs=[tfma.MetricsSpec(
      model_names=['other'])])
  with pytest.raises(tfma_config.EvalConfigError, match='model specs'):
    tfma_config.complete_config(bad, spec, with_baseline=False)


@pytest.mark.parametrize('value, match', [
    ('{"metricsSpecs": 3}', 'not a tfma.EvalConfig'),
    ({'no_such_field': 1}, 'not a tfma.EvalConfig'),
])
def test_eval_config_errors(value, match):
  with pytest.raises(tfma_config.EvalConfigError, match=match):
    tfma_config.coerce(value)


@pytest.mark.parametrize('change, match', [
    (dict(equivalence_tolerance=-1), 'equivalence_tolerance'),
    (dict(no_skill_margin=float('nan')), 'no_skill_margin'),
    (dict(equivalence_sample_size=0), 'equivalence_sample_size'),
    (dict(equivalence_reference='nope'), 'equivalence_reference'),
    (dict(require_skill='yes'), 'require_skill'),
])
def test_settings_are_validated(change, match):
  with pytest.raises(S.SettingsError, match=match):
    S.StatefulSettings(**change)
  with pytest.raises(S.SettingsError, match='unknown'):
    S.coerce({'thresholds': []})
  assert S.coerce(S.StatefulSettings().to_json()) == S.StatefulSettings()


def _verdict(out):
  return tfma.load_validation_result(out)


def test_tfma_validation_agrees_with_the_blessing_on_every_path(
    classifier_runs, regression_run, tmp_path, models, regression_batches,
    classification_batches):
  """First run, baseline that passes (itself: skipped), baseline that
  fails, incomparable baseline, no skill, gate off, equivalence failure:
  TFMA's validation_ok is the blessing, never "missing thresholds", and a
  failed check of the evaluator's own is a named ValidationFailure."""
  runs = dict(classifier_runs)
  runs['regression'] = regression_run
  forgetful = str(tmp_path / 'forgetful')
  runs['forgetful'] = (forgetful, E.evaluate(
      model_uri=models['forgetful'],
      batches_uri=regression_batches['packed'], split='eval',
      output_dir=forgetful, serving_dir=_serving(models['forgetful'])))
  off = str(tmp_path / 'gate_off')
  runs['gate_off'] = (off, E.evaluate(
      model_uri=models['no_skill_classifier'],
      batches_uri=classification_batches, split='eval', output_dir=off,
      settings=S.StatefulSettings(require_skill=False),
      serving_dir=_serving(models['no_skill_classifier'])))
  blessed = {}
  for name, (out, outcome) in runs.items():
    verdict = _verdict(out)
    assert verdict.validation_ok == outcome.blessed, name
    # The reasons the message gives are the verdict's, no more, no less.
    assert (not outcome.reasons) == outcome.blessed, (name, outcome.reasons)
    assert not verdict.missing_thresholds, name
    assert verdict.rubber_stamp == (
        not outcome.document['baseline']['used']), name
    assert outcome.document['tfma']['validation_ok'] == outcome.blessed
    blessed[name] = outcome.blessed
    failed = {f.metric_key.name for s in verdict.metric_validations_per_slice
              for f in s.failures}
    if name == 'forgetful':
      assert 'chunked_whole_max_abs_diff' in failed
    if name == 'no_skill':
      assert 'no_skill_gain' in failed
  messages = {n: o.message for n, (_, o) in runs.items()}
  assert blessed['regression'], messages  # 'alone' loses to the majority.
  assert blessed['gate_off'], messages
  assert not blessed['worse'] and not blessed['no_skill']
  assert not blessed['forgetful']


def test_gate_reports_the_paired_test(regression_run, classifier_runs,
                                      regression_sequences):
  gate = regression_run[1].document['no_skill']['gate']
  assert set(gate['tests']) == {'no_skill', 'last_value'}
  # The references' figures, scored during the chunked pass: the training
  # mean's MSE and the last observed value's, by hand.
  train = helpers.make_sequences(helpers.REGRESSION_LENGTHS,
                                 label_kind=ms.PER_STEP, task=ms.REGRESSION,
                                 seed=4)
  mean = np.mean(np.concatenate([s.labels for s in train]).astype(np.float64))
  labels = [s.labels.astype(np.float64) for s in regression_sequences]
  flat = np.concatenate(labels)
  last = np.concatenate([np.concatenate([[mean], y[:-1]]) for y in labels])
  assert gate['no_skill']['no_skill'] == pytest.approx(
      np.mean((flat - mean) ** 2), rel=1e-5)
  assert gate['no_skill']['last_value'] == pytest.approx(
      np.mean((flat - last) ** 2), rel=1e-5)
  assert gate['p_value'] <= gate['significance'] == 0.05
  assert 't-test' in gate['message']
  gate = classifier_runs['alone'][1].document['no_skill']['gate']
  assert gate['tests']['no_skill']['test'] == 'sign'


def test_per_class_metrics_are_by_arg_max_on_three_classes(tmp_path):
  """Top probabilities below 0.5 (where binarising at 0.5 would count no
  prediction at all): per-class recall and precision equal the confusion
  matrix's row and column shares."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 60)
  probs = rng.dirichlet(np.ones(3) * 4, size=60) * 0.6 + 0.4 / 3
  path = str(tmp_path / 'extracts.tfrecord.gz')
  with tf.io.TFRecordWriter(path, options=tf.io.TFRecordOptions(
      compression_type='GZIP')) as w:
    for i, (y, p) in enumerate(zip(labels, probs)):
      feats = {X.KEY: X._bytes(f's{i}'), X.LENGTH: X._ints([5]),
               X.LENGTH_BUCKET: X._bytes('4-7'), X.LABEL: X._ints([y]),
               X.WEIGHT: X._floats([1.0]), X.PREDICTION: X._floats(p),
               X.NO_SKILL_PREDICTION: X._floats(np.eye(3)[0])}
      w.write(tf.train.Example(features=tf.train.Features(
          feature=feats)).SerializeToString())
  spec = ms.ModelSpec(batch_size=2, num_unroll=3, stateful=True,
                      feature_names=('a',), task=ms.CLASSIFICATION,
                      num_classes=3)
  cfg = tfma_config.complete_config(None, spec, with_baseline=False)
  out = str(tmp_path / 'out')
  beam_run.run(path, cfg, out)
  results = tfma_results.load(out, 3)
  grid = np.array(results.confusion['overall'])
  pred = probs.argmax(axis=1)
  expected = np.array([[np.sum((labels == a) & (pred == b)) for b in range(3)]
                       for a in range(3)])
  np.testing.assert_array_equal(grid, expected)
  overall = results.metrics['candidate']['overall']
  for c in range(3):
    assert overall[f'recall/class_{c}'] == pytest.approx(
        grid[c, c] / grid[c].sum())
    assert overall[f'precision/class_{c}'] == pytest.approx(
        grid[c, c] / grid[:, c].sum())


def _write_examples(path, rows):
  with tf.io.TFRecordWriter(path, options=tf.io.TFRecordOptions(
      compression_type='GZIP')) as w:
    for feats in rows:
      w.write(tf.train.Example(features=tf.train.Features(
          feature=feats)).SerializeToString())


@pytest.mark.parametrize('task', [ms.CLASSIFICATION, ms.REGRESSION])
def test_numpy_metrics_equal_the_stock_ones(tmp_path, task):
  """The default config's metrics run as ``analysis/metrics``' vectorised numpy
  combiners; in the same TFMA run the stock Keras / TFMA metrics of the
  same kind, under other names, give the same values (weighted examples,
  per-step arrays, a NaN label step left out as TFMA leaves it out)."""
  rng = np.random.default_rng(1)
  rows, classes = [], 3
  for i in range(40):
    n = int(rng.integers(1, 9))
    feats = {X.KEY: X._bytes(f's{i}'), X.LENGTH: X._ints([n]),
             X.LENGTH_BUCKET: X._bytes(X.length_bucket(n)),
             X.WEIGHT: X._floats([float(rng.uniform(0.5, 3.0))])}
    if task == ms.CLASSIFICATION:
      probs = rng.dirichlet(np.ones(classes))
      if i == 0:
        probs = np.array([1.0, 0.0, 0.0])  # -log(0): clipped alike.
      feats.update({X.LABEL: X._ints([int(rng.integers(0, classes))]),
                    X.PREDICTION: X._floats(probs),
                    X.NO_SKILL_PREDICTION: X._floats(np.eye(classes)[0])})
    else:
      labels = rng.normal(size=n) * 3
      if i == 5:
        labels[0] = np.nan
      if i % 2:  # Weights per step, as the per-step extracts carry them.
        feats[X.WEIGHT] = X._floats(rng.uniform(0.5, 3.0, n))
      feats.update({X.LABEL: X._floats(labels),
                    X.PREDICTION: X._floats(labels + rng.normal(size=n)),
                    X.NO_SKILL_PREDICTION: X._floats(np.zeros(n)),
                    X.LAST_VALUE_PREDICTION: X._floats(np.zeros(n))})
    rows.append(feats)
  path = str(tmp_path / 'extracts.tfrecord.gz')
  _write_examples(path, rows)
  kind = (dict(num_classes=classes) if task == ms.CLASSIFICATION else
          dict(output_size=1, label_kind=ms.PER_STEP))
  spec = ms.ModelSpec(batch_size=2, num_unroll=3, stateful=True,
                      feature_names=('a',), task=task, **kind)
  cfg = tfma_config.complete_config(None, spec, with_baseline=False)
  names = ({'sparse_categorical_accuracy': 'SparseCategoricalAccuracy',
            'sparse_categorical_crossentropy': 'SparseCategoricalCrossentropy'}
           if task == ms.CLASSIFICATION else
           {'mean_squared_error': 'MeanSquaredError',
            'mean_absolute_error': 'MeanAbsoluteError'})
  native = {m.class_name: m.module for m in cfg.metrics_specs[0].metrics}
  for name, cls in names.items():
    assert native[tfma_config.NATIVE_METRICS[cls]] == tfma_metrics.MODULE
    cfg.metrics_specs[0].metrics.add(class_name=cls,
                                     config=json.dumps({'name': 'stock_' + name}))
  out = str(tmp_path / 'out')
  beam_run.run(path, cfg, out)
  got = tfma_results.load(out, spec.num_classes).metrics['candidate']
  for sliced in got.values():
    for name in names:
      assert sliced[name] == pytest.approx(sliced['stock_' + name], rel=1e-6)
  assert len(got) > 1  # Overall and the length buckets.


@pytest.mark.parametrize('run', ['alone', 'worse'])
def test_load_eval_result_without_a_model_name_gives_the_candidate(
    classifier_runs, run):
  """First run: TFMA's one-model layout; with a baseline: the candidate
  is the one model with diffs, and model_name='candidate' works too."""
  out, outcome = classifier_runs[run]
  plain = dict(tfma.load_eval_result(out).slicing_metrics)[()]['']['']
  key = 'sparse_categorical_accuracy'
  if run == 'worse':
    named = dict(tfma.load_eval_result(
        out, model_name=tfma_config.CANDIDATE).slicing_metrics)[()]['']['']
    assert plain[key] == named[key]
    assert f'{key}_diff' in plain
  assert plain[key]['doubleValue'] == pytest.approx(
      outcome.results.metrics['candidate']['overall'][key])


def test_regression_view_in_the_report(regression_run, regression_sequences):
  out, outcome = regression_run
  view = outcome.document['regression_view']
  steps = sum(helpers.REGRESSION_LENGTHS)
  assert view['labelled_steps'] == steps and len(view['points']) == steps
  labels = sorted(float(v) for s in regression_sequences for v in s.labels)
  assert sorted(p[0] for p in view['points']) == pytest.approx(labels,
                                                               rel=1e-6)
  with open(os.path.join(out, E.REPORT_FILE)) as f:
    page = f.read()
  assert 'Predicted against actual' in page and '<circle' in page


def test_per_step_classification_groups_steps_and_stays_exact(tmp_path):
  """Per-step classification: one extract per (sequence, label, arg-max)
  group, far fewer than the labelled steps; every step is accounted for
  (the groups' step counts and weights), and accuracy, the confusion matrix
  and per-class top-1 recall and precision equal their per-step values."""
  lengths = (9, 14, 6, 11, 17, 8, 12, 5)

  def sequences(seed):
    r = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
      # Continuous features: the running sum is never exactly 0, so no
      # step ties at probability 0.5.
      x = r.normal(size=(n, 2)).astype(np.float32)
      cls = (np.cumsum(x.sum(axis=1)) > 0).astype(np.int64)
      flip = r.random(n) < 0.2
      out.append(layout.SequenceArrays(f's{i}', x, np.where(flip, 1 - cls,
                                                             cls)))
    return out

  evals = sequences(1)
  root = str(tmp_path / 'batches')
  helpers.write_batches(root, evals, label_kind=ms.PER_STEP, batch_size=3,
                        num_unroll=4, train=sequences(2))
  uri = helpers.write_model(str(tmp_path), 'tagger', helpers.CLASSIFIER,
                            task=ms.CLASSIFICATION, label_kind=ms.PER_STEP)
  out = str(tmp_path / 'out')
  outcome = E.evaluate(model_uri=uri, batches_uri=root, split='eval',
                       output_dir=out, settings=S.StatefulSettings(
                           equivalence_sample_size=4,
                           skill_significance=1.0),
                       serving_dir=_serving(uri))
  rows = _read_extracts(os.path.join(out, X.EXTRACTS_FILE))
  steps = sum(lengths)
  assert len(rows) < steps / 2
  assert sum(r['steps'][0] for r in rows) == steps
  assert sum(r['weight'][0] for r in rows) == pytest.approx(steps)
  labels = np.concatenate([s.labels for s in evals])
  pred = np.concatenate([(np.cumsum(s.features.sum(axis=1)) > 0)
                         for s in evals]).astype(np.int64)
  for r in rows:  # Each group's mean has its steps' arg-max.
    assert len(r['prediction']) == 2
  expected = np.array([[np.sum((labels == a) & (pred == b)) for b in range(2)]
                       for a in range(2)])
  np.testing.assert_allclose(np.array(outcome.results.confusion['overall']),
                             expected)
  overall = outcome.results.metrics['candidate']['overall']
  assert overall['sparse_categorical_accuracy'] == pytest.approx(
      np.mean(labels == pred))
  assert overall['weighted_example_count'] == pytest.approx(steps)
  for c in range(2):
    assert overall[f'recall/class_{c}'] == pytest.approx(
        expected[c, c] / expected[c].sum())
    assert overall[f'precision/class_{c}'] == pytest.approx(
        expected[c, c] / expected[:, c].sum())
  assert not any(n.startswith(('auc', 'sparse_categorical_crossentropy'))
                 for n in overall)
