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
      '--batch-size', '4', '--num-unroll', '8'])
  with open(path) as f:
    return json.load(f)


def test_compiled_spec_has_every_component_with_our_image(compiled):
  spec = compiled['pipelineSpec']
  tasks = spec['root']['dag']['tasks']
  for name in ('CsvExampleGen', 'StatisticsGen', 'SchemaGen',
               'ExampleValidator', 'Transform', 'SequenceBatcher'):
    assert name in tasks, name
    container = harness.executor_of(spec, name)
    assert container['image'] == IMAGE
    assert container['command'][-1] == (
        'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor')
  assert harness.executor_of(spec, 'SequenceBatcher')['args'][1] == (
      'components.sequence_batcher.executor.Executor')
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


def test_sequence_batcher_runs_through_the_container_entrypoint(
    compiled, tmp_path):
  lengths = {'train': {'a': 20, 'b': 3, 'c': 9}, 'eval': {'d': 11}}
  uri = _examples(str(tmp_path), lengths)
  outs, executor_output = harness.run_task(
      compiled['pipelineSpec'], 'SequenceBatcher',
      {'examples': (uri, {'split_names': '["eval", "train"]'})},
      str(tmp_path / 'out'))
  batches_uri = outs['batches']
  for split, seqs in lengths.items():
    got = list(read_batches(batches_uri, split).as_numpy_iterator())
    assert got[0]['features'].shape == (4, 8, 1)
    assert sum(b['mask'].sum() for b in got) == sum(seqs.values())
  meta = harness.output_metadata(executor_output, 'batches')
  assert json.loads(meta['split_names']) == ['eval', 'train']
