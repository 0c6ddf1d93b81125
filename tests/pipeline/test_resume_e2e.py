"""A local pipeline run that dies (SIGTERM to its process group) resumes
when the same command is run again.

One sequence of real runs of ``python -m pipeline.local_runner`` on tiny
generated data, shared by the tests (module fixture):

1. killed while the SequenceBatcher runs;
2. the same command, killed while the StatefulTrainer trains, after at least
   one checkpoint;
3. the same command, to the end.

Then: every input step is in the batches; the trainer of run 3 resumed from
run 2's last checkpoint (log line, step count); and its model equals, to
1e-6, the model of an uninterrupted trainer execution with the same inputs
and settings (weights, and the chunked stateful outputs on the eval split
that every evaluation metric is computed from).
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from components.sequence_batcher import read_batches
from components.stateful import batches as batches_lib
from components.stateful import model_io
from components.stateful import steps as steps_lib
from data import generate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
B, T = 4, 8

# A small seeded GRU (a user module): cheap to train and export.
MODULE = """
import tf_keras as keras


def build_model(spec):
  inputs = keras.Input(batch_shape=(spec.batch_size, spec.num_unroll,
                                    spec.num_features))
  x = keras.layers.GRU(
      8, return_sequences=True, stateful=spec.stateful,
      kernel_initializer=keras.initializers.GlorotUniform(seed=spec.seed),
      recurrent_initializer=keras.initializers.Orthogonal(seed=spec.seed + 1),
      name='gru')(inputs)
  outputs = keras.layers.Dense(
      spec.output_units,
      kernel_initializer=keras.initializers.GlorotUniform(seed=spec.seed + 2))(x)
  return keras.Model(inputs, outputs)
"""


def _env():
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      [ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  return env


def _flags(data, out, module):
  return ['--data-root', str(data), '--output-dir', str(out),
          '--batch-size', str(B), '--num-unroll', str(T), '--epochs', '3',
          '--checkpoint-every-n-steps', '2', '--seed', '1',
          '--module-file', str(module)]


def _command(data, out, module):
  return [sys.executable, '-m', 'pipeline.local_runner',
          *_flags(data, out, module)]


def _tail(path, n=3000):
  with open(path) as f:
    return f.read()[-n:]


def _run_and_kill(cmd, log_path, ready, timeout=600):
  """Runs ``cmd`` in its own process group; once ``ready()`` holds, sends
  SIGTERM to the group. Returns the exit code."""
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
      deadline = time.monotonic() + timeout
      while not ready():
        if proc.poll() is not None:
          raise AssertionError(f'the run ended (exit {proc.returncode}) '
                               f'before it could be killed:\n'
                               f'{_tail(log_path)}')
        if time.monotonic() > deadline:
          raise AssertionError(f'not ready after {timeout}s')
        time.sleep(0.05)
      os.killpg(proc.pid, signal.SIGTERM)
      return proc.wait(timeout=120)
    finally:
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _checkpoint_dirs(out):
  return glob.glob(os.path.join(str(out), 'pipeline_root', 'StatefulTrainer',
                                'checkpoints', '*'))


def _executions(out, component):
  """Final states of ``component``'s executions (ML Metadata)."""
  from ml_metadata.metadata_store import metadata_store  # pylint: disable=g-import-not-at-top
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  cc = metadata_store_pb2.ConnectionConfig()
  cc.sqlite.filename_uri = os.path.join(str(out), 'metadata.sqlite')
  cc.sqlite.connection_mode = (
      metadata_store_pb2.SqliteMetadataSourceConfig.READONLY)
  store = metadata_store.MetadataStore(cc)
  out_states = []
  for t in store.get_execution_types():
    if t.name.split('.')[-1] == component:
      out_states += [metadata_store_pb2.Execution.State.Name(
          e.last_known_state) for e in store.get_executions_by_type(t.name)]
  return sorted(out_states)


@pytest.fixture(scope='module')
def interrupted(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('resume')
  data, out = tmp / 'data', tmp / 'out'
  rows = generate.generate(24, seed=3, median_length=40.0, max_length=160,
                           num_features=3)
  generate.write_csv(rows, str(data), num_shards=2)
  module = tmp / 'src' / 'gru_model.py'
  module.parent.mkdir()
  module.write_text(MODULE)
  cmd = _command(data, out, module)
  logs = [str(tmp / f'run{i}.log') for i in (1, 2, 3)]

  batcher_dir = os.path.join(str(out), 'pipeline_root', 'SequenceBatcher')
  rc1 = _run_and_kill(cmd, logs[0], lambda: os.path.isdir(batcher_dir))

  def checkpointed():
    return any(tf.io.gfile.exists(os.path.join(d, 'checkpoint'))
               for d in _checkpoint_dirs(out))

  rc2 = _run_and_kill(cmd, logs[1], checkpointed)
  (ckpt_dir,) = _checkpoint_dirs(out)
  last = tf.train.latest_checkpoint(ckpt_dir)
  killed_at = int(last.rsplit('-', 1)[1])

  done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=900)
  with open(logs[2], 'w') as f:
    f.write(done.stdout + done.stderr)
  assert done.returncode == 0, done.stderr[-4000:]
  with open(out / 'summary.json') as f:
    summary = json.load(f)
  return dict(rows=rows, out=out, tmp=tmp, cmd=cmd, logs=logs,
              rcs=(rc1, rc2), killed_at=killed_at, ckpt_dir=ckpt_dir,
              summary=summary)


