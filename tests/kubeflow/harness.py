"""Runs a compiled pipeline's containers locally, the way a KFP launcher would.

For one task of a compiled KFP v2 pipeline JSON: take the executor's
``command`` and ``args`` from the spec, replace the ``{{$}}`` placeholder with
an ExecutorInput JSON (the task's constant parameters, input artifacts with
local URIs, output artifacts under a local root and an ``outputFile``) and run
it as a subprocess. This is what the container would run, minus the image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def load_spec(path: str) -> dict:
  with open(path) as f:
    return json.load(f)['pipelineSpec']


def executor_of(spec: dict, task: str) -> dict:
  component = spec['components'][spec['root']['dag']['tasks'][task][
      'componentRef']['name']]
  return spec['deploymentSpec']['executors'][component['executorLabel']][
      'container']


def _schema_title(artifact_type: dict) -> str:
  if 'schemaTitle' in artifact_type:
    return artifact_type['schemaTitle']
  first = artifact_type['instanceSchema'].splitlines()[0]
  return first.split(':', 1)[1].strip()


def executor_input(spec: dict, task: str,
                   inputs: Dict[str, Tuple[str, dict]],
                   output_root: str) -> Tuple[dict, Dict[str, str]]:
  """The ExecutorInput a launcher would give ``task``.

  Args:
    spec: the ``pipelineSpec`` of the compiled JSON.
    task: the task name (the component id).
    inputs: input key -> (uri, custom properties) of one artifact each.
    output_root: local folder for outputs and the output metadata file.

  Returns:
    (ExecutorInput as a dict, output key -> output artifact URI).
  """
  t = spec['root']['dag']['tasks'][task]
  comp = spec['components'][t['componentRef']['name']]
  params = {}
  for name, value in t.get('inputs', {}).get('parameters', {}).items():
    params[name] = value['runtimeValue']['constantValue']
  in_defs = comp.get('inputDefinitions', {}).get('artifacts', {})
  unknown = sorted(set(inputs) - set(in_defs))
  if unknown:
    raise ValueError(f'task {task} has no inputs {unknown}')
  # An input not given arrives empty, as from a resolver that found nothing
  # (e.g. no blessed baseline model yet).
  artifacts = {key: {'artifacts': []} for key in in_defs if key not in inputs}
  for key, (uri, props) in inputs.items():
    artifacts[key] = {'artifacts': [{
        'name': f'local-{task}-{key}',
        'type': {'schemaTitle': _schema_title(in_defs[key]['artifactType'])},
        'uri': uri,
        'metadata': props,
    }]}
  outputs = {}
  out_uris = {}
  for key, d in comp.get('outputDefinitions', {}).get('artifacts',
                                                       {}).items():
    uri = os.path.join(output_root, task, key)
    out_uris[key] = uri
    outputs[key] = {'artifacts': [{
        'name': f'local-{task}-{key}-out',
        'type': {'schemaTitle': _schema_title(d['artifactType'])},
        'uri': uri,
    }]}
  return {
      'inputs': {'parameters': params, 'artifacts': artifacts},
      'outputs': {'artifacts': outputs,
                  'outputFile': os.path.join(output_root, task,
                                             'executor_output.json')},
  }, out_uris


def run_task(spec: dict, task: str, inputs: Dict[str, Tuple[str, dict]],
             output_root: str, timeout: int = 900
            ) -> Tuple[Dict[str, str], dict]:
  """Runs ``task``'s container command locally; returns (output URIs,
  the ExecutorOutput the container wrote)."""
  container = executor_of(spec, task)
  exec_input, out_uris = executor_input(spec, task, inputs, output_root)
  os.makedirs(os.path.join(output_root, task), exist_ok=True)
  payload = json.dumps(exec_input)
  args = [payload if a == '{{$}}' else a for a in container['args']]
  command = list(container['command'])
  if command[0] == 'python':
    command[0] = sys.executable
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      [ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
  proc = subprocess.run(command + args, cwd=output_root, env=env,
                        capture_output=True, text=True, timeout=timeout)
  if proc.returncode != 0:
    raise RuntimeError(f'task {task} failed ({proc.returncode}):\n'
                       f'{proc.stderr[-4000:]}')
  with open(exec_input['outputs']['outputFile']) as f:
    return out_uris, json.load(f)


def output_metadata(executor_output: dict, key: str) -> dict:
  """Custom properties the executor set on output ``key``."""
  return executor_output['artifacts'][key]['artifacts'][0].get('metadata', {})


GRU_MODULE = """
import tf_keras as keras


def build_model(spec):
  inputs = keras.Input(batch_shape=(spec.batch_size, spec.num_unroll,
                                    spec.num_features))
  x = keras.layers.GRU(
      4, return_sequences=True, stateful=spec.stateful,
      kernel_initializer=keras.initializers.GlorotUniform(seed=spec.seed),
      recurrent_initializer=keras.initializers.Orthogonal(seed=spec.seed + 1),
      name='gru')(inputs)
  return keras.Model(inputs, keras.layers.Dense(spec.output_units)(x))
"""


def trainer_inputs(tmp_path):
  """Tiny trainer inputs: ``(batches URI, module file, splits)``: 8 train and
  2 eval sequences of one feature in 2 lanes of 4 steps, and a GRU module
  (``GRU_MODULE``) written under ``tmp_path/src``."""
  from tests.components.stateful_trainer import helpers  # pylint: disable=g-import-not-at-top
  splits = {'train': helpers.random_sequences([9, 12, 7, 10, 5, 11, 8, 6],
                                              1, seed=5),
            'eval': helpers.random_sequences([8, 9], 1, seed=6)}
  batches = helpers.write_batches(str(tmp_path / 'batches'), splits,
                                  batch_size=2, num_unroll=4,
                                  feature_names=['f0'])
  src = tmp_path / 'src'
  src.mkdir()
  (src / 'gru_model.py').write_text(GRU_MODULE)
  return batches, str(src / 'gru_model.py'), splits
