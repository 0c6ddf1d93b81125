"""The trainer step on several workers: the compiled TFJob manifest, and the
launcher run against a local stand-in of Kubeflow's Training Operator (each
replica a process with the TF_CONFIG the operator would give it), whose
export equals the one-process trainer's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

from kubeflow import compile as kfp_compile
from kubeflow import tfjob
from tests.components.stateful_trainer import helpers
from tests.kubeflow import harness

IMAGE = 'registry.example.com/tfx-stateful-sequences:test'
EXECUTOR = 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor'


def _compile(tmp_path, name, *flags):
  path = kfp_compile.compile_pipeline([
      '--image', IMAGE, '--output-file', str(tmp_path / f'{name}.json'),
      '--pipeline-root', str(tmp_path / 'root'), '--data-root',
      'gs://bucket/data', *flags])
  with open(path) as f:
    return json.load(f)


def _task(compiled, name):
  return compiled['pipelineSpec']['root']['dag']['tasks'][name]


def test_the_trainer_step_holds_the_tfjob_manifest(tmp_path):
  one = _compile(tmp_path, 'one', '--trainer-retries', '2')
  three = _compile(tmp_path, 'three', '--trainer-workers', '3',
                   '--trainer-retries', '2')
  plain = harness.executor_of(one['pipelineSpec'], 'StatefulTrainer')
  container = harness.executor_of(three['pipelineSpec'], 'StatefulTrainer')
  assert plain['command'] == ['python', '-m', EXECUTOR]
  assert container['command'] == ['python', '-m', 'kubeflow.tfjob']
  assert container['image'] == IMAGE
  args = container['args']
  assert args[0] == '--manifest' and args[2] == '--'
  # After '--': the executor's own command and args, ExecutorInput
  # placeholder included.
  assert args[3:] == plain['command'] + plain['args']
  assert '{{$}}' in args
  manifest = json.loads(args[1])
  assert (manifest['apiVersion'], manifest['kind']) == ('kubeflow.org/v1',
                                                        'TFJob')
  specs = manifest['spec']['tfReplicaSpecs']
  assert {k: s['replicas'] for k, s in specs.items()} == {'Chief': 1,
                                                          'Worker': 2}
  for spec in specs.values():
    (c,) = spec['template']['spec']['containers']
    assert (c['name'], c['image'], c['command']) == (
        'tensorflow', IMAGE, plain['command'])
  # The same retry policy: the TFJob's backoff limit and the task's retries.
  assert manifest['spec']['runPolicy']['backoffLimit'] == 2
  assert _task(three, 'StatefulTrainer')['retryPolicy']['maxRetryCount'] == 2
  # The batches are laid out for 3 workers.
  lanes = _task(three, 'SequenceBatcher')['inputs']['parameters'][
      'lane_multiple']['runtimeValue']['constantValue']
  assert int(next(iter(lanes.values()))) == 3


class LocalOperator:
  """Plays Kubeflow's Training Operator: one process per replica of the
  TFJob, each with the TF_CONFIG the operator generates (a ``chief`` and
  ``worker``s, one port each on the loopback interface)."""

  def __init__(self, cwd):
    self.cwd = cwd
    self.procs = []

  def create(self, manifest):
    specs = manifest['spec']['tfReplicaSpecs']
    tasks = [(kind.lower(), i, spec) for kind, spec in specs.items()
             for i in range(spec['replicas'])]
    ports = []
    for _ in tasks:
      with socket.socket() as s:
        s.bind(('localhost', 0))
        ports.append(s.getsockname()[1])
    cluster = {}
    for (kind, _, _), port in zip(tasks, ports):
      cluster.setdefault(kind, []).append(f'localhost:{port}')
    for kind, index, spec in tasks:
      (c,) = spec['template']['spec']['containers']
      command = list(c['command']) + list(c['args'])
      if command[0] == 'python':
        command[0] = sys.executable
      env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2',
             'PYTHONPATH': harness.ROOT,
             'TF_CONFIG': json.dumps({'cluster': cluster, 'task': {
                 'type': kind, 'index': index}})}
      self.procs.append(subprocess.Popen(
          command, cwd=self.cwd, env=env, stdout=subprocess.DEVNULL,
          stderr=subprocess.PIPE, text=True))
    return 'local-tfjob'

  def status(self, name):
    codes = [p.poll() for p in self.procs]
    if any(c not in (None, 0) for c in codes):
      errors = [p.stderr.read()[-3000:] for p in self.procs
                if p.returncode not in (None, 0)]
      return {'conditions': [{'type': 'Failed', 'status': 'True',
                              'message': errors[0]}]}
    if all(c == 0 for c in codes):
      return {'conditions': [{'type': 'Succeeded', 'status': 'True'}]}
    return {}


def _serve(model_uri, seqs):
  loaded = tf.saved_model.load(os.path.join(model_uri, 'Format-Serving'))
  x, lengths = helpers.padded(seqs)
  return loaded.signatures['serving_default'](
      features=tf.constant(x), lengths=tf.constant(lengths))['logits'].numpy()


def test_two_workers_of_a_played_tfjob_export_the_one_process_model(
    tmp_path):
  batches, module_file, splits = harness.trainer_inputs(tmp_path)
  flags = ('--module-file', module_file, '--epochs', '2',
           '--validation-fraction', '0')
  inputs = {'batches': (batches, {'split_names': '["eval", "train"]'})}
  _compile(tmp_path, 'one', *flags)
  _compile(tmp_path, 'two', '--trainer-workers', '2', *flags)
  single, _ = harness.run_task(harness.load_spec(str(tmp_path / 'one.json')),
                               'StatefulTrainer', inputs,
                               str(tmp_path / 'out-one'))

  spec = harness.load_spec(str(tmp_path / 'two.json'))
  out_root = str(tmp_path / 'out-two')
  exec_input, outs = harness.executor_input(spec, 'StatefulTrainer', inputs,
                                            out_root)
  os.makedirs(os.path.join(out_root, 'StatefulTrainer'), exist_ok=True)
  container = harness.executor_of(spec, 'StatefulTrainer')
  argv = [json.dumps(exec_input) if a == '{{$}}' else a
          for a in container['args']]
  operator = LocalOperator(out_root)
  assert tfjob.main(argv, api=operator) == 0
  assert len(operator.procs) == 2
  with open(exec_input['outputs']['outputFile']) as f:
    assert 'artifacts' in json.load(f)  # The chief's executor output.
  with open(os.path.join(outs['model_run'], 'history.json')) as f:
    history = json.load(f)
  assert (history['workers'], history['replicas']) == (2, 2)
  np.testing.assert_allclose(_serve(outs['model'], splits['eval']),
                             _serve(single['model'], splits['eval']),
                             rtol=1e-5, atol=1e-6)


def test_a_failed_tfjob_fails_the_step():
  import pytest  # pylint: disable=g-import-not-at-top
  manifest = tfjob.template(image=IMAGE, command=['python', '-m', EXECUTOR],
                            workers=2, backoff_limit=0)

  class Failing:
    def create(self, manifest):
      return 'job-1'

    def status(self, name):
      return {'conditions': [
          {'type': 'Running', 'status': 'False'},
          {'type': 'Failed', 'status': 'True', 'message': 'chief OOMKilled'}]}

  with pytest.raises(tfjob.TFJobError, match='job-1 failed: chief OOMKilled'):
    tfjob.launch(manifest, Failing(), sleep=lambda s: None)
