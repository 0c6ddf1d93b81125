"""Executor of the SequenceBatcher: artifacts -> typed args -> Beam transform."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import apache_beam as beam
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from components import declared
from components.sequence_batcher import beam as sb_beam
from components.sequence_batcher import command_line
from components.sequence_batcher import plan as sb_plan
from components.sequence_batcher import layout
from components.sequence_batcher import metadata as metadata_lib
from components.sequence_batcher import prepass
from components.sequence_batcher import read_stage
from components.sequence_batcher import sequences as seqlib

_LOG = logging.getLogger(__name__)

TRANSFORM_GRAPH_KEY = 'transform_graph'

# The component's settings: one parameter per field of the batcher's
# declarations (components/declared.py), carried as ``declared.to_parameter``
# writes it. Unset: None for a field that may be None, else its declared
# default; ``LAYOUT_FROM_DATA`` unset: chosen from the train split.
DECLARATIONS = (seqlib.ColumnConfig, layout.LayoutConfig)
LAYOUT_FROM_DATA = ('batch_size', 'num_unroll')


def setting_fields() -> Dict[str, dataclasses.Field]:
  """Parameter name -> its declared field, in declaration order."""
  return {f.name: f for cls in DECLARATIONS for f in dataclasses.fields(cls)}


def settings_from(exec_properties: Dict[str, Any]
                 ) -> Tuple[seqlib.ColumnConfig, layout.LayoutConfig,
                            Tuple[bool, bool]]:
  """``(columns, config, auto_layout)`` from the component's parameters.

  An unset parameter is None, or empty (``''``; 0 or an empty list where
  None is a value, as an orchestrator may pass "unset"): then the field is
  None where it may be None, else its declared default; ``auto_layout``
  says which of batch_size and num_unroll are chosen from the train split
  (1 in ``config`` until then).
  """
  values = {}
  for name, field in setting_fields().items():
    value = exec_properties.get(name)
    if value is not None and value != '':
      value = declared.from_parameter(field, value)
    may_be_none = declared.may_be_none(field) or name in LAYOUT_FROM_DATA
    if may_be_none:
      values[name] = value or None
    elif value is not None and value != '':
      values[name] = value
  auto = tuple(values[name] is None for name in LAYOUT_FROM_DATA)
  for name in LAYOUT_FROM_DATA:
    values[name] = values[name] or 1
  made = [cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)
                 if f.name in values}) for cls in DECLARATIONS]
  return made[0], made[1], auto


@dataclasses.dataclass(frozen=True)
class BatcherArgs:
  """Everything the executor needs, decoded from artifacts and properties."""
  splits: List[str]
  input_patterns: Dict[str, str]
  input_format: str
  columns: seqlib.ColumnConfig
  config: layout.LayoutConfig
  output_uri: str
  # (batch_size, num_unroll) unset: chosen from the train split's lengths.
  auto_layout: Tuple[bool, bool] = (False, False)
  # A TransformGraph URI applied to the raw rows as they are decoded.
  transform_graph: Optional[str] = None


def args_from_artifacts(input_dict: Dict[str, List[types.Artifact]],
                        output_dict: Dict[str, List[types.Artifact]],
                        exec_properties: Dict[str, Any]) -> BatcherArgs:
  """Decodes and validates the component's inputs."""
  examples = artifact_utils.get_single_instance(input_dict['examples'])
  splits = artifact_utils.decode_split_names(examples.split_names)
  if not splits:
    raise seqlib.InputDataError(f'Examples artifact {examples.uri} has no '
                                'splits')
  payload = examples_utils.get_payload_format(examples)
  formats = {
      example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE: read_stage.TF_EXAMPLE,
      example_gen_pb2.PayloadFormat.FORMAT_TF_SEQUENCE_EXAMPLE:
          read_stage.SEQUENCE_EXAMPLE,
  }
  if payload not in formats:
    raise seqlib.InputDataError(
        f'Examples artifact {examples.uri} has payload format '
        f'{example_gen_pb2.PayloadFormat.Name(payload)}; the SequenceBatcher '
        'reads tf.Example rows or tf.SequenceExample sequences')
  graph = None
  if input_dict.get(TRANSFORM_GRAPH_KEY):
    graph = artifact_utils.get_single_instance(
        input_dict[TRANSFORM_GRAPH_KEY]).uri
    if formats[payload] != read_stage.TF_EXAMPLE:
      raise seqlib.InputDataError(
          f'Examples artifact {examples.uri} holds tf.SequenceExamples; a '
          'transform graph applies to tf.Example rows only')
  patterns = {
      s: os.path.join(artifact_utils.get_split_uri([examples], s), '*')
      for s in splits
  }
  columns, config, auto = settings_from(exec_properties)
  if not auto[0]:
    config.check_lane_multiple()
  output = artifact_utils.get_single_instance(output_dict['batches'])
  return BatcherArgs(splits=splits, input_patterns=patterns,
                     input_format=formats[payload], columns=columns,
                     config=config, output_uri=output.uri, auto_layout=auto,
                     transform_graph=graph)


