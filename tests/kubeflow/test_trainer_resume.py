"""The compiled trainer task: a retry policy, its checkpoint dir under the
pipeline root (or as given), --fresh; and a retried trainer container that
resumes from the checkpoints of the attempt it replaces."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import tensorflow as tf
from google.protobuf import json_format

from kubeflow import compile as kfp_compile
from pipeline import pipeline as pipeline_lib
from tests.kubeflow import harness

IMAGE = 'registry.example.com/tfx-stateful-sequences:test'


def _compile(tmp_path, *flags):
  path = kfp_compile.compile_pipeline([
      '--image', IMAGE, '--output-file', str(tmp_path / 'pipeline.json'),
      '--pipeline-root', 'gs://bucket/root', '--data-root', 'gs://bucket/data',
      '--batch-size', '4', '--num-unroll', '8', *flags])
  with open(path) as f:
    return json.load(f)


def _trainer(compiled):
  return compiled['pipelineSpec']['root']['dag']['tasks']['StatefulTrainer']


def _param(task, name):
  value = task['inputs']['parameters'].get(name)
  return None if value is None else next(iter(
      value['runtimeValue']['constantValue'].values()))


def test_trainer_task_has_a_retry_policy_and_a_checkpoint_dir(tmp_path):
  compiled = _compile(tmp_path)
  task = _trainer(compiled)
  assert task['retryPolicy'] == {
      'maxRetryCount': kfp_compile.DEFAULT_TRAINER_RETRIES,
      'backoffDuration': '60s', 'backoffFactor': 2.0,
      'backoffMaxDuration': '3600s'}
  # A field of KFP's PipelineSpec proto (PipelineTaskSpec.retry_policy).
  from kfp.pipeline_spec import pipeline_spec_pb2  # pylint: disable=g-import-not-at-top
  parsed = json_format.ParseDict(compiled['pipelineSpec'],
                                 pipeline_spec_pb2.PipelineSpec())
  policy = parsed.root.dag.tasks['StatefulTrainer'].retry_policy
  assert policy.max_retry_count == kfp_compile.DEFAULT_TRAINER_RETRIES
  assert policy.backoff_duration.seconds == 60
  # Only the trainer is retried.
  others = [name for name, t in compiled['pipelineSpec']['root']['dag'][
      'tasks'].items() if 'retryPolicy' in t]
  assert others == ['StatefulTrainer']
  assert _param(task, 'checkpoint_dir') == (
      'gs://bucket/root/StatefulTrainer/checkpoints')
  assert _param(task, 'fresh') is None


def test_checkpoint_dir_fresh_and_retries_flags(tmp_path):
  task = _trainer(_compile(tmp_path, '--checkpoint-dir', 'gs://other/ckpt',
                           '--fresh', '--trainer-retries', '0'))
  assert _param(task, 'checkpoint_dir') == 'gs://other/ckpt'
  assert int(_param(task, 'fresh')) == 1
  assert 'retryPolicy' not in task


def test_local_runner_checkpoint_flags(tmp_path):
  from pipeline import flags as flags_lib  # pylint: disable=g-import-not-at-top
  args, _ = flags_lib.build_parser().parse_known_args([
      '--data-root', str(tmp_path), '--output-dir', str(tmp_path / 'o')])
  config = flags_lib.config_from_args(args)
  assert config.checkpoint_dir is None and config.fresh is False
  p = pipeline_lib.create_pipeline(
      config, pipeline_root=config.pipeline_root)
  trainer = [c for c in p.components if c.id == 'StatefulTrainer'][0]
  assert trainer.exec_properties['checkpoint_dir'] == os.path.join(
      config.pipeline_root, 'StatefulTrainer', 'checkpoints')
  assert trainer.exec_properties.get('fresh') is None
  args, _ = flags_lib.build_parser().parse_known_args([
      '--data-root', str(tmp_path), '--checkpoint-dir', 'gs://b/ckpt',
      '--fresh'])
  config = flags_lib.config_from_args(args)
  assert (config.checkpoint_dir, config.fresh) == ('gs://b/ckpt', True)
  p = pipeline_lib.create_pipeline(
      config, pipeline_root=config.pipeline_root)
  trainer = [c for c in p.components if c.id == 'StatefulTrainer'][0]
  assert trainer.exec_properties['checkpoint_dir'] == 'gs://b/ckpt'
  assert trainer.exec_properties['fresh'] == 1





def test_a_retried_trainer_step_resumes_the_attempt_it_replaces(tmp_path):
  """The trainer's container, killed (SIGTERM) after a checkpoint, then run
  again with the same ExecutorInput, as a KFP retry does: it resumes."""
  batches, module_file, _ = harness.trainer_inputs(tmp_path)
  ckpt_root = tmp_path / 'ckpt'
  path = kfp_compile.compile_pipeline([
      '--image', IMAGE, '--output-file', str(tmp_path / 'pipeline.json'),
      '--pipeline-root', str(tmp_path / 'root'), '--data-root',
      'gs://bucket/data', '--module-file', module_file,
      '--checkpoint-dir', str(ckpt_root), '--epochs', '40',
      '--checkpoint-every-n-steps', '2', '--validation-fraction', '0'])
  spec = harness.load_spec(path)
  inputs = {'batches': (batches, {'split_names': '["eval", "train"]'})}
  out_root = str(tmp_path / 'out')
  exec_input, out_uris = harness.executor_input(spec, 'StatefulTrainer',
                                                inputs, out_root)
  os.makedirs(os.path.join(out_root, 'StatefulTrainer'), exist_ok=True)
  container = harness.executor_of(spec, 'StatefulTrainer')
  args = [json.dumps(exec_input) if a == '{{$}}' else a
          for a in container['args']]
  command = [sys.executable] + list(container['command'])[1:]
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      [harness.ROOT] + [p for p in env.get('PYTHONPATH', '').split(
          os.pathsep) if p])
  first = subprocess.Popen(command + args, cwd=out_root, env=env,
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
  try:
    deadline = time.monotonic() + 600
    while not glob.glob(str(ckpt_root / '*' / 'checkpoint')):
      assert first.poll() is None, 'the first attempt ended on its own'
      assert time.monotonic() < deadline
      time.sleep(0.05)
    os.killpg(first.pid, signal.SIGTERM)
    assert first.wait(timeout=120) == -signal.SIGTERM
  finally:
    if first.poll() is None:
      os.killpg(first.pid, signal.SIGKILL)
      first.wait()
  (folder,) = glob.glob(str(ckpt_root / '*'))
  killed_at = int(tf.train.latest_checkpoint(folder).rsplit('-', 1)[1])
  assert killed_at >= 2

  # The retry: the same ExecutorInput.
  outs, _ = harness.run_task(spec, 'StatefulTrainer', inputs, out_root)
  assert outs == out_uris
  with open(os.path.join(outs['model_run'], 'history.json')) as f:
    history = json.load(f)
  assert history['resumed_from'].startswith(folder)
  assert history['resumed_from'].endswith(f'ckpt-{killed_at}')
  assert sum(e['steps'] for e in history['epochs']) == (
      history['steps'] - killed_at)
  assert not os.path.exists(folder)  # Removed once exported.
  assert tf.saved_model.load(os.path.join(outs['model'], 'Format-Serving'))
