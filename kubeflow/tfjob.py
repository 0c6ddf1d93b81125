"""The trainer step on N workers: a TFJob of Kubeflow's Training Operator.

Compiled with ``python -m kubeflow.compile --trainer-workers N`` (N > 1),
the StatefulTrainer task's container runs this launcher instead of TFX's
executor entrypoint:

  python -m kubeflow.tfjob --manifest '<TFJob template>' -- \\
      python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor \\
      --executor_class_path components.stateful_trainer.executor.Executor \\
      --json_serialized_invocation_args '<ExecutorInput>' ...

At run time it fills the template (``fill``: every replica runs the
trainer's own executor command with the task's concrete ExecutorInput; the
chief's executor output goes to shared storage beside the task's output
artifacts, the workers' to a pod-local file), creates the TFJob in the
pod's namespace, waits for it (``launch``) and copies the chief's executor
output to the task's output file (``collect``). The Training Operator gives
each pod the ``TF_CONFIG`` of the job (one ``chief``, N - 1 ``worker``s);
the trainer trains under ``MultiWorkerMirroredStrategy`` and only the chief
writes the model (``components.stateful_trainer.distribution``).

``KubernetesApi`` is the only code here that talks to a cluster; the rest
is exercised by the tests, which play the operator with local processes
(docs/stateful_trainer.md, "Training on several replicas and workers").
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

_LOG = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = 'kubeflow.org', 'v1', 'tfjobs'
CONTAINER = 'tensorflow'  # The container name the Training Operator expects.
CHIEF, WORKER = 'Chief', 'Worker'
INVOCATION_FLAG = '--json_serialized_invocation_args'
WORKER_OUTPUT_FILE = '/tmp/tss-tfjob-worker-executor_output.json'
SHARED_SUBDIR = 'tfjob'
NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace'


class TFJobError(RuntimeError):
  """The TFJob failed, or its manifest cannot be filled."""


def template(*, image: str, command: Sequence[str], workers: int,
             backoff_limit: int) -> Dict[str, Any]:
  """The TFJob manifest of the compiled trainer task (no args yet).

  ``workers``: N processes in all (one ``Chief`` and N - 1 ``Worker``s);
  ``backoff_limit``: the trainer's retries (a restarted pod resumes from
  the chief's checkpoints, as a retried one-process trainer does).
  """
  if workers < 2:
    raise ValueError(f'a TFJob trainer needs at least 2 workers, got '
                     f'{workers}')

  def replicas(n: int) -> Dict[str, Any]:
    return {'replicas': n, 'restartPolicy': 'OnFailure',
            'template': {'spec': {'containers': [{
                'name': CONTAINER, 'image': image,
                'command': list(command), 'args': []}]}}}

  return {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'TFJob',
          'metadata': {'generateName': 'stateful-trainer-'},
          'spec': {'runPolicy': {'backoffLimit': int(backoff_limit),
                                 'cleanPodPolicy': 'Running'},
                   'tfReplicaSpecs': {CHIEF: replicas(1),
                                      WORKER: replicas(workers - 1)}}}


def _invocation(args: Sequence[str]) -> Tuple[int, Dict[str, Any]]:
  try:
    i = list(args).index(INVOCATION_FLAG) + 1
    return i, json.loads(args[i])
  except (ValueError, IndexError) as e:
    raise TFJobError(f'the executor args have no {INVOCATION_FLAG} with the '
                     f'ExecutorInput JSON: {e}') from None


def shared_output_file(executor_input: Dict[str, Any]) -> str:
  """Where the chief writes its executor output: beside the task's output
  artifacts (``<parent of the model artifact>/tfjob/``), which every pod
  and the launcher can reach."""
  uri = executor_input['outputs']['artifacts']['model']['artifacts'][0][
      'uri']
  return f'{uri.rstrip("/").rsplit("/", 1)[0]}/{SHARED_SUBDIR}/' \
         'chief_executor_output.json'


def fill(manifest: Dict[str, Any], args: Sequence[str]
        ) -> Tuple[Dict[str, Any], str, str]:
  """``manifest`` with every replica's args: the executor ``args`` with the
  concrete ExecutorInput, whose ``outputFile`` is the shared file for the
  chief and a pod-local one for the workers.

  Returns:
    ``(filled manifest, the chief's output file, the task's output file)``.
  """
  index, executor_input = _invocation(args)
  task_output = executor_input['outputs']['outputFile']
  chief_output = shared_output_file(executor_input)
  filled = copy.deepcopy(manifest)
  for kind, output in ((CHIEF, chief_output), (WORKER, WORKER_OUTPUT_FILE)):
    given = copy.deepcopy(executor_input)
    given['outputs']['outputFile'] = output
    own = list(args)
    own[index] = json.dumps(given, sort_keys=True)
    (container,) = filled['spec']['tfReplicaSpecs'][kind]['template'][
        'spec']['containers']
    container['args'] = own
  return filled, chief_output, task_output


def job_state(status: Optional[Dict[str, Any]]) -> Tuple[Optional[str], str]:
  """``('Succeeded' | 'Failed' | None, message)`` from a TFJob's status."""
  for cond in reversed((status or {}).get('conditions') or []):
    if cond.get('status') == 'True' and cond.get('type') in ('Succeeded',
                                                             'Failed'):
      return cond['type'], cond.get('message', '')
  return None, ''


