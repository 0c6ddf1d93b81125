"""The StatefulEvaluator executor and component on tiny artifacts, and the
stock TFX Pusher reading its blessing."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import pytest
import tensorflow_model_analysis as tfma
from tfx import types
from tfx.components.evaluator import constants
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.sequence_batcher.component import SequenceBatches
from components.stateful_evaluator import component as component_lib
from components.stateful_evaluator import executor as executor_lib
from components.stateful_evaluator import settings as S
from components.stateful_evaluator.analysis import config as tfma_config


def _config(class_name, *, upper=None, direction=None, absolute=None):
  """A tfma.EvalConfig with one regression metric and its threshold."""
  metric = tfma.MetricConfig(class_name=class_name)
  if upper is not None:
    metric.threshold.value_threshold.upper_bound.value = upper
  if direction is not None:
    metric.threshold.change_threshold.direction = direction
    metric.threshold.change_threshold.absolute.value = absolute
  return tfma.EvalConfig(metrics_specs=[tfma.MetricsSpec(metrics=[metric])],
                         slicing_specs=[tfma.SlicingSpec()])


MAE_AT_MOST_2 = _config('MeanAbsoluteError', upper=2.0)


def _model(uri: str, artifact_id: int) -> standard_artifacts.Model:
  model = standard_artifacts.Model()
  model.uri = uri
  model.id = artifact_id
  return model


def _batches(uri: str) -> SequenceBatches:
  batches = SequenceBatches()
  batches.uri = uri
  batches.split_names = artifact_utils.encode_split_names(['eval'])
  return batches


def _run(tmp_path, name, model, batches, config, baseline=None, **props):
  evaluation = standard_artifacts.ModelEvaluation()
  evaluation.uri = str(tmp_path / name / 'evaluation')
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / name / 'blessing')
  os.makedirs(blessing.uri)  # The orchestrator creates output folders.
  inputs = {'model': [model], 'batches': [batches]}
  if baseline is not None:
    inputs['baseline_model'] = [baseline]
  exec_properties = {'split': 'eval', 'eval_config': tfma_config.to_json(config),
                     'settings': S.StatefulSettings().to_json(), **props}
  executor_lib.Executor().Do(inputs, {'evaluation': [evaluation],
                                      'blessing': [blessing]},
                             exec_properties)
  return evaluation, blessing


@pytest.fixture(scope='module')
def runs(tmp_path_factory, models, regression_batches):
  """Executor runs shared by the tests below."""
  tmp = tmp_path_factory.mktemp('executor')
  batches = _batches(regression_batches['packed'])
  good = _model(models['running_sum'], 11)
  return {
      'no_baseline': _run(tmp, 'no_baseline', good, batches, _config(
          'MeanAbsoluteError', upper=2.0,
          direction=tfma.MetricDirection.LOWER_IS_BETTER, absolute=-1.0),
                          current_component_id='StatefulEvaluator'),
      'forgetful': _run(tmp, 'forgetful', _model(models['forgetful'], 12),
                        batches, MAE_AT_MOST_2),
      'better_than_baseline': _run(
          tmp, 'better', good, batches, _config(
              'MeanAbsoluteError',
              direction=tfma.MetricDirection.LOWER_IS_BETTER, absolute=-0.1),
          baseline=_model(models['half_sum'], 13)),
      'worse_than_required': _run(
          tmp, 'worse', good, batches, _config(
              'MeanSquaredError',
              direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute=0.0),
          baseline=_model(models['half_sum'], 13)),
  }


def _marker_files(blessing):
  return sorted(os.listdir(blessing.uri))


def test_blessed_without_baseline_is_written_as_tfx_evaluator_does(runs):
  evaluation, blessing = runs['no_baseline']
  assert blessing.get_int_custom_property('blessed') == 1
  assert _marker_files(blessing) == [constants.BLESSED_FILE_NAME]
  assert os.path.getsize(os.path.join(blessing.uri, 'BLESSED')) == 0
  assert blessing.get_string_custom_property('current_model').endswith(
      'running_sum')
  assert blessing.get_int_custom_property('current_model_id') == 11
  assert not blessing.has_custom_property('baseline_model')
  assert not blessing.has_custom_property('baseline_model_id')
  assert blessing.get_string_custom_property(
      'component_id') == 'StatefulEvaluator'
  message = blessing.get_string_custom_property('blessing_message')
  assert message.startswith('Blessed') and 'no blessed baseline' in message
  files = set(os.listdir(evaluation.uri))
  assert {'eval_config.json', 'validations.tfrecord', 'report.html',
          'stateful_evaluation.json', 'extracts.tfrecord.gz'} <= files
  assert any(f.startswith('metrics-') for f in files)
  # The stock Evaluator's layout: TFMA reads it back.
  assert tfma.load_validation_result(evaluation.uri).validation_ok
  with open(os.path.join(evaluation.uri, 'stateful_evaluation.json')) as f:
    doc = json.load(f)
  assert doc['blessed'] is True and doc['equivalence']['ok'] is True
  # The change threshold needs a baseline: dropped, the value one kept.
  (spec,) = [s for s in doc['tfma']['eval_config']['metricsSpecs']
             # One model (no baseline): TFMA names the candidate ''.
             if s.get('modelNames', ['']) in (['candidate'], ['']) and any(
                 'threshold' in m for m in s['metrics'])]
  (metric,) = [m for m in spec['metrics'] if 'threshold' in m]
  assert 'changeThreshold' not in metric['threshold']


def test_report_is_self_contained_html_with_plots(runs):
  evaluation, _ = runs['no_baseline']
  with open(os.path.join(evaluation.uri, 'report.html')) as f:
    page = f.read()
  assert page.startswith('<!DOCTYPE html>')
  assert 'BLESSED' in page
  assert 'src=' not in page and 'href=' not in page  # Nothing external.
  svgs = page.split('<svg')[1:]
  # The primary metric's bars (this config slices overall only) and the
  # regression view (predicted against actual).
  assert len(svgs) == 2
  assert 'aria-label="predicted against actual"' in page
  for svg in svgs:
    ET.fromstring('<svg' + svg.split('</svg>')[0] + '</svg>')  # Well formed.
  assert 'mean_squared_error: candidate and references' in page
  assert 'Slices' not in page


def test_state_dropping_model_is_not_blessed(runs):
  evaluation, blessing = runs['forgetful']
  assert blessing.get_int_custom_property('blessed') == 0
  assert _marker_files(blessing) == [constants.NOT_BLESSED_FILE_NAME]
  message = blessing.get_string_custom_property('blessing_message')
  assert message.startswith('Not blessed') and 'differ' in message
  with open(os.path.join(evaluation.uri, 'stateful_evaluation.json')) as f:
    doc = json.load(f)
  assert doc['equivalence']['ok'] is False
  assert doc['equivalence']['max_abs_diff'] > 1e-4


def test_change_threshold_against_baseline_passes(runs):
  evaluation, blessing = runs['better_than_baseline']
  assert blessing.get_int_custom_property('blessed') == 1
  assert blessing.get_string_custom_property('baseline_model').endswith(
      'half_sum')
  assert blessing.get_int_custom_property('baseline_model_id') == 13
  with open(os.path.join(evaluation.uri, 'stateful_evaluation.json')) as f:
    doc = json.load(f)
  metrics = doc['tfma']['metrics']
  cand = metrics['candidate']['overall']['mean_absolute_error']
  base = metrics['baseline']['overall']['mean_absolute_error']
  assert cand < base - 0.1
  assert metrics['diff']['overall']['mean_absolute_error'] == pytest.approx(
      cand - base)
  assert doc['baseline']['used'] and doc['baseline']['uri'].endswith(
      'half_sum')


def test_change_threshold_in_the_wrong_direction_fails(runs):
  evaluation, blessing = runs['worse_than_required']
  assert blessing.get_int_custom_property('blessed') == 0
  with open(os.path.join(evaluation.uri, 'stateful_evaluation.json')) as f:
    doc = json.load(f)
  (failure,) = doc['tfma']['failures']
  assert failure.startswith('mean_squared_error [overall]')
  assert doc['equivalence']['ok'] is True  # Thresholds alone decide.
  assert not tfma.load_validation_result(evaluation.uri).validation_ok


def test_unknown_split_is_an_error(tmp_path, models, regression_batches):
  with pytest.raises(ValueError, match="split 'test'"):
    _run(tmp_path, 'bad_split', _model(models['running_sum'], 1),
         _batches(regression_batches['packed']), MAE_AT_MOST_2,
         split='test')


@pytest.mark.parametrize('run, pushed', [('no_baseline', True),
                                         ('forgetful', False)])
def test_stock_pusher_pushes_only_a_blessed_model(tmp_path, runs, run,
                                                  pushed):
  _, blessing = runs[run]
  model = _model(blessing.get_string_custom_property('current_model'), 1)
  destination = tmp_path / 'serving'
  push_destination = pusher_pb2.PushDestination(
      filesystem=pusher_pb2.PushDestination.Filesystem(
          base_directory=str(destination)))
  pushed_model = standard_artifacts.PushedModel()
  pushed_model.uri = str(tmp_path / 'pushed_model')
  pusher_executor.Executor().Do(
      {'model': [model], 'model_blessing': [blessing]},
      {'pushed_model': [pushed_model]},
      {'push_destination': proto_utils.proto_to_json(push_destination),
       'custom_config': json.dumps({})})
  assert pushed_model.get_int_custom_property('pushed') == int(pushed)
  if pushed:
    (version,) = os.listdir(destination)
    served = destination / version
    assert (served / 'saved_model.pb').exists()
    assert pushed_model.get_string_custom_property(
        'pushed_destination') == str(served)
  else:
    assert not destination.exists()


def test_component_wires_channels_and_validates_config():
  model = types.Channel(type=standard_artifacts.Model)
  batches = types.Channel(type=SequenceBatches)
  baseline = types.Channel(type=standard_artifacts.Model)
  evaluator = component_lib.StatefulEvaluator(
      model=model, batches=batches, baseline_model=baseline,
      eval_config=MAE_AT_MOST_2,
      settings=S.StatefulSettings(no_skill_margin=0.05))
  assert evaluator.exec_properties['split'] == 'eval'
  assert tfma_config.coerce(
      evaluator.exec_properties['eval_config']) == MAE_AT_MOST_2
  assert S.coerce(evaluator.exec_properties['settings']).no_skill_margin == (
      0.05)
  assert evaluator.outputs['evaluation'].type_name == 'ModelEvaluation'
  assert evaluator.outputs['blessing'].type_name == 'ModelBlessing'
  assert evaluator.inputs['baseline_model'] is baseline
  # No baseline, config as a dict; bad settings fail when built.
  plain = component_lib.StatefulEvaluator(
      model=model, batches=batches, split='test',
      eval_config={'slicingSpecs': [{}]},
      settings={'equivalence_tolerance': 1e-3})
  assert 'baseline_model' not in plain.inputs
  assert plain.exec_properties['split'] == 'test'
  with pytest.raises(S.SettingsError, match='unknown'):
    component_lib.StatefulEvaluator(model=model, batches=batches,
                                    settings={'tolerance': 1e-3})
  with pytest.raises(tfma_config.EvalConfigError):
    component_lib.StatefulEvaluator(model=model, batches=batches,
                                    eval_config={'thresholds': 1})
  with pytest.raises(TypeError):
    component_lib.StatefulEvaluator(model=batches, batches=batches)
