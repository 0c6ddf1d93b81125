"""benchmarks/harness/recorded.py and speed.py: the checkouts recorded, the
runs' order, the section header, and one epoch over held batches."""

import argparse
import subprocess

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from benchmarks.harness import recorded
from benchmarks.harness import speed


def test_tree_state_reads_an_archives_commit_file(tmp_path):
  archive = tmp_path / 'archive'
  archive.mkdir()
  assert recorded.tree_state(str(archive))['commit'] == 'unknown'
  (archive / 'COMMIT').write_text('0123456789abcdef\n')
  state = recorded.tree_state(str(archive))
  assert state['commit'] == '0123456789abcdef'
  assert state['root'] == str(archive)


def test_tree_state_of_a_checkout_is_its_head(tmp_path):
  repo = str(tmp_path)
  for cmd in (['init', '-q'], ['-c', 'user.email=a@b', '-c', 'user.name=a',
                               'commit', '-q', '--allow-empty', '-m', 'x']):
    subprocess.run(['git', '-C', repo] + cmd, check=True)
  head = subprocess.run(['git', '-C', repo, 'rev-parse', 'HEAD'], check=True,
                        capture_output=True, text=True).stdout.strip()
  assert recorded.tree_state(repo)['commit'] == head


def test_runs_in_turn_baseline_first_in_each_pair():
  results = {'runs': []}
  seen = []

  def measure(which, i, root):
    seen.append((which, i, root))
    return {'seconds': i}

  recorded.run_in_turn(results, 2, {'baseline': '/b', 'current': '/c'},
                       measure, lambda _: None)
  assert seen == [('baseline', 0, '/b'), ('current', 0, '/c'),
                  ('baseline', 1, '/b'), ('current', 1, '/c')]
  assert [(r['which'], r['pair']) for r in results['runs']] == [
      (w, i) for w, i, _ in seen]
  results = {'runs': []}
  recorded.run_in_turn(results, 1, {'baseline': None, 'current': '/c'},
                       measure, lambda _: None)
  assert [r['which'] for r in results['runs']] == ['current']
  with pytest.raises(ValueError):
    recorded.interleaved(0, False)


def test_header_names_the_code_and_its_uncommitted_files():
  results = {
      'command': 'python -m x', 'run': {
          'date': 'd', 'seconds': 61.0, 'machine': 'm', 'load_before': '1',
          'load_after': '2', 'versions': 'v'},
      'code': {'root': '/r', 'commit': 'a' * 40, 'uncommitted': ['f.py']},
      'baseline_code': {'root': '/old', 'commit': 'b' * 40}}
  lines = recorded.header(results, 'shared', code_root=True)
  assert lines[0] == '* Command: `python -m x`'
  assert lines[2] == '* Machine: m; shared'
  assert lines[5] == (f'* Code: `/r`, commit {"a" * 10}, with uncommitted '
                      'changes to f.py')
  assert lines[6] == f'* Baseline: `/old`, commit {"b" * 10}'
  assert recorded.header(results, 's')[5].startswith('* Code: commit ')
  assert recorded.cell(None) == '-' and recorded.cell(2.25) == '2.2'


def test_results_path(tmp_path):
  args = argparse.Namespace(quick=False, results=None)
  assert recorded.results_path(args, 'x') == (
      f'{recorded.RESULTS_DIR}/x.json')
  args.results = str(tmp_path / 'r.json')
  assert recorded.results_path(args, 'x') == args.results


def test_held_epoch_starts_from_zero_state_and_runs_every_batch():
  keras.utils.set_random_seed(0)
  inputs = keras.Input(batch_shape=(2, 3, 1))
  lstm = keras.layers.LSTM(4, stateful=True)
  model = keras.Model(inputs, lstm(inputs))
  rng = np.random.default_rng(0)
  batches = [tf.constant(rng.normal(size=(2, 3, 1)), tf.float32)
             for _ in range(3)]
  lstm.reset_states()
  for batch in batches:
    model(batch)
  want = [s.numpy() for s in lstm.states]
  calls = []

  def step(batch):
    calls.append(batch)
    return {'out': model(batch)}

  assert speed.held_epoch(model, step, batches) > 0  # From the state left.
  assert len(calls) == 3
  for got, expected in zip(lstm.states, want):
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
  assert speed.held_epoch(model, model, batches) > 0  # A tensor output.
