"""Compiles the pipeline for Kubeflow Pipelines (KFP v2) with KubeflowV2DagRunner.

  python -m kubeflow.compile --image gcr.io/my-project/tfx-stateful-sequences:0.1.0 \\
      --pipeline-root gs://my-bucket/pipeline_root --data-root gs://my-bucket/data \\
      --output-file pipeline.json

The same ``create_pipeline(...)`` as the local runner, with the same pipeline
flags; the result is a pipeline JSON to submit to a KFP cluster (docs/runners.md, "Kubeflow Pipelines").

Every path the compiled pipeline holds is a cluster path given here: the
pipeline root, the data root and the Pusher's target (``--serving-dir``,
default ``<pipeline-root>/serving_model``). None is a path of the compiling
machine: the local runner's ``--output-dir`` is not accepted, the shipped
model and the Transform function are importable module names of the image,
and a ``--module-file`` is packaged by TFX into a wheel under
``<pipeline-root>/_wheels`` while compiling.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import List, Optional

from components.sequence_batcher import command_line
from pipeline import flags as flags_lib
from pipeline import pipeline_config

SERVING_SUBDIR = 'serving_model'
TRAINER_TASK = 'StatefulTrainer'
# A failed trainer step is retried (its pod evicted, preempted, OOM-killed
# ...): the retry finds the checkpoints of the attempt it replaces under
# the checkpoint dir (same inputs, same fingerprint) and resumes them.
DEFAULT_TRAINER_RETRIES = 3
RETRY_BACKOFF = '60s'
RETRY_BACKOFF_FACTOR = 2.0
RETRY_BACKOFF_MAX = '3600s'


def build_parser() -> argparse.ArgumentParser:
  # The pipeline's flags (pipeline/flags.py, made from the settings'
  # declarations); those redefined below replace them
  # (conflict_handler='resolve'): no local default may reach the compiled
  # pipeline. --checkpoint-dir is taken as given (a cluster path, e.g.
  # gs://bucket/checkpoints; a retried trainer step resumes from it).
  p = argparse.ArgumentParser(
      prog='python -m kubeflow.compile',
      description='Compile the pipeline to a Kubeflow Pipelines v2 JSON. '
      'Unknown flags are Beam pipeline options for the containers.',
      parents=[flags_lib.build_parser()], add_help=False,
      conflict_handler='resolve')
  p.add_argument('--data-root', required=True,
                 help='the data as the cluster reads it (e.g. '
                 'gs://bucket/data): CSV files (split by sequence key), or train/ and eval/ '
                 'subfolders; TFRecord SequenceExamples with '
                 '--input-format sequence_example')
  p.add_argument('--output-dir', default=None, help=argparse.SUPPRESS)
  p.add_argument('--module-file', default=None,
                 help='a local user model module (build_model(spec)); TFX '
                 'packages it into a wheel under <pipeline-root>/_wheels '
                 'while compiling (default: the shipped model)')
  p.add_argument('--image', required=True,
                 help='container image with this project installed '
                 '(kubeflow/Dockerfile)')
  p.add_argument('--pipeline-root', required=True,
                 help='where artifacts go (e.g. gs://bucket/root)')
  p.add_argument('--serving-dir', default=None,
                 help='where the Pusher copies a blessed model, as the '
                 'cluster sees it (default: <pipeline-root>/serving_model)')
  p.add_argument('--output-file', default='pipeline.json',
                 help='the compiled pipeline JSON')
  p.add_argument('--trainer-retries', type=int,
                 default=DEFAULT_TRAINER_RETRIES,
                 help='retries of a failed trainer step (the task\'s '
                 'retryPolicy; each resumes from the last checkpoint; '
                 f'0: none; default {DEFAULT_TRAINER_RETRIES})')
  p.add_argument('--trainer-workers', type=int, default=1,
                 help='train on this many workers: the trainer step '
                 'launches a TFJob of Kubeflow\'s Training Operator (one '
                 'chief, N-1 workers, each running the trainer\'s executor '
                 'with the TF_CONFIG the operator gives it; '
                 'MultiWorkerMirroredStrategy) and waits for it; the chief '
                 'exports. The batch size is made a multiple of replicas x '
                 'workers (default 1: the trainer runs in the step\'s own '
                 'container)')
  return p


def _trainer_container(compiled: dict) -> dict:
  spec = compiled['pipelineSpec']
  component = spec['components'][spec['root']['dag']['tasks'][TRAINER_TASK][
      'componentRef']['name']]
  return spec['deploymentSpec']['executors'][component['executorLabel']][
      'container']


def use_tfjob(path: str, *, workers: int, retries: int) -> None:
  """Makes the compiled trainer task launch its executor as a TFJob of
  ``workers`` processes (``kubeflow/tfjob.py``): the container runs the
  launcher, given the TFJob template (the image, the executor's command,
  one chief and ``workers - 1`` workers, ``backoffLimit`` = the trainer's
  retries) and, after ``--``, the executor's own command and args."""
  from kubeflow import tfjob  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    compiled = json.load(f)
  container = _trainer_container(compiled)
  manifest = tfjob.template(image=container['image'],
                            command=container['command'], workers=workers,
                            backoff_limit=retries)
  container['args'] = (['--manifest', json.dumps(manifest, sort_keys=True),
                        '--'] + list(container['command']) +
                       list(container['args']))
  container['command'] = ['python', '-m', 'kubeflow.tfjob']
  with open(path, 'w') as f:
    json.dump(compiled, f, indent=2, sort_keys=True)


