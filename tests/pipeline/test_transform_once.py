"""Transform reads the data once: the SequenceBatcher applying the transform
graph to ExampleGen's raw rows writes the same batches, byte for byte, as
from the transformed examples Transform materializes.

One run of the stock components on the bundled sample, as the main job
builds them (``materialize_transform=True``, so Transform writes its
transformed examples and the batcher reads those), with a second
SequenceBatcher beside the first that reads the raw examples and the
transform graph of the same Transform execution. Every file the two write
is compared. The default pipeline's wiring (Transform without transformed
examples, the batcher on the raw rows and the graph) is checked too.
"""

from __future__ import annotations

import dataclasses
import json
import os

from tfx import v1 as tfx
from tfx.orchestration import pipeline as tfx_pipeline

from components.sequence_batcher.component import SequenceBatcher
from pipeline import flags as flags_lib
from pipeline import pipeline as pipeline_lib
from tests.components.sequence_batcher import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, 'data', 'sample')


def _config(out):
  args, _ = flags_lib.build_parser().parse_known_args(
      ['--data-root', SAMPLE, '--output-dir', str(out)])
  return flags_lib.config_from_args(args)


def _pipeline(out, materialize_transform=False):
  config = dataclasses.replace(_config(out),
                               materialize_transform=materialize_transform)
  return pipeline_lib.create_pipeline(
      config, pipeline_root=str(out / 'root'),
      metadata_connection_config=(
          tfx.orchestration.metadata.sqlite_metadata_connection_config(
              str(out / 'metadata.sqlite'))),
      beam_pipeline_args=['--direct_running_mode=in_memory'])


def _by_id(p):
  return {c.id: c for c in p.components}


def _same_settings(batcher: SequenceBatcher) -> dict:
  """The batcher's settings as ``SequenceBatcher`` keyword arguments."""
  props = dict(batcher.exec_properties)
  for name in ('feature_columns', 'exclude_columns'):
    if props.get(name) is not None:
      props[name] = json.loads(props[name])
  props['truncate'] = bool(props['truncate'])
  return props


def test_default_pipeline_reads_raw_rows_and_the_graph(tmp_path):
  components = _by_id(_pipeline(tmp_path))
  assert 'transformed_examples' not in components['Transform'].outputs
  batcher = components['SequenceBatcher']
  assert batcher.inputs['examples'].producer_component_id == 'CsvExampleGen'
  assert batcher.inputs['transform_graph'].producer_component_id == (
      'Transform')
  materialized = _by_id(_pipeline(tmp_path, materialize_transform=True))
  assert 'transformed_examples' in materialized['Transform'].outputs
  batcher = materialized['SequenceBatcher']
  assert batcher.inputs['examples'].producer_component_id == 'Transform'
  assert 'transform_graph' not in batcher.inputs


def test_batches_from_raw_rows_and_graph_equal_those_from_materialized(
    tmp_path):
  p = _pipeline(tmp_path, materialize_transform=True)
  components = _by_id(p)
  batcher = components['SequenceBatcher']
  on_raw = SequenceBatcher(
      examples=components['CsvExampleGen'].outputs['examples'],
      transform_graph=components['Transform'].outputs['transform_graph'],
      **_same_settings(batcher)).with_id('SequenceBatcherOnRawRows')
  # The whole pipeline with the second batcher, run up to the batchers.
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name=p.pipeline_info.pipeline_name,
      pipeline_root=p.pipeline_info.pipeline_root,
      components=list(p.components) + [on_raw], enable_cache=False,
      metadata_connection_config=p.metadata_connection_config,
      beam_pipeline_args=p.beam_pipeline_args),
      run_options=tfx_pipeline.RunOptions(to_nodes=[batcher.id, on_raw.id]))
  root = str(tmp_path / 'root')
  outputs = {}
  for name in ('SequenceBatcher', 'SequenceBatcherOnRawRows'):
    folder = os.path.join(root, name, 'batches')
    runs = os.listdir(folder)
    assert len(runs) == 1, runs
    outputs[name] = helpers.list_files(os.path.join(folder, runs[0]))
  materialized, raw = (outputs['SequenceBatcher'],
                       outputs['SequenceBatcherOnRawRows'])
  assert any(name.endswith('metadata.json') for name in materialized)
  assert len([n for n in materialized if 'Split-train' in n]) > 1
  assert sorted(raw) == sorted(materialized)
  for name in materialized:
    assert raw[name] == materialized[name], name
