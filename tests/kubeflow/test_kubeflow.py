"""The Kubeflow V2 compilation, and our executors run through TFX's Kubeflow V2
container entrypoint exactly as the compiled spec tells each container to."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Iterator, List, Sequence, Tuple

import pytest
import tensorflow as tf

from components.sequence_batcher import read_batches
from kubeflow import compile as kfp_compile
from pipeline import pipeline_config
from tests.kubeflow import harness

IMAGE = 'registry.example.com/tfx-stateful-sequences:test'
PIPELINE_ROOT = 'gs://bucket/root'
DATA_ROOT = 'gs://bucket/data'

# A user model module, compiled with --module-file: TFX packages it into a
# wheel under the pipeline root, which the trainer's container installs.
USER_MODULE = """
import tf_keras as keras


def build_model(spec):
  inputs = keras.Input(batch_shape=(spec.batch_size, spec.num_unroll,
                                    spec.num_features))
  x = keras.layers.GRU(3, return_sequences=True, stateful=spec.stateful,
                       name='user_gru')(inputs)
  outputs = keras.layers.Dense(spec.output_units)(x)
  return keras.Model(inputs, outputs)
"""


def _compile(out_dir, *flags: str) -> dict:
  path = kfp_compile.compile_pipeline([
      '--image', IMAGE, '--output-file', str(out_dir / 'pipeline.json'),
      '--batch-size', '4', '--num-unroll', '8', '--epochs', '1', *flags])
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  return _compile(tmp_path_factory.mktemp('kfp'), '--pipeline-root',
                  PIPELINE_ROOT, '--data-root', DATA_ROOT)


@pytest.fixture(scope='module')
def compiled_with_module(tmp_path_factory):
  """Compiled with a user module file, an explicit --serving-dir and a
  pipeline root on a filesystem this machine can write (TFX writes the
  module's wheel there while compiling; gs:// is not reachable here)."""
  root = tmp_path_factory.mktemp('kfp_module')
  src = root / 'src'
  src.mkdir()
  (src / 'user_model.py').write_text(USER_MODULE)
  pipeline_root = str(root / 'pipeline_root')
  spec = _compile(root, '--pipeline-root', pipeline_root,
                  '--data-root', DATA_ROOT,
                  '--serving-dir', '/mnt/models/stateful',
                  '--module-file', str(src / 'user_model.py'))
  return spec, root, pipeline_root


def test_compiled_spec_has_every_component_with_our_image(compiled):
  spec = compiled['pipelineSpec']
  tasks = spec['root']['dag']['tasks']
  for name in ('CsvExampleGen', 'StatisticsGen', 'SchemaGen',
               'ExampleValidator', 'Transform', 'SequenceBatcher',
               'StatefulTrainer', 'StatefulEvaluator', 'Pusher'):
    assert name in tasks, name
    container = harness.executor_of(spec, name)
    assert container['image'] == IMAGE
    assert container['command'][-1] == (
        'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor')
  for task, executor in (
      ('CsvExampleGen', 'pipeline.csv_example_gen.Executor'),  # Text keys.
      ('SequenceBatcher', 'components.sequence_batcher.executor.Executor'),
      ('StatefulTrainer', 'components.stateful_trainer.executor.Executor'),
      ('StatefulEvaluator',
       'components.stateful_evaluator.executor.Executor')):
    assert harness.executor_of(spec, task)['args'][1] == executor
  assert compiled['runtimeConfig']['gcsOutputDirectory'] == 'gs://bucket/root'


def test_compiled_spec_wires_inputs_outputs_and_edges(compiled):
  spec = compiled['pipelineSpec']
  tasks = spec['root']['dag']['tasks']
  batcher = tasks['SequenceBatcher']
  # Transform only analyses: the batcher reads ExampleGen's rows and
  # applies the transform graph itself.
  assert batcher['dependentTasks'] == ['CsvExampleGen', 'Transform']
  inputs = batcher['inputs']['artifacts']
  assert inputs['examples']['taskOutputArtifact'] == {
      'outputArtifactKey': 'examples', 'producerTask': 'CsvExampleGen'}
  assert inputs['transform_graph']['taskOutputArtifact'] == {
      'outputArtifactKey': 'transform_graph', 'producerTask': 'Transform'}
  params = batcher['inputs']['parameters']
  assert params['batch_size']['runtimeValue']['constantValue'] == {
      'intValue': '4'}
  assert params['key_column']['runtimeValue']['constantValue'] == {
      'stringValue': 'seq_id'}
  comp = spec['components'][batcher['componentRef']['name']]
  schema = comp['outputDefinitions']['artifacts']['batches']['artifactType']
  assert 'components.SequenceBatches' in schema['instanceSchema']
  assert tasks['Transform']['dependentTasks'] == ['CsvExampleGen',
                                                  'SchemaGen']
  assert tasks['StatefulTrainer']['dependentTasks'] == ['SequenceBatcher',
                                                        'Transform']
  trainer_in = tasks['StatefulTrainer']['inputs']['artifacts']
  assert trainer_in['batches']['taskOutputArtifact']['producerTask'] == (
      'SequenceBatcher')
  assert trainer_in['transform_graph']['taskOutputArtifact'] == {
      'outputArtifactKey': 'transform_graph', 'producerTask': 'Transform'}
  ev = tasks['StatefulEvaluator']
  assert set(ev['inputs']['artifacts']) == {'model', 'batches',
                                            'baseline_model'}
  assert ev['inputs']['artifacts']['model']['taskOutputArtifact'][
      'producerTask'] == 'StatefulTrainer'
  assert any(t.startswith('latest_blessed_model_resolver')
             for t in ev['dependentTasks'])
  pusher = tasks['Pusher']['inputs']['artifacts']
  assert pusher['model_blessing']['taskOutputArtifact'] == {
      'outputArtifactKey': 'blessing', 'producerTask': 'StatefulEvaluator'}


def _row(key: str, t: int, x: float, label: int) -> bytes:
  ex = tf.train.Example()
  ex.features.feature['seq_id'].bytes_list.value.append(key.encode())
  ex.features.feature['t'].int64_list.value.append(t)
  ex.features.feature['f0'].float_list.value.append(x)
  ex.features.feature['label'].int64_list.value.append(label)
  return ex.SerializeToString()


def _examples(root: str, lengths) -> str:
  uri = os.path.join(root, 'examples')
  for split, seqs in lengths.items():
    d = os.path.join(uri, f'Split-{split}')
    os.makedirs(d)
    with tf.io.TFRecordWriter(os.path.join(d, 'data-00000-of-00001.gz'),
                              options='GZIP') as w:
      for i, (key, n) in enumerate(sorted(seqs.items())):
        for t in range(n):
          w.write(_row(key, t, float(t), i % 2))
  return uri


@pytest.fixture(scope='module')
def batcher_run(compiled, tmp_path_factory):
  root = tmp_path_factory.mktemp('kfp_run')
  lengths = {'train': {'a': 20, 'b': 3, 'c': 9, 'e': 17, 'g': 30},
             'eval': {'d': 11, 'f': 25}}
  uri = _examples(str(root), lengths)
  outs, executor_output = harness.run_task(
      compiled['pipelineSpec'], 'SequenceBatcher',
      {'examples': (uri, {'split_names': '["eval", "train"]'})},
      str(root / 'out'))
  return root, lengths, outs, executor_output


def test_sequence_batcher_runs_through_the_container_entrypoint(batcher_run):
  _, lengths, outs, executor_output = batcher_run
  batches_uri = outs['batches']
  for split, seqs in lengths.items():
    got = list(read_batches(batches_uri, split).as_numpy_iterator())
    assert got[0]['features'].shape == (4, 8, 1)
    assert sum(b['mask'].sum() for b in got) == sum(seqs.values())
  meta = harness.output_metadata(executor_output, 'batches')
  assert json.loads(meta['split_names']) == ['eval', 'train']


def _local_checkpoints(spec: dict, path: str) -> dict:
  """``spec`` with the trainer's checkpoint dir (under the gs:// pipeline
  root, which this machine cannot reach) replaced by a local folder."""
  spec = json.loads(json.dumps(spec))
  params = spec['root']['dag']['tasks']['StatefulTrainer']['inputs'][
      'parameters']
  assert params['checkpoint_dir']['runtimeValue']['constantValue'][
      'stringValue'].startswith(PIPELINE_ROOT)
  params['checkpoint_dir'] = {
      'runtimeValue': {'constantValue': {'stringValue': path}}}
  return spec


@pytest.fixture(scope='module')
def trainer_run(compiled, batcher_run):
  root, _, outs, _ = batcher_run
  # No transform graph: the batches here hold the features as they are.
  return harness.run_task(
      _local_checkpoints(compiled['pipelineSpec'],
                         str(root / 'checkpoints')), 'StatefulTrainer',
      {'batches': (outs['batches'], {'split_names': '["eval", "train"]'})},
      str(root / 'out'))


def test_stateful_trainer_runs_through_the_container_entrypoint(trainer_run):
  outs, _ = trainer_run
  serving = os.path.join(outs['model'], 'Format-Serving')
  loaded = tf.saved_model.load(serving)
  assert {'serving_default', 'step'} <= set(loaded.signatures)
  out = loaded.signatures['serving_default'](
      features=tf.zeros([2, 5, 1]), lengths=tf.constant([5, 3], tf.int64))
  assert out['logits'].shape == (2, 2)
  assert os.listdir(outs['model_run'])


def test_stateful_evaluator_runs_through_the_container_entrypoint(
    compiled, batcher_run, trainer_run):
  root, _, batch_outs, _ = batcher_run
  model_outs, _ = trainer_run
  outs, executor_output = harness.run_task(
      compiled['pipelineSpec'], 'StatefulEvaluator',
      {'model': (model_outs['model'], {}),
       'batches': (batch_outs['batches'],
                   {'split_names': '["eval", "train"]'})},
      str(root / 'out'))
  with open(os.path.join(outs['evaluation'],
                         'stateful_evaluation.json')) as f:
    doc = json.load(f)
  assert 'sparse_categorical_accuracy' in doc['tfma']['metrics'][
      'candidate']['overall']
  meta = harness.output_metadata(executor_output, 'blessing')
  # The blessing follows the three checks (no baseline here: no change
  # threshold); the marker file matches the property.
  assert meta['blessed'] == int(doc['blessed'])
  assert os.path.exists(os.path.join(
      outs['blessing'], 'BLESSED' if doc['blessed'] else 'NOT_BLESSED'))
  assert doc['equivalence']['ok'] is True


def _strings(node, path: Tuple = ()) -> Iterator[Tuple[str, str]]:
  """Every string in a JSON tree, with its path; JSON text inside strings
  (TFX's proto-valued parameters) is walked too."""
  if isinstance(node, dict):
    for key, value in node.items():
      yield from _strings(key, path + ('<key>',))
      yield from _strings(value, path + (key,))
  elif isinstance(node, list):
    for i, value in enumerate(node):
      yield from _strings(value, path + (i,))
  elif isinstance(node, str):
    yield '/'.join(map(str, path)), node
    if node[:1] in '{[':
      try:
        inner = json.loads(node)
      except ValueError:
        return
      yield from _strings(inner, path + ('<json>',))


def _local_paths(*extra: str) -> List[str]:
  """Paths of the compiling machine that must not reach a compiled
  pipeline: the repository, the local runner's default output and data,
  the working and temporary directories, this Python."""
  paths = {harness.ROOT, pipeline_config.PROJECT_ROOT,
           pipeline_config.PipelineConfig.output_dir,
           pipeline_config.PipelineConfig.data_root,
           os.getcwd(), tempfile.gettempdir(), sys.prefix, *extra}
  return sorted(p for p in paths if p and p != os.sep)


def _leaks(spec: dict, given: Sequence[str], local: Sequence[str]):
  """(path in the JSON, local path, string) for each string that names a
  local path once the paths given on the command line are taken out."""
  found = []
  for where, text in _strings(spec):
    rest = text
    for g in sorted(given, key=len, reverse=True):
      rest = rest.replace(g, '')
    for p in local:
      if p in rest:
        found.append((where, p, text))
  return found


def _push_destination(spec: dict) -> dict:
  param = spec['pipelineSpec']['root']['dag']['tasks']['Pusher']['inputs'][
      'parameters']['push_destination']
  return json.loads(param['runtimeValue']['constantValue']['stringValue'])


def test_pusher_pushes_to_the_pipeline_root_by_default(compiled):
  assert _push_destination(compiled) == {
      'filesystem': {'base_directory': PIPELINE_ROOT + '/serving_model'}}


def test_pusher_pushes_to_the_given_serving_dir(compiled_with_module):
  spec, _, _ = compiled_with_module
  assert _push_destination(spec) == {
      'filesystem': {'base_directory': '/mnt/models/stateful'}}


def test_serving_dir_default_joins_the_root_without_a_double_slash():
  assert kfp_compile.serving_dir_of('gs://b/root/', None) == (
      'gs://b/root/serving_model')
  assert kfp_compile.serving_dir_of('gs://b/root', 'gs://c/models') == (
      'gs://c/models')


def test_compiled_pipeline_names_no_path_of_the_compiling_machine(
    compiled, tmp_path):
  # The walk reaches JSON inside parameters (the Pusher's target).
  assert any(where.endswith('<json>/filesystem/base_directory')
             for where, _ in _strings(compiled))
  local = _local_paths(str(tmp_path))
  assert _leaks(compiled, [PIPELINE_ROOT, DATA_ROOT], local) == []
  # The data root and the transform function are as given / importable.
  tasks = compiled['pipelineSpec']['root']['dag']['tasks']
  params = tasks['CsvExampleGen']['inputs']['parameters']
  assert params['input_base']['runtimeValue']['constantValue'] == {
      'stringValue': DATA_ROOT}
  params = tasks['Transform']['inputs']['parameters']
  assert params['preprocessing_fn']['runtimeValue']['constantValue'] == {
      'stringValue': pipeline_config.TRANSFORM_FN}
  assert 'module_file' not in params
  assert 'module_file' not in tasks['StatefulTrainer']['inputs']['parameters']


def test_module_file_is_compiled_into_a_wheel_under_the_pipeline_root(
    compiled_with_module):
  spec, root, pipeline_root = compiled_with_module
  # The module's own folder, the compile's output folder, and everything
  # else local; only the pipeline root (given) may appear.
  local = _local_paths(str(root), str(root / 'src'))
  assert _leaks(spec, [pipeline_root, DATA_ROOT, '/mnt/models/stateful'],
                local) == []
  params = spec['pipelineSpec']['root']['dag']['tasks']['StatefulTrainer'][
      'inputs']['parameters']
  assert 'module_file' not in params
  module_path = params['module_path']['runtimeValue']['constantValue'][
      'stringValue']
  name, wheel = module_path.split('@', 1)
  assert name == 'user_model'
  assert wheel.startswith(pipeline_root + '/_wheels/') and wheel.endswith(
      '.whl')
  assert os.path.isfile(wheel)


def test_leak_check_catches_a_local_path():
  spec = {'a': {'b': ['x', json.dumps({'base_directory': os.path.join(
      harness.ROOT, 'outputs', 'local', 'serving_model')})]}}
  found = _leaks(spec, [PIPELINE_ROOT], _local_paths())
  assert 'a/b/1/<json>/base_directory' in {where for where, _, _ in found}
  # A local path given on the command line is allowed.
  assert _leaks(spec, [harness.ROOT], _local_paths()) == []


def test_kubeflow_runner_takes_no_local_output_dir_and_needs_a_data_root(
    tmp_path, capsys):
  base = ['--image', IMAGE, '--pipeline-root', PIPELINE_ROOT,
          '--output-file', str(tmp_path / 'p.json')]
  with pytest.raises(SystemExit):
    kfp_compile.compile_pipeline(base)
  assert '--data-root' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    kfp_compile.compile_pipeline(base + ['--data-root', DATA_ROOT,
                                    '--output-dir', str(tmp_path)])
  assert '--output-dir' in capsys.readouterr().err
  assert not (tmp_path / 'p.json').exists()
  assert kfp_compile.build_parser().parse_args(
      base + ['--data-root', DATA_ROOT]).serving_dir is None


def test_user_module_trains_from_its_wheel_through_the_container_entrypoint(
    compiled_with_module, batcher_run):
  spec, root, _ = compiled_with_module
  _, _, batch_outs, _ = batcher_run
  # As in the container: the module's source folder is not there.
  os.remove(root / 'src' / 'user_model.py')
  outs, _ = harness.run_task(
      spec['pipelineSpec'], 'StatefulTrainer',
      {'batches': (batch_outs['batches'],
                   {'split_names': '["eval", "train"]'})},
      str(root / 'out'))
  loaded = tf.saved_model.load(os.path.join(outs['model'], 'Format-Serving'))
  out = loaded.signatures['serving_default'](
      features=tf.zeros([2, 5, 1]), lengths=tf.constant([5, 3], tf.int64))
  assert out['logits'].shape == (2, 2)
  # The model was built by the user's module (copied into the export).
  with open(os.path.join(outs['model'], 'stateful', 'module.py')) as f:
    assert "name='user_gru'" in f.read()