def set_trainer_retry_policy(path: str, retries: int) -> None:
  """Writes the trainer task's ``retryPolicy`` (KFP v2 PipelineTaskSpec
  ``retry_policy``) into the compiled JSON at ``path``.

  TFX 1.16's KubeflowV2DagRunner has no API for it (a node's
  ``platform_config`` only carries container resources), so the compiled
  JSON is completed here.
  """
  with open(path) as f:
    compiled = json.load(f)
  task = compiled['pipelineSpec']['root']['dag']['tasks'][TRAINER_TASK]
  if retries > 0:
    task['retryPolicy'] = {
        'maxRetryCount': int(retries),
        'backoffDuration': RETRY_BACKOFF,
        'backoffFactor': RETRY_BACKOFF_FACTOR,
        'backoffMaxDuration': RETRY_BACKOFF_MAX,
    }
  else:
    task.pop('retryPolicy', None)
  with open(path, 'w') as f:
    json.dump(compiled, f, indent=2, sort_keys=True)


def serving_dir_of(pipeline_root: str, serving_dir: Optional[str]) -> str:
  """The Pusher's target: ``serving_dir`` as given, or under the root."""
  if serving_dir:
    return serving_dir
  return pipeline_root.rstrip('/') + '/' + SERVING_SUBDIR


def compile_pipeline(argv: Optional[List[str]] = None) -> str:
  """Compiles and returns the path of the pipeline JSON."""
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  parser = build_parser()
  # Every flag that is not ours must be a Beam pipeline option (exit 2).
  args, beam_args = command_line.split_args(parser, argv)
  if args.output_dir is not None:
    parser.error('--output-dir is the local runner\'s; on Kubeflow give '
                 '--pipeline-root and --serving-dir')
  # The pipeline settings as the local runner reads them; the local paths
  # this yields (its output dir) are not used: the data root, the pipeline
  # root and the serving dir are passed as given (cloud paths are not made
  # absolute).
  local_args = argparse.Namespace(**{
      **vars(args), 'output_dir': pipeline_config.PipelineConfig.output_dir})
  if args.trainer_retries < 0:
    parser.error('--trainer-retries must be at least 0')
  if args.trainer_workers < 1:
    parser.error('--trainer-workers must be at least 1')
  config = dataclasses.replace(flags_lib.config_from_args(local_args),
                               data_root=args.data_root,
                               checkpoint_dir=args.checkpoint_dir)
  if args.trainer_workers > 1 and config.trainer.replicas > 1:
    parser.error('--trainer-workers trains one replica per worker: leave '
                 '--replicas at 1')
  p = pipeline_lib.create_pipeline(
      config, data_root=args.data_root, pipeline_root=args.pipeline_root,
      serving_dir=serving_dir_of(args.pipeline_root, args.serving_dir),
      metadata_connection_config=None,
      beam_pipeline_args=beam_args or ['--direct_running_mode=in_memory'],
      trainer_workers=args.trainer_workers)
  out = os.path.abspath(args.output_file)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=args.image),
      output_dir=os.path.dirname(out), output_filename=os.path.basename(out))
  runner.run(p, write_out=True)
  set_trainer_retry_policy(out, args.trainer_retries)
  if args.trainer_workers > 1:
    use_tfjob(out, workers=args.trainer_workers,
              retries=args.trainer_retries)
  return out


def main(argv: Optional[List[str]] = None) -> int:
  try:
    out = compile_pipeline(argv)
  except (ValueError, OSError) as e:  # A bad setting or file: exit 2.
    print(f'error: {command_line.one_line_error(e)}', file=sys.stderr)
    return 2
  print(f'Pipeline compiled to {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
