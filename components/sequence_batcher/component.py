"""TFX component: SequenceBatcher (Examples -> SequenceBatches).

Validates arguments and wires channels; the work is in ``executor.py`` and the
Beam transform in ``beam.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import declared
from components.sequence_batcher import executor
from components.sequence_batcher import layout
from components.sequence_batcher import sequences as seqlib


class SequenceBatches(types.Artifact):
  """Ordered, fixed-shape stateful batches, one folder per split.

  The URI holds ``metadata.json`` and ``Split-<name>/`` folders of sharded
  TFRecord files; read them with ``components.sequence_batcher.read_batches``.
  The split names are in the ``split_names`` custom property (JSON list, as
  ``artifact_utils.encode_split_names`` writes it) and in ``metadata.json``.

  The type name is an import path of this class (``components`` re-exports
  it): Kubeflow V2 needs custom artifact schema titles of the form
  ``<module>.<Class>`` and its container entrypoint imports the class by that
  title. For the same reason the type declares no PROPERTIES (KFP v2 cannot
  compile properties of custom types).
  """
  TYPE_NAME = 'components.SequenceBatches'

  @property
  def split_names(self) -> str:
    return self.get_string_custom_property('split_names')

  @split_names.setter
  def split_names(self, value: str) -> None:
    self.set_string_custom_property('split_names', value)


class SequenceBatcherSpec(types.ComponentSpec):
  """ComponentSpec of the SequenceBatcher.

  One parameter per field of ``ColumnConfig`` and ``LayoutConfig``
  (``executor.setting_fields``), of the primitive type Kubeflow V2 carries
  (``declared.parameter_kind``: bools as 0/1 ints, lists as JSON text);
  each optional (unset: ``executor.settings_from``).
  """

  PARAMETERS = {
      name: ExecutionParameter(type=declared.parameter_kind(field),
                               optional=True)
      for name, field in executor.setting_fields().items()
  }
  INPUTS = {
      'examples': ChannelParameter(type=standard_artifacts.Examples),
      executor.TRANSFORM_GRAPH_KEY: ChannelParameter(
          type=standard_artifacts.TransformGraph, optional=True),
  }
  OUTPUTS = {
      'batches': ChannelParameter(type=SequenceBatches),
  }


class SequenceBatcher(base_beam_component.BaseBeamComponent):
  """Groups time-step rows (or whole SequenceExamples) into sequences and lays
  them into fixed-size stateful batches, for every split of ``examples``.

  Example (Transform with ``materialize=False``: the batcher applies its
  graph to the raw rows, which are read once)::

    batcher = SequenceBatcher(
        examples=example_gen.outputs['examples'],
        transform_graph=transform.outputs['transform_graph'],
        key_column='seq_id', order_column='t', label_column='label',
        batch_size=32, num_unroll=32)
  """

  SPEC_CLASS = SequenceBatcherSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self,
               examples: types.BaseChannel,
               *,
               key_column: str,
               order_column: Optional[str] = None,
               label_column: Optional[str] = None,
               label_kind: str = layout.LayoutConfig.label_kind,
               feature_columns: Optional[Sequence[str]] = None,
               exclude_columns: Sequence[str] = (
                   seqlib.ColumnConfig.exclude_columns),
               batch_size: Optional[int] = None,
               num_unroll: Optional[int] = None,
               mode: str = layout.LayoutConfig.mode,
               max_sequence_length: Optional[int] = None,
               truncate: bool = layout.LayoutConfig.truncate,
               shard_bytes: int = layout.LayoutConfig.shard_bytes,
               lane_multiple: int = layout.LayoutConfig.lane_multiple,
               transform_graph: Optional[types.BaseChannel] = None):
    """Args are the fields of ``ColumnConfig`` and ``LayoutConfig`` (their
    help texts; defaults as declared there, except that the order and label
    columns are None unless named), and ``transform_graph``: an optional
    ``TransformGraph`` applied to the ``examples`` (raw tf.Example rows) as
    they are decoded; the columns named are then the graph's outputs.

    ``order_column`` may be None only for SequenceExample payloads (the
    feature lists' order is used). ``batch_size`` / ``num_unroll`` unset:
    chosen from the train split's sequence lengths by
    ``layout_rule.choose_layout`` (logged, and written to ``metadata.json``), the
    same for every split. ``lane_multiple``: the trainer's replicas
    (replicas x workers); batch_size must be a multiple of it, and a chosen
    one is rounded up to one.
    """
    # Validate eagerly: a bad setting fails when the pipeline is built.
    columns = seqlib.ColumnConfig(
        key_column=key_column, order_column=order_column,
        label_column=label_column,
        feature_columns=tuple(feature_columns) if feature_columns else None,
        exclude_columns=tuple(exclude_columns))
    checked = layout.LayoutConfig(
        batch_size=1 if batch_size is None else batch_size,
        num_unroll=1 if num_unroll is None else num_unroll, mode=mode,
        label_kind=label_kind, max_sequence_length=max_sequence_length,
        truncate=truncate, shard_bytes=shard_bytes,
        lane_multiple=lane_multiple)
    if batch_size is not None:
      checked.check_lane_multiple()
    given = {f.name: getattr(settings, f.name)
             for settings in (columns, checked)
             for f in dataclasses.fields(settings)}
    # Unset: chosen from the train split.
    given.update(batch_size=batch_size, num_unroll=num_unroll)
    fields = executor.setting_fields()
    spec = SequenceBatcherSpec(
        examples=examples,
        transform_graph=transform_graph,
        batches=types.Channel(type=SequenceBatches),
        **{name: declared.to_parameter(fields[name], value)
           for name, value in given.items()})
    super().__init__(spec=spec)
