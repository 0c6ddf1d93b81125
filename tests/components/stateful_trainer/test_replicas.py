"""Data-parallel stateful training: R replicas x b lanes make the same
model as one process on R*b lanes.

Each case runs in fresh processes (``replica_case.py``): logical CPU
devices and multi-worker collectives are fixed when TensorFlow starts. The
multi-worker cases start 2 workers on the loopback interface with the
``TF_CONFIG`` a launcher (Kubeflow's training operator) would give them.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.components.stateful_trainer import helpers

B, T, F = 4, 4, 2
NAMES = ['x0', 'x1']
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
CASE = 'tests.components.stateful_trainer.replica_case'
TIMEOUT = 300


@pytest.fixture(scope='module')
def batches(tmp_path_factory):
  out = {}
  for mode in ('packed', 'dense'):
    root = str(tmp_path_factory.mktemp(f'batches-{mode}'))
    splits = {'train': helpers.random_sequences(
        [7, 12, 5, 9, 3, 10, 14, 6], F, seed=71),
              'eval': helpers.random_sequences([8, 6, 11], F, seed=72)}
    out[mode] = helpers.write_batches(root, splits, batch_size=B,
                                      num_unroll=T, feature_names=NAMES,
                                      mode=mode)
  return out


def _env(tf_config=None):
  env = {**os.environ, 'PYTHONPATH': ROOT, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  env.pop('TF_CONFIG', None)
  if tf_config is not None:
    env['TF_CONFIG'] = json.dumps(tf_config)
  return env


def _case(*flags, tf_config=None):
  return [sys.executable, '-m', CASE, *map(str, flags)]


def _run(*flags, expect=0):
  proc = subprocess.run(_case(*flags), env=_env(), cwd=ROOT, timeout=TIMEOUT,
                        capture_output=True, text=True)
  assert proc.returncode == expect, proc.stderr[-3000:]
  return proc.stdout


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(('localhost', 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def _workers(*flags, n=2, expect=(0, 0), logs=False):
  """Runs ``n`` workers of one cluster at once; returns their stdout (and
  stderr, with ``logs``)."""
  cluster = {'worker': [f'localhost:{p}' for p in _free_ports(n)]}
  procs = [subprocess.Popen(
      _case(*flags), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=_env({'cluster': cluster,
                           'task': {'type': 'worker', 'index': i}}))
           for i in range(n)]
  outs = []
  for proc in procs:
    out, err = proc.communicate(timeout=TIMEOUT)
    outs.append((proc.returncode, out, err))
  assert tuple(r for r, _, _ in outs) == tuple(expect), outs[0][2][-3000:]
  return [(o, e) if logs else o for _, o, e in outs]


def _close(a, b, what, rtol=1e-5):
  for key in a.files:
    scale = max(float(np.max(np.abs(a[key]))), 1e-6)
    diff = float(np.max(np.abs(a[key] - b[key]))) if a[key].size else 0.0
    assert diff <= rtol * scale, (what, key, diff, scale)


@pytest.mark.parametrize('mode', ['packed', 'dense'])
@pytest.mark.parametrize('module', ['lstm', 'conv'])
def test_two_replicas_make_the_update_of_one(batches, tmp_path, module,
                                             mode):
  """Weights, the gathered per-lane state and the per-lane outputs on the
  next batch after k steps: 2 replicas x 2 lanes == 1 x 4 lanes."""
  got = {}
  for r in (1, 2):
    out = tmp_path / f'r{r}'
    _run('fit', '--batches', batches[mode], '--out', out, '--replicas', r,
         '--module', module, '--steps', 3, '--epochs', 2)
    got[r] = np.load(out / 'fit-local0.npz')
  assert any(np.abs(got[1][k]).max() > 0 for k in got[1].files
             if k.startswith('s')), 'no state was carried'
  _close(got[1], got[2], f'{module}/{mode}')


def test_a_replica_given_another_replicas_lanes_fails(batches, tmp_path):
  out = _run('swap', '--batches', batches['packed'], '--out', tmp_path,
             '--replicas', 2)
  assert 'RAISED' in out and 'does not own' in out, out


def test_two_workers_make_the_update_of_one_process(batches, tmp_path):
  # 3 steps: mid-epoch, so the checkpointed state is not the zeros of an
  # epoch's end.
  _run('fit', '--batches', batches['dense'], '--out', tmp_path / 'one',
       '--module', 'lstm', '--steps', 3)
  _workers('fit', '--batches', batches['dense'], '--out', tmp_path / 'two',
           '--module', 'lstm', '--steps', 3)
  one = np.load(tmp_path / 'one' / 'fit-local0.npz')
  assert any(np.abs(one[k]).max() > 0 for k in one.files if k[0] == 's')
  for worker in ('worker0', 'worker1'):
    _close(one, np.load(tmp_path / 'two' / f'fit-{worker}.npz'), worker)


def test_two_workers_fit_the_default_models_statistics_as_one_process(
    batches, tmp_path):
  """The default model's adapt on 2 workers, each on its own 2 lanes, its
  samples and Gram statistics combined (samples capped at 24 rows, so
  every statistic and the head's rows are samples): the weights, state and
  outputs after 3 steps equal one process's on all 4 lanes."""
  flags = ('fit', '--batches', batches['dense'], '--module', 'conv',
           '--steps', 3, '--adapt-rows', 24)
  _run(*flags, '--out', tmp_path / 'one')
  outs = _workers(*flags, '--out', tmp_path / 'two', logs=True)
  for i, (_, err) in enumerate(outs):
    assert f'adapt on Shard(worker {i} of 2, lanes ({2 * i}, {2 * i + 2}))' \
        in err, err[-3000:]
  one = np.load(tmp_path / 'one' / 'fit-local0.npz')
  for worker in ('worker0', 'worker1'):
    _close(one, np.load(tmp_path / 'two' / f'fit-{worker}.npz'), worker)


def _serve(serving_dir, seqs):
  loaded = tf.saved_model.load(str(serving_dir))
  x, lengths = helpers.padded(seqs)
  whole = loaded.signatures['serving_default'](
      features=tf.constant(x), lengths=tf.constant(lengths))
  return loaded, x, lengths, whole['logits'].numpy()


def test_two_workers_export_streams_and_resume_after_a_kill(batches,
                                                           tmp_path):
  flags = ('--batches', batches['packed'], '--module', 'lstm', '--epochs', 3,
           '--validation-fraction', 0.25)
  _run('run', *flags, '--out', tmp_path / 'one')
  _workers('run', *flags, '--out', tmp_path / 'two')
  # Only the chief exported.
  assert (tmp_path / 'two' / 'run.npz').exists()
  _close(np.load(tmp_path / 'one' / 'run.npz'),
         np.load(tmp_path / 'two' / 'run.npz'), 'export weights')
  seqs = helpers.random_sequences([8, 6, 11], F, seed=72)
  _, _, _, single = _serve(tmp_path / 'one' / 'model' / 'serving', seqs)
  loaded, x, lengths, multi = _serve(
      tmp_path / 'two' / 'model' / 'serving', seqs)
  np.testing.assert_allclose(multi, single, rtol=1e-5, atol=1e-6)
  chunked = helpers.run_step_signature(loaded, x, [3, 1, 4, x.shape[1] - 8])
  for i, n in enumerate(lengths):  # Chunked == whole on the export.
    np.testing.assert_allclose(chunked['logits'][i, n - 1], multi[i],
                               rtol=1e-5, atol=1e-5)

  # Killed at step 3 (last checkpoint: step 2), then started again.
  killed = tmp_path / 'killed'
  _workers('run', *flags, '--out', killed, '--crash-at', 3, expect=(3, 3))
  outs = _workers('run', *flags, '--out', killed)
  assert json.loads(outs[0].splitlines()[-1])['resumed_from'].endswith('-2')
  _close(np.load(tmp_path / 'two' / 'run.npz'), np.load(killed / 'run.npz'),
         'resumed')


def test_a_run_resumes_on_another_replica_count(batches, tmp_path):
  flags = ('--batches', batches['dense'], '--module', 'lstm', '--epochs', 2)
  _run('run', *flags, '--out', tmp_path / 'one')
  _run('run', *flags, '--out', tmp_path / 'moved', '--replicas', 2,
       '--crash-at', 3, expect=3)
  out = _run('run', *flags, '--out', tmp_path / 'moved', '--replicas', 1)
  assert json.loads(out.splitlines()[-1])['resumed_from'].endswith('-2')
  _close(np.load(tmp_path / 'one' / 'run.npz'),
         np.load(tmp_path / 'moved' / 'run.npz'), '2 replicas -> 1')


@pytest.fixture(scope='module')
def carve_batches(tmp_path_factory):
  """More sequences than lanes, so carve sequences start mid-lane."""
  out = {}
  lengths = [1, 2, 3, 4, 5, 7, 8, 9, 11, 13, 17, 23, 3, 4, 6, 2, 1, 12, 16,
             5, 9, 10, 4, 7]
  for mode in ('packed', 'dense'):
    root = str(tmp_path_factory.mktemp(f'carve-{mode}'))
    out[mode] = helpers.write_batches(
        root, {'train': helpers.random_sequences(lengths, F, seed=73),
               'eval': helpers.random_sequences([8, 6, 11], F, seed=74)},
        batch_size=B, num_unroll=T, feature_names=NAMES, mode=mode)
  return out


@pytest.mark.parametrize('module, mode', [('lstm', 'dense'),
                                          ('conv', 'packed')])
def test_two_replicas_score_the_carve_on_its_own_batches_as_before(
    carve_batches, tmp_path, module, mode):
  """2 replicas x 2 lanes: the carve's own batches score as the
  whole-batch pass over every train batch (weighted by valid_weight)."""
  got = json.loads(_run('carve', '--batches', carve_batches[mode], '--out',
                        tmp_path, '--replicas', 2, '--module', module,
                        '--validation-fraction', 0.4).splitlines()[-1])
  assert got['replicas'] == 2
  assert got['batches'][0] < got['batches'][1]
  assert sorted(got['carve']) == sorted(got['whole'])
  assert got['whole']['loss'] > 0
  for name, value in got['whole'].items():
    assert got['carve'][name] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_a_run_with_a_carve_scores_it_alike_on_two_replicas(carve_batches,
                                                            tmp_path):
  """``run.run`` with a validation carve: its scoring passes (the run's
  ``CarveScorer``, each fit's twin compiled for it) give the carve scores
  of one process, epoch by epoch."""
  flags = ('--batches', carve_batches['packed'], '--module', 'lstm',
           '--epochs', 2, '--validation-fraction', 0.4)
  _run('run', *flags, '--out', tmp_path / 'one')
  _run('run', *flags, '--out', tmp_path / 'two', '--replicas', 2)
  valid = {}
  for name in ('one', 'two'):
    with open(tmp_path / name / 'run' / 'history.json') as f:
      valid[name] = [e['valid'] for e in json.load(f)['epochs']]
  assert len(valid['one']) == 2 and valid['one'][0]['loss'] > 0
  for one, two in zip(valid['one'], valid['two']):
    for metric, value in one.items():
      assert two[metric] == pytest.approx(value, rel=1e-4), metric
