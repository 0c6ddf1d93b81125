"""benchmarks/real_data.py: the training rate read from a run's
``history.json`` and its note (no pipeline run)."""

import json
import os

import pytest

from benchmarks import real_data


def _history(root, run_id, epochs):
  run = os.path.join(root, 'StatefulTrainer', 'model_run', str(run_id))
  os.makedirs(run)
  with open(os.path.join(run, 'history.json'), 'w') as f:
    json.dump({'epochs': epochs}, f)
  return os.path.join(root, 'StatefulTrainer', 'model', str(run_id))


def test_training_rate_skips_the_first_epoch_and_pools_the_rest(tmp_path):
  model_uri = _history(str(tmp_path), 9, [
      {'real_timesteps': 100.0, 'seconds': 5.0},  # Traces: left out.
      {'real_timesteps': 300.0, 'seconds': 1.0},
      {'real_timesteps': 100.0, 'seconds': 1.0}])
  # Pooled (400 steps in 2 s), not the mean of the epochs' rates (200).
  assert real_data.harness.training_rate(model_uri) == pytest.approx(200.0)
  assert real_data.harness.training_rate(model_uri + '/') == pytest.approx(200.0)


def test_training_rate_is_none_without_a_second_epoch_or_a_history(tmp_path):
  one = _history(str(tmp_path), 3, [{'real_timesteps': 50.0,
                                     'seconds': 1.0}])
  assert real_data.harness.training_rate(one) is None
  assert real_data.harness.training_rate(str(tmp_path / 'StatefulTrainer' / 'model' /
                                     '4')) is None
  assert real_data.harness.training_rate(None) is None


def test_rates_note_means_each_models_runs_and_skips_the_rest():
  cases = [real_data.Case('GunPoint'), real_data.Case('ACSF1')]
  res = {'GunPoint': {
      real_data.PLAIN: [{'real_steps_per_sec': 1000.0},
                        {'real_steps_per_sec': 2000.0}],
      real_data.LRU: [{'accuracy': 0.5}],
      real_data.OURS: [{'real_steps_per_sec': 12345.6}]},
         'ACSF1': {real_data.LRU: [{'error': 'boom'}]}}
  assert real_data.rates_note(cases, res) == (
      'GunPoint: ours 12,346, plain LSTM (a) 1,500')
  assert real_data.rates_note(cases[1:], res) is None


def test_runner_args_reach_every_pipeline_run_and_the_note(monkeypatch,
                                                          tmp_path):
  seen = []

  def child(cmd, **_):
    seen.append(cmd)
    raise RuntimeError('stop after the command')

  monkeypatch.setattr(real_data.harness.child, 'run_child', child)
  case = real_data.Case('GunPoint')
  case.meta = {'task': 'classification', 'label_kind': 'per_sequence'}
  for model in (real_data.OURS, real_data.PLAIN, real_data.LRU):
    with pytest.raises(RuntimeError):
      real_data.run_pipeline(case, model, 1, str(tmp_path),
                             ['--random-truncation', '0.5'])
  assert [c[-2:] for c in seen] == [['--random-truncation', '0.5']] * 3
  res = {'GunPoint': {
      real_data.PLAIN: [{'runner_args': ['--random-truncation', '0.5']}],
      real_data.LRU: [{'accuracy': 0.5}]}}
  assert real_data.runner_args_note([case], res) == (
      '* Pipeline runs with more local runner flags (`--runner-args`): '
      '`--random-truncation 0.5`')
  assert real_data.runner_args_note([case], {'GunPoint': {}}) is None


def test_log_run_shows_the_metrics_or_the_error():
  lines = []
  real_data.log_run(lines.append, 'GunPoint: plain', 2,
                    {'accuracy': 0.91234, 'seconds': 12.3, 'rmse': 1.0},
                    ['accuracy'])
  real_data.log_run(lines.append, 'GunPoint: plain', 3,
                    {'error': 'boom', 'log': '/w/x.log', 'seconds': 1.0},
                    ['accuracy'])
  assert lines == ["GunPoint: plain seed 2: {'accuracy': 0.9123} (12 s)",
                   'GunPoint: plain seed 3: FAILED: boom (log: /w/x.log) '
                   '(1 s)']


def test_timed_keras_records_a_failure_as_its_error_line(monkeypatch):
  def fail(*_, **kwargs):
    assert kwargs == {'learning_rate': 3e-3}
    raise ValueError('bad shape\nmore detail')

  monkeypatch.setattr(real_data, 'keras_pad_to_max', fail)
  out = real_data.timed_keras(real_data.Case('GunPoint'), [], [], 0,
                              learning_rate=3e-3)
  assert out['error'] == 'ValueError: bad shape' and out['seconds'] >= 0


def test_parse_items_and_the_failed_runs_list():
  assert real_data.parse_items('A, B:forecast,', '--datasets',
                               ('', 'forecast')) == [('A', ''),
                                                     ('B', 'forecast')]
  for bad in ('A:tagging', ' , '):
    with pytest.raises(ValueError):
      real_data.parse_items(bad, '--datasets', ('', 'forecast'))
  assert real_data.failed_runs([]) is None
  assert real_data.failed_runs(['B ours: x|y\nz', 'A ours: e', 'A ours: e'
                               ]) == [
      '* Failed runs (the error line; full logs under the work folder\'s '
      '`logs/`):', '  * A ours: e', '  * B ours: x\\|y z']
