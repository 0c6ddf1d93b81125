"""The compiled trainer task: a retry policy, its checkpoint dir under the
pipeline root (or as given), --fresh; and a retried trainer container that
resumes from the checkpoints of the attempt it replaces."""

from __future__ import annotations

import json
import os

from google.protobuf import json_format

from kubeflow import compile as kfp_compile
from pipeline import pipeline as pipeline_lib

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
  from pipeline import local_runner  # pylint: disable=g-import-not-at-top
  args, _ = local_runner.build_parser().parse_known_args([
      '--data-root', str(tmp_path), '--output-dir', str(tmp_path / 'o')])
  config = local_runner.config_from_args(args)
  assert config.checkpoint_dir is None and config.fresh is False
  p = pipeline_lib.create_pipeline_from_config(
      config, pipeline_root=config.pipeline_root)
  trainer = [c for c in p.components if c.id == 'StatefulTrainer'][0]
  assert trainer.exec_properties['checkpoint_dir'] == os.path.join(
      config.pipeline_root, 'StatefulTrainer', 'checkpoints')
  assert trainer.exec_properties.get('fresh') is None
  args, _ = local_runner.build_parser().parse_known_args([
      '--data-root', str(tmp_path), '--checkpoint-dir', 'gs://b/ckpt',
      '--fresh'])
  config = local_runner.config_from_args(args)
  assert (config.checkpoint_dir, config.fresh) == ('gs://b/ckpt', True)
  p = pipeline_lib.create_pipeline_from_config(
      config, pipeline_root=config.pipeline_root)
  trainer = [c for c in p.components if c.id == 'StatefulTrainer'][0]
  assert trainer.exec_properties['checkpoint_dir'] == 'gs://b/ckpt'
  assert trainer.exec_properties['fresh'] == 1