def test_killed_batcher_reruns_and_every_input_step_is_batched(interrupted):
  assert interrupted['rcs'][0] == -signal.SIGTERM
  # Run 1 died inside the SequenceBatcher (its execution never ended), run
  # 2 completed it, run 3 took it from the cache.
  states = _executions(interrupted['out'], 'SequenceBatcher')
  ran = [s for s in states if s != 'CACHED']
  assert len(ran) == 2 and ran.count('COMPLETE') == 1, states
  summary = interrupted['summary']
  uri = summary['batches_uri']
  total = len(interrupted['rows']['seq_id'])
  masks = sum(float(b['mask'].sum()) for split in ('train', 'eval')
              for b in read_batches(uri, split).as_numpy_iterator())
  assert masks == total
  stats = summary['batcher']
  assert stats['train']['real_timesteps'] + stats['eval'][
      'real_timesteps'] == total
  assert set(summary['eval']) >= {'loss', 'accuracy'}  # Evaluated.


def _eval_outputs(model_uri, batches_uri):
  """Per eval sequence, the chunked stateful outputs [L, K]."""
  model, spec = model_io.load_stateful_model(model_uri, batch_size=B,
                                             num_unroll=T)
  pairs = steps_lib.predict_batches(model, read_batches(batches_uri, 'eval'))
  return {r.key: r.outputs for r in batches_lib.lanes_to_sequences(
      pairs, spec.num_unroll, fields=())}


def _reference_model(interrupted):
  """An uninterrupted StatefulTrainer execution on the same artifacts, with
  the exec properties the pipeline gives it (own checkpoint dir)."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher.component import SequenceBatches  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import executor  # pylint: disable=g-import-not-at-top
  from pipeline import flags as flags_lib  # pylint: disable=g-import-not-at-top
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  out, tmp = interrupted['out'], interrupted['tmp']
  args, _ = flags_lib.build_parser().parse_known_args(
      interrupted['cmd'][3:])
  config = flags_lib.config_from_args(args)
  p = pipeline_lib.create_pipeline(
      config, pipeline_root=config.pipeline_root)
  trainer = [c for c in p.components if c.id == 'StatefulTrainer'][0]
  props = dict(trainer.exec_properties)
  props['checkpoint_dir'] = str(tmp / 'reference_checkpoints')

  def artifact(cls, uri, **kw):
    a = cls()
    a.uri = uri
    for k, v in kw.items():
      setattr(a, k, v)
    return a

  (graph,) = glob.glob(os.path.join(str(out), 'pipeline_root', 'Transform',
                                    'transform_graph', '*'))
  model = artifact(standard_artifacts.Model, str(tmp / 'ref' / 'model'))
  run = artifact(standard_artifacts.ModelRun, str(tmp / 'ref' / 'run'))
  executor.Executor().Do(
      {'batches': [artifact(SequenceBatches,
                            interrupted['summary']['batches_uri'],
                            split_names='["train", "eval"]')],
       'transform_graph': [artifact(standard_artifacts.TransformGraph,
                                    graph)]},
      {'model': [model], 'model_run': [run]}, props)
  return model, run


def test_killed_trainer_resumes_to_the_uninterrupted_model(interrupted):
  assert interrupted['rcs'][1] == -signal.SIGTERM
  out = interrupted['out']
  assert _executions(out, 'StatefulTrainer').count('COMPLETE') == 1
  killed_at = interrupted['killed_at']
  assert killed_at >= 2  # At least one checkpoint before the kill.
  with open(interrupted['logs'][2]) as f:
    log = f.read()
  resumed = [tuple(map(int, m)) for m in re.findall(
      r'resuming from epoch (\d+), step (\d+) of (\d+)', log)]
  assert resumed and resumed[0][1] == killed_at, (killed_at, resumed)
  # Exported: the checkpoints are gone.
  assert not tf.io.gfile.exists(interrupted['ckpt_dir'])

  model_uri = interrupted['summary']['model_uri']
  with open(os.path.join(model_uri.replace('/model/', '/model_run/'),
                         'history.json')) as f:
    history = json.load(f)
  assert history['resumed_from'] or history['selection']

  ref_model, ref_run = _reference_model(interrupted)
  with open(os.path.join(ref_run.uri, 'history.json')) as f:
    ref_history = json.load(f)
  assert ref_history['fingerprint'] == history['fingerprint']
  assert history['steps'] == ref_history['steps']
  # Steps after the restart: the rest of the run, not all of it.
  first = (history['selection'] or history)['epochs']
  ref_first = (ref_history['selection'] or ref_history)['epochs']
  assert sum(e['steps'] for e in first) == (
      sum(e['steps'] for e in ref_first) - killed_at)

  got, _ = model_io.load_stateful_model(model_uri, batch_size=B)
  want, _ = model_io.load_stateful_model(ref_model.uri, batch_size=B)
  for a, b in zip(want.weights, got.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)
  batches_uri = interrupted['summary']['batches_uri']
  ours = _eval_outputs(model_uri, batches_uri)
  theirs = _eval_outputs(ref_model.uri, batches_uri)
  assert sorted(ours) == sorted(theirs)
  for key in ours:
    np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-6)
