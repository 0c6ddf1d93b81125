"""Which Beam runner each of the pipeline's Beam components runs on.

The pipeline's Beam pipeline options (``--runner=...`` and the runner's own
options) apply to every Beam-powered component. Beam's portable runners
(Flink, Spark, Dataflow) run them all. Beam 2.74's DaskRunner
(``--runner=DaskRunner``) translates only Create, ParDo, GroupByKey and
Flatten to Dask bags, and measured here it cannot run the components below
(README, "Running on Dask, Flink, Spark, Dataflow"):

* a read through ``beam.io.Read`` (``ReadFromTFRecord``, TFXIO's TFRecord
  sources) becomes an empty step, so the first stage after it fails
  (``'NoneType' object has no attribute 'map'``);
* only the last leaf of the Beam graph is computed, so a component writing
  several outputs (ExampleGen's splits) writes only one;
* outputs a DoFn emits from ``finish_bundle`` are dropped.

``route_components`` keeps those components on the DirectRunner (a log line
says so) and leaves every other runner's choice alone.
"""

from __future__ import annotations

import logging
from typing import Dict, Iterable, List, Optional, Sequence

from components.sequence_batcher import command_line

_LOG = logging.getLogger(__name__)

# Component id -> why it does not run on Beam 2.74's DaskRunner (measured).
DASK_UNSUPPORTED: Dict[str, str] = {
    'CsvExampleGen': 'its row-by-row path (TFX\'s executor) writes one '
                     'Beam output per split; the DaskRunner computes only '
                     'the last leaf of the graph, so the other splits stay '
                     'empty',
    'ImportExampleGen': 'reads with beam.io.ReadFromTFRecord (beam.io.Read, '
                        'not translated by the DaskRunner)',
    'StatisticsGen': 'reads through TFXIO (beam.io.Read)',
    'Transform': 'reads through TFXIO (beam.io.Read)',
    'SequenceBatcher': 'reads with beam.io.ReadFromTFRecord (beam.io.Read) '
                       'and writes one Beam output per split',
    'StatefulEvaluator': 'TFMA reads through TFXIO (beam.io.Read)',
}


def runner_name(beam_args: Sequence[str]) -> str:
  """The runner the args choose, as a short class name (``DirectRunner``,
  ``DaskRunner``, ``FlinkRunner``, ...)."""
  return command_line.runner_of(beam_args).rsplit('.', 1)[-1]


def is_dask(beam_args: Sequence[str]) -> bool:
  return command_line.runner_of(beam_args) == command_line.DASK_RUNNER


def direct_fallback_args(beam_args: Sequence[str]) -> List[str]:
  """Component-level args that put a component back on the DirectRunner
  (TFX appends them after the pipeline's, and the last ``--runner`` wins)."""
  del beam_args  # The Dask options left in the pipeline's args are ignored.
  return ['--runner=DirectRunner']


def route_components(components: Iterable, beam_args: Optional[Sequence[str]],
                     unsupported: Optional[Dict[str, str]] = None) -> List[str]:
  """Keeps the Beam components a runner cannot run on the DirectRunner.

  Args:
    components: the pipeline's components (TFX ``BaseComponent``s).
    beam_args: the pipeline's Beam pipeline args.
    unsupported: component id -> reason (default: ``DASK_UNSUPPORTED`` when
      the args choose the DaskRunner, else nothing).

  Returns:
    The ids of the components moved to the DirectRunner.
  """
  from tfx.dsl.components.base import executor_spec  # pylint: disable=g-import-not-at-top
  beam_args = list(beam_args or [])
  if unsupported is None:
    unsupported = DASK_UNSUPPORTED if is_dask(beam_args) else {}
  moved = []
  for component in components:
    spec = getattr(component, 'executor_spec', None)
    if not isinstance(spec, executor_spec.BeamExecutorSpec):
      continue  # Not Beam-powered (TFX gives these no Beam args either).
    reason = unsupported.get(component.id)
    if reason is None:
      continue
    spec.add_beam_pipeline_args(direct_fallback_args(beam_args))
    moved.append(component.id)
    _LOG.warning('%s runs on the DirectRunner, not the %s: %s', component.id,
                 runner_name(beam_args), reason)
  return moved
