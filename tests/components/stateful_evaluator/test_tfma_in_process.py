"""TFMA in the evaluator's process writes what TFMA on Beam writes: the same
metrics, plots, attributions and validation protos, slice by slice, on a
classifier against a baseline (diffs, change thresholds, per-class
metrics), per-step regression and small-slice filtering; configs that only
TFMA's Beam pipeline computes go to Beam."""

from __future__ import annotations

import glob
import math
import os

import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from google.protobuf import json_format
from tensorflow_model_analysis.proto import metrics_for_slice_pb2
from tensorflow_model_analysis.proto import validation_result_pb2

from components.stateful import model_spec as ms
from components.stateful_evaluator import evaluation as E
from components.stateful_evaluator import settings as S
from components.stateful_evaluator.analysis import config as tfma_config
from components.stateful_evaluator.analysis import histograms as tfma_histograms
from components.stateful_evaluator.analysis import in_process as tfma_in_process
from components.stateful_evaluator.analysis import tfma_internals
from tests.components.stateful_evaluator import helpers

_FILES = {'metrics': metrics_for_slice_pb2.MetricsForSlice,
          'plots': metrics_for_slice_pb2.PlotsForSlice,
          'attributions': metrics_for_slice_pb2.AttributionsForSlice,
          'validations': validation_result_pb2.ValidationResult}


def _records(out, name):
  paths = glob.glob(os.path.join(out, name + '*.tfrecord'))
  assert len(paths) == 1, paths
  protos = [_FILES[name].FromString(r)
            for r in tf.compat.v1.io.tf_record_iterator(paths[0])]
  if name == 'validations':
    return {'': json_format.MessageToDict(protos[0])}
  return {p.slice_key.SerializeToString(deterministic=True):
          json_format.MessageToDict(p) for p in protos}


def _assert_close(a, b, where):
  if isinstance(a, dict):
    assert isinstance(b, dict) and sorted(a) == sorted(b), where
    for k in a:
      _assert_close(a[k], b[k], f'{where}.{k}')
  elif isinstance(a, list):
    assert isinstance(b, list) and len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b)):
      _assert_close(x, y, f'{where}[{i}]')
  elif isinstance(a, float) and not isinstance(b, str):
    assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(
        b, rel=1e-9, abs=1e-12), where
  else:
    assert a == b, where


def _evaluate(out, *, max_examples, model, batches, baseline=None,
              eval_config=None):
  outcome = E.evaluate(
      model_uri=model, batches_uri=batches, split='eval', output_dir=out,
      eval_config=eval_config,
      settings=S.StatefulSettings(equivalence_sample_size=4,
                                  tfma_in_process_max_examples=max_examples),
      serving_dir=os.path.join(model, helpers.SERVING_DIR),
      baseline_uri=baseline)
  return outcome


def _small_slices():
  cfg = tfma_config.default_eval_config(ms.CLASSIFICATION, 2)
  cfg.options.min_slice_size.value = 3
  metric = cfg.metrics_specs[0].metrics.add(
      class_name='ExampleCount', config='{"name": "example_count_bound"}')
  metric.threshold.value_threshold.lower_bound.value = 10**6  # Fails.
  return cfg


def _mae_at_most(bound):
  cfg = tfma_config.default_eval_config(ms.REGRESSION, None)
  metric = cfg.metrics_specs[0].metrics.add(class_name='MeanAbsoluteError',
                                            config='{"name": "mae_bound"}')
  metric.threshold.value_threshold.upper_bound.value = bound
  return cfg


