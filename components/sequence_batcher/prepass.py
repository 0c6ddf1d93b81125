"""The executor's data-derived side values, computed in a pipeline of their own.

The batching pipeline has two values derived from the data that reach its
stages as side inputs: the feature names inferred from a split's examples
(when ``feature_columns`` is unset) and the layout chosen from the train
split (when ``batch_size`` or ``num_unroll`` is unset). Beam 2.74's
DaskRunner evaluates a side input inside every task that reads it: the task
iterates the side input's Dask bag, which computes that bag's whole upstream
graph again (``DaskBagWindowedIterator.__iter__`` -> ``Bag.compute()``), so
every partition that reads a side input re-reads and re-decodes its split,
while holding a worker thread. Measured on the bundled sample (docs/runners.md,
"Dask, Flink, Spark, Dataflow"): the executor on a 2-worker
LocalCluster was still decoding after minutes, its worker tasks blocked in
those nested computations, where the DirectRunner takes 10 s.

On such a runner the executor first runs ``expand`` below: each split read
once, reduced to its feature names and, for the train split, the layout
choice, all joined into one leaf whose single element a worker writes as a
small JSON file under the output folder. The launcher reads it (``load``)
and the batching pipeline gets both as constants, with no side input left.
Each split is then read twice in all, once per pass, instead of once per
partition and side input.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from components.sequence_batcher import beam as sb_beam
from components.sequence_batcher import plan as sb_plan
from components.sequence_batcher import read_stage
from components.sequence_batcher import sequences as seqlib

_LOG = logging.getLogger(__name__)

# Under the output folder, removed once read.
FOLDER = '.side-values'
_FILE = 'side-values.json'
_NAMES, _LAYOUT = 'feature_names', 'layout'


@dataclasses.dataclass(frozen=True)
class SideValues:
  """Per split feature names (only for splits whose names are inferred) and
  the train split's ``(batch_size, num_unroll)`` (None when both are set)."""
  feature_names: Dict[str, List[str]]
  layout: Optional[Tuple[int, int]]


def needed(args) -> bool:
  """Whether ``args`` (an ``executor.BatcherArgs``) has any data-derived
  side value."""
  return any(args.auto_layout) or not args.columns.feature_columns


def path(output_uri: str) -> str:
  return FileSystems.join(output_uri, FOLDER, _FILE)


def expand(pipeline: beam.Pipeline, args, layout_basis: str,
           source) -> None:
  """Adds the side-value branches of every split, joined into one leaf that
  writes ``path(args.output_uri)``. ``source(split)`` names a split in
  errors, as the batching pipeline does."""
  parts = []
  for split in args.splits:
    decoded = (pipeline
               | f'Read[{split}]' >> read_stage.ReadRecords(
                   args.input_patterns[split])
               | f'Decode[{split}]' >> read_stage.DecodeRows(
                   args.input_format, args.columns, source=source(split),
                   transform_graph=args.transform_graph))
    if not args.columns.feature_columns:
      parts.append(
          decoded
          | f'InferFeatureNames[{split}]' >> sb_beam.InferFeatureNames(
              args.columns)
          | f'TagNames[{split}]' >> beam.Map(
              lambda names, s=split: (_NAMES, s, list(names))))
    if any(args.auto_layout) and split == layout_basis:
      parts.append(decoded
                   | 'ChooseLayout' >> sb_plan.ChooseLayout(args.config)
                   | 'TagLayout' >> beam.Map(
                       lambda c: (_LAYOUT, None, [int(c[0]), int(c[1])])))
  _ = (tuple(parts)
       | 'Join' >> sb_beam.JoinOutputs()
       | 'Write' >> beam.Map(_write, path(args.output_uri)))


def _write(tagged: List[Tuple[str, Optional[str], list]], out: str) -> None:
  values = {_NAMES: {}, _LAYOUT: None}
  for tag, split, value in tagged:
    if tag == _NAMES:
      values[_NAMES][split] = value
    else:
      values[_LAYOUT] = value
  folder = out.rsplit('/', 1)[0]
  if not FileSystems.exists(folder):
    FileSystems.mkdirs(folder)
  with FileSystems.create(out) as f:
    f.write(json.dumps(values, sort_keys=True).encode('utf-8'))


def load(args, layout_basis: str, source) -> SideValues:
  """Reads and removes what ``expand``'s pipeline wrote. A split that gave
  no value has no rows: the batching pipeline's own error, raised here."""
  out = path(args.output_uri)
  if FileSystems.exists(out):
    with FileSystems.open(out) as f:
      values = json.loads(f.read().decode('utf-8'))
    FileSystems.delete([FileSystems.join(args.output_uri, FOLDER)])
  else:  # Every branch was empty: nothing reached the writer.
    values = {_NAMES: {}, _LAYOUT: None}
  names = values[_NAMES]
  for split in args.splits:
    if not args.columns.feature_columns and split not in names:
      raise seqlib.InputDataError(f'{source(split)}: the input has no rows')
  layout = values[_LAYOUT]
  if any(args.auto_layout) and layout is None:
    raise seqlib.InputDataError(
        f'{source(layout_basis)}: the input has no rows')
  if layout is not None:
    _LOG.info('side values: layout from split %s: batch_size %d, '
              'num_unroll %d', layout_basis, layout[0], layout[1])
  return SideValues(feature_names=names,
                    layout=tuple(layout) if layout is not None else None)
