"""Which Beam runner each of the pipeline's Beam components runs on.

The pipeline's Beam pipeline options (``--runner=...`` and the runner's own
options) apply to every Beam-powered component. Beam's portable runners
(Flink, Spark, Dataflow) run them all. Beam 2.74's DaskRunner
(``--runner=DaskRunner``) translates only Create, ParDo, GroupByKey and
Flatten to Dask bags, and measured here it cannot run the components below
(docs/runners.md, "Dask, Flink, Spark, Dataflow"):

* a read through ``beam.io.Read`` (``ReadFromTFRecord``, TFXIO's TFRecord
  sources) becomes an empty step, so the first stage after it fails
  (``'NoneType' object has no attribute 'map'``);
* only the last leaf of the Beam graph is computed, so a component writing
  several outputs (ExampleGen's splits) writes only one;
* outputs a DoFn emits from ``finish_bundle`` are dropped.

``route_components`` keeps those components on the DirectRunner (a log line
says so) and leaves every other runner's choice alone.

``with_dependency_flags`` stops TFX from building a source package of its
own installation for every Beam component (``dependency_utils.
build_ephemeral_package``: 4 to 5 s each, five times per run, BENCHMARKS.md
section 7) on the runners whose workers run in the launcher's environment.
"""

from __future__ import annotations

import logging
import sys
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
    'StatefulEvaluator': 'TFMA reads through TFXIO (beam.io.Read)',
}


# The Beam options that tell TFX the workers' dependencies are taken care of
# (tfx/utils/dependency_utils.py checks these; without one it builds an
# sdist of TFX for every Beam executor).
DEPENDENCY_FLAGS = ('extra_packages', 'setup_file', 'requirements_file',
                    'worker_harness_container_image', 'sdk_container_image')

# Runners whose workers are the launcher's own interpreter (in_memory),
# its subprocesses (multi_processing) or Dask workers started from the same
# environment: nothing needs staging.
LOCAL_ENVIRONMENT_RUNNERS = ('DirectRunner', 'DaskRunner')


def with_dependency_flags(beam_args: Sequence[str]) -> List[str]:
  """The args, plus Beam's default SDK image when nothing needs staging.

  On the DirectRunner and the DaskRunner the workers import what the
  launcher's environment has, and neither runner reads
  ``--sdk_container_image``; TFX, seeing no dependency option, would build
  and stage an sdist of its own installation for every Beam component
  (which would not even hold this project's code). Naming Beam's own
  default image for this Python and Beam version (what a portable runner
  would pick) tells TFX the dependencies are provided. Args that already
  carry a dependency option, and every other runner (Flink, Spark,
  Dataflow: stage the project with ``--setup_file=./setup.py``), are left
  as they are.
  """
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  beam_args = list(beam_args)
  if runner_name(beam_args) not in LOCAL_ENVIRONMENT_RUNNERS:
    return beam_args
  # By name, as Beam's parser takes them (``--extra_package`` is an alias).
  names = {a[2:].split('=', 1)[0] for a in beam_args if a.startswith('--')}
  if names & (set(DEPENDENCY_FLAGS) | {'extra_package'}):
    return beam_args
  py = '%d.%d' % sys.version_info[:2]
  return beam_args + [
      f'--sdk_container_image=apache/beam_python{py}_sdk:{beam.__version__}']


def runner_name(beam_args: Sequence[str]) -> str:
  """The runner the args choose, as a short class name (``DirectRunner``,
  ``DaskRunner``, ``FlinkRunner``, ...)."""
  return command_line.runner_of(beam_args).rsplit('.', 1)[-1]


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
    on_dask = command_line.runner_of(beam_args) == command_line.DASK_RUNNER
    unsupported = DASK_UNSUPPORTED if on_dask else {}
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