@pytest.mark.parametrize('case', ['baseline', 'per_step', 'small_slices'])
def test_in_process_writes_what_beam_writes(tmp_path, models,
                                            classification_batches,
                                            regression_batches, case):
  kwargs = {
      'baseline': dict(model=models['classifier'],
                       batches=classification_batches,
                       baseline=models['no_skill_classifier']),
      'per_step': dict(model=models['running_sum'],
                       batches=regression_batches['packed'],
                       eval_config=_mae_at_most(2.0)),
      'small_slices': dict(model=models['classifier'],
                           batches=classification_batches,
                           eval_config=_small_slices()),
  }[case]
  beam_out, local_out = str(tmp_path / 'beam'), str(tmp_path / 'local')
  on_beam = _evaluate(beam_out, max_examples=0, **kwargs)
  local = _evaluate(local_out, max_examples=100_000, **kwargs)
  assert on_beam.document['tfma']['runner'] == E.BEAM
  assert local.document['tfma']['runner'] == E.IN_PROCESS
  assert 'tfma_in_process_max_examples' in local.document['tfma'][
      'runner_note']
  # The file-reading path (``run``) writes what the streamed one wrote.
  from_file = str(tmp_path / 'from_file')
  config = tfma.writers.eval_config_writer.load_eval_run(local_out)[0]
  assert tfma_in_process.run(os.path.join(local_out, 'extracts.tfrecord.gz'),
                             config, from_file) == (
                                 local.document['extracts']['examples'])
  for name in _FILES:
    want, got = _records(beam_out, name), _records(local_out, name)
    assert sorted(want) == sorted(got), name
    for key in want:
      _assert_close(got[key], want[key], name)
    if name != 'validations':  # The evaluator's checks are added to it.
      assert _records(from_file, name) == got, name
  assert (local.blessed, local.reasons) == (on_beam.blessed, on_beam.reasons)
  _assert_close(local.results.metrics, on_beam.results.metrics, 'metrics')
  assert local.results.confusion == on_beam.results.confusion
  assert tfma.load_validation_result(local_out).validation_ok == (
      local.blessed)
  config, location, _, _ = tfma.writers.eval_config_writer.load_eval_run(
      local_out)
  assert location.endswith('extracts.tfrecord.gz')
  assert config == tfma.writers.eval_config_writer.load_eval_run(
      beam_out)[0]
  if case == 'baseline':  # Diffs, and the change threshold fails.
    keys = [kv['key'] for record in _records(local_out, 'metrics').values()
            for kv in record.get('metricKeysAndValues', [])]
    assert any(k.get('isDiff') for k in keys)
    assert not local.blessed
  if case == 'small_slices':
    assert not local.blessed
    assert any('example_count_bound' in r for r in local.reasons)


@pytest.mark.parametrize('change, reason', [
    (lambda c: setattr(c.options.compute_confidence_intervals, 'value', True),
     'confidence intervals'),
    (lambda c: setattr(c.metrics_specs[0], 'query_key', 'key'),
     'query-key metrics'),
    (lambda c: c.cross_slicing_specs.add(), 'cross-slicing specs'),
])
def test_what_only_beam_computes_goes_to_beam(tmp_path, change, reason):
  cfg = tfma_config.default_eval_config(ms.REGRESSION, None)
  change(cfg)
  assert tfma_in_process.unsupported(cfg) == reason
  runner, note = E.tfma_runner(cfg, 5, S.StatefulSettings())
  assert runner == E.BEAM and reason in note
  with pytest.raises(ValueError, match=reason):
    tfma_in_process.run(str(tmp_path / 'x.tfrecord.gz'), cfg, str(tmp_path))


def test_streaming_past_its_limit_overflows(tmp_path):
  cfg = tfma_config.default_eval_config(ms.REGRESSION, None)
  stream = tfma_in_process.Streaming(cfg, max_examples=2)
  record = tf.train.Example().SerializeToString()
  for _ in range(3):
    stream.put(record)
  stream.close()
  assert stream.overflowed and stream.received == 3
  with pytest.raises(ValueError, match='overflowed'):
    stream.write('x', str(tmp_path))


def test_large_extracts_go_to_beam():
  cfg = tfma_config.default_eval_config(ms.REGRESSION, None)
  settings = S.StatefulSettings(tfma_in_process_max_examples=10)
  assert E.tfma_runner(cfg, 10, settings)[0] == E.IN_PROCESS
  runner, note = E.tfma_runner(cfg, 11, settings)
  assert runner == E.BEAM and '11 examples > ' in note
  never = S.StatefulSettings(tfma_in_process_max_examples=0)
  assert E.tfma_runner(cfg, 0, never)[0] == E.BEAM
  with pytest.raises(S.SettingsError, match='tfma_in_process_max_examples'):
    S.StatefulSettings(tfma_in_process_max_examples=-1)


def test_per_class_histograms_run_vectorised():
  """The default classification config's per-class calibration histograms
  (AUC, top-1 precision and recall) take the NumPy path, so the proto
  comparisons above cover it."""
  spec = ms.ModelSpec(batch_size=2, num_unroll=3, stateful=True,
                      feature_names=('a',), task=ms.CLASSIFICATION,
                      num_classes=3)
  cfg = tfma_config.complete_config(None, spec, with_baseline=True)
  combiners = tfma_internals.combiners_of(
      tfma_in_process._SlicedMetrics(cfg)._combine)  # pylint: disable=protected-access
  fast = [c for c in combiners
          if isinstance(c, tfma_histograms.FastHistogram)]
  # Two histograms (plain and top-1) per class and model.
  assert len(fast) == 3 * 2 * 2