class KubernetesApi:
  """Creates and reads TFJobs in this pod's namespace (the in-cluster
  service account; not exercised by the tests)."""

  def __init__(self):
    from kubernetes import client, config  # pylint: disable=g-import-not-at-top
    config.load_incluster_config()
    self._api = client.CustomObjectsApi()
    with open(NAMESPACE_FILE) as f:
      self.namespace = f.read().strip()

  def create(self, manifest: Dict[str, Any]) -> str:
    made = self._api.create_namespaced_custom_object(
        GROUP, VERSION, self.namespace, PLURAL, manifest)
    return made['metadata']['name']

  def status(self, name: str) -> Dict[str, Any]:
    return self._api.get_namespaced_custom_object(
        GROUP, VERSION, self.namespace, PLURAL, name).get('status') or {}


def launch(manifest: Dict[str, Any], api, *, poll_seconds: float = 10.0,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> str:
  """Creates the TFJob and waits until it succeeds; returns its name.

  Raises:
    TFJobError: the job failed.
  """
  name = api.create(manifest)
  started = last_log = clock()
  specs = manifest['spec']['tfReplicaSpecs']
  _LOG.info('created TFJob %s: %s', name, ', '.join(
      f'{s["replicas"]} {kind}' for kind, s in specs.items()))
  while True:
    state, message = job_state(api.status(name))
    if state == 'Succeeded':
      _LOG.info('TFJob %s succeeded after %.0fs', name, clock() - started)
      return name
    if state == 'Failed':
      raise TFJobError(f'TFJob {name} failed: {message or "no message"}')
    if clock() - last_log >= 60:
      last_log = clock()
      _LOG.info('TFJob %s running for %.0fs', name, last_log - started)
    sleep(poll_seconds)


def collect(chief_output: str, task_output: str) -> None:
  """Copies the chief's executor output to the task's output file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(chief_output):
    raise TFJobError(f'the TFJob succeeded but its chief wrote no executor '
                     f'output at {chief_output}')
  parent = os.path.dirname(task_output)
  if parent:
    tf.io.gfile.makedirs(parent)
  tf.io.gfile.copy(chief_output, task_output, overwrite=True)


def run(manifest: Dict[str, Any], args: Sequence[str], api=None) -> str:
  """Fills, launches and collects; returns the TFJob's name."""
  filled, chief_output, task_output = fill(manifest, args)
  name = launch(filled, api if api is not None else KubernetesApi())
  collect(chief_output, task_output)
  return name


def main(argv: Optional[List[str]] = None, api=None) -> int:
  """The launcher (``api``: a ``KubernetesApi``, or a stand-in that
  plays the operator in tests)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if '--' not in argv:
    print('usage: python -m kubeflow.tfjob --manifest JSON -- EXECUTOR '
          'COMMAND AND ARGS', file=sys.stderr)
    return 2
  split = argv.index('--')
  parser = argparse.ArgumentParser(prog='python -m kubeflow.tfjob')
  parser.add_argument('--manifest', required=True,
                      help='the TFJob template (JSON) the compiler wrote')
  flags = parser.parse_args(argv[:split])
  logging.basicConfig(level=logging.INFO,
                      format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  manifest = json.loads(flags.manifest)
  executor = argv[split + 1:]
  command = manifest['spec']['tfReplicaSpecs'][CHIEF]['template']['spec'][
      'containers'][0]['command']
  if executor[:len(command)] != list(command):
    print(f'error: the executor command {executor[:len(command)]} is not '
          f'the manifest\'s {command}', file=sys.stderr)
    return 2
  try:
    run(manifest, executor[len(command):], api)
  except TFJobError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
