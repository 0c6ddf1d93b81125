"""The Kubeflow V2 compilation, and our executors run through TFX's Kubeflow V2
container entrypoint exactly as the compiled spec tells each container to."""

from __future__ import annotations

import json
import os

import pytest
import tensorflow as tf

from components.sequence_batcher import read_batches
from kubeflow import runner
from tests.kubeflow import harness

IMAGE = 'registry.example.com/tfx-stateful-sequences:test'


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  out = tmp_path_factory.mktemp('kfp') / 'pipeline.json'
  path = runner.compile_pipeline([
      '--image', IMAGE, '--pipeline-root', 'gs://bucket/root',
      '--data-root', 'gs://bucket/data', '--output-file', str(out),
      '--batch-size', '4', '--num-unroll', '8', '--epochs', '1'])
  with open(path) as f:
    return json.load(f)


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
  assert batcher['dependentTasks'] == ['Transform']
  src = batcher['inputs']['artifacts']['examples']['taskOutputArtifact']
  assert src == {'outputArtifactKey': 'transformed_examples',
                 'producerTask': 'Transform'}
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


@pytest.fixture(scope='module')
def trainer_run(compiled, batcher_run):
  root, _, outs, _ = batcher_run
  # No transform graph: the batches here hold the features as they are.
  return harness.run_task(
      compiled['pipelineSpec'], 'StatefulTrainer',
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
  with open(os.path.join(outs['evaluation'], 'metrics.json')) as f:
    metrics = json.load(f)
  assert 'accuracy' in metrics['metrics']['candidate']['overall']
  meta = harness.output_metadata(executor_output, 'blessing')
  # No thresholds but the equivalence check here, and no baseline: blessed.
  assert meta['blessed'] == 1
  assert os.path.exists(os.path.join(outs['blessing'], 'BLESSED'))