def expand_splits(pipeline: beam.Pipeline, args: BatcherArgs,
                  side: Optional[prepass.SideValues] = None) -> None:
  """Adds one read + ``BatchSequences`` branch per split to ``pipeline``.

  With ``batch_size`` or ``num_unroll`` unset, the train split's decoded rows
  also go to ``plan.ChooseLayout``, which chooses them
  (``layout_rule.choose_layout``) for every split, so that all splits share
  one layout; the train split is read and decoded once for both. Records are
  read by the workers (``ReadRecords``) and the splits' metadata joined into
  one leaf (``JoinOutputs``), which Beam's DaskRunner needs (docs/runners.md, "Dask,
  Flink, Spark, Dataflow").

  ``side``: the feature names and layout already computed (``prepass``, on
  runners that recompute side inputs); then the pipeline has no side input.
  """
  choice, decoded = None, {}
  config, auto = args.config, args.auto_layout
  if side is not None:
    config, auto = sb_plan.apply_choice(config, side.layout, auto), (False,
                                                                     False)
  elif any(auto):
    basis = layout_basis(args)
    decoded[basis] = (
        pipeline
        | f'Read[{basis}]' >> read_stage.ReadRecords(args.input_patterns[basis])
        | f'Decode[{basis}]' >> read_stage.DecodeRows(
            args.input_format, args.columns, source=_source(args, basis),
            transform_graph=args.transform_graph))
    choice = decoded[basis] | 'ChooseLayout' >> sb_plan.ChooseLayout(config)
  metas = []
  for split in args.splits:
    rows = decoded.get(split)
    if rows is None:
      rows = pipeline | f'Read[{split}]' >> read_stage.ReadRecords(
          args.input_patterns[split])
    metas.append(rows | f'BatchSequences[{split}]' >> sb_beam.BatchSequences(
        metadata_lib.split_dir(args.output_uri, split), split=split,
        input_format=args.input_format, columns=args.columns,
        config=config, source=_source(args, split),
        layout_choice=choice, auto_layout=auto,
        decoded=split in decoded, transform_graph=args.transform_graph,
        feature_names=(side.feature_names.get(split) if side is not None
                       else None)))
  _ = tuple(metas) | 'JoinOutputs' >> sb_beam.JoinOutputs()


def layout_basis(args: BatcherArgs) -> str:
  """The split the layout is chosen from."""
  return 'train' if 'train' in args.splits else args.splits[0]


def _source(args: BatcherArgs, split: str) -> str:
  return f'split {split!r} ({args.input_patterns[split]})'


# Runners that compute a side input's whole upstream again in every task
# that reads it (``prepass``): the executor computes the side values first.
RECOMPUTES_SIDE_INPUTS = (command_line.DASK_RUNNER,)


def _run(pipeline: beam.Pipeline) -> None:
  result = pipeline.run()
  try:
    result.wait_until_finish()
  finally:
    command_line.close_runner_client(result)


class Executor(base_beam_executor.BaseBeamExecutor):
  """Runs ``BatchSequences`` on every split of the input Examples."""

  def _side_values(self, args: BatcherArgs) -> prepass.SideValues:
    t0 = time.time()
    basis = layout_basis(args)
    pipeline = self._make_beam_pipeline()
    prepass.expand(pipeline, args, basis, lambda s: _source(args, s))
    _run(pipeline)
    side = prepass.load(args, basis, lambda s: _source(args, s))
    _LOG.info('SequenceBatcher: side values (feature names of %d splits, '
              'layout %s) computed first in %.1f s', len(side.feature_names),
              side.layout, time.time() - t0)
    return side

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    args = args_from_artifacts(input_dict, output_dict, exec_properties)
    t0 = time.time()
    # A short runner name (--runner=DaskRunner) and the Dask options need
    # Beam's Dask module imported in this process to be understood.
    self._beam_pipeline_args = command_line.expand_runner(
        self._beam_pipeline_args or [])
    side = None
    if (command_line.runner_of(self._beam_pipeline_args) in
        RECOMPUTES_SIDE_INPUTS and prepass.needed(args)):
      side = self._side_values(args)
    pipeline = self._make_beam_pipeline()
    expand_splits(pipeline, args, side)
    _run(pipeline)
    merged = metadata_lib.write_root_metadata(args.output_uri)
    output = artifact_utils.get_single_instance(output_dict['batches'])
    # A custom property, set directly: in a Kubeflow container the output may
    # be a class generated from the type name, without our property accessor.
    output.set_string_custom_property(
        'split_names', artifact_utils.encode_split_names(args.splits))
    secs = time.time() - t0
    total = sum(s['real_timesteps'] for s in merged['splits'].values())
    for split, stats in merged['splits'].items():
      output.set_json_value_custom_property(f'{split}_statistics', {
          k: stats[k] for k in ('num_sequences', 'num_batches',
                                'real_timesteps', 'padded_timesteps',
                                'efficiency')
      })
      _LOG.info('SequenceBatcher: split %s: %d sequences -> %d batches, '
                'efficiency %.3f', split, stats['num_sequences'],
                stats['num_batches'], stats['efficiency'])
    _LOG.info('SequenceBatcher: %d time steps in %.1f s (%.0f steps/s) -> %s',
              total, secs, total / max(secs, 1e-9), args.output_uri)
