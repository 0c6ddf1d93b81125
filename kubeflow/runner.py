"""Compiles the pipeline for Kubeflow Pipelines (KFP v2) with KubeflowV2DagRunner.

  python -m kubeflow.runner --image gcr.io/my-project/tfx-stateful-sequences:0.1.0 \\
      --pipeline-root gs://my-bucket/pipeline_root --data-root gs://my-bucket/data \\
      --output-file pipeline.json

The same ``create_pipeline(...)`` as the local runner, with the same pipeline
flags; the result is a pipeline JSON to submit to a KFP cluster (README).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from pipeline import local_runner


def build_parser() -> argparse.ArgumentParser:
  p = local_runner.build_parser()
  p.prog = 'python -m kubeflow.runner'
  p.description = ('Compile the pipeline to a Kubeflow Pipelines v2 JSON. '
                   'Unknown flags are Beam pipeline options for the '
                   'containers.')
  p.add_argument('--image', required=True,
                 help='container image with this project installed '
                 '(kubeflow/Dockerfile)')
  p.add_argument('--pipeline-root', required=True,
                 help='where artifacts go (e.g. gs://bucket/root)')
  p.add_argument('--output-file', default='pipeline.json',
                 help='the compiled pipeline JSON')
  return p


def compile_pipeline(argv: Optional[List[str]] = None) -> str:
  """Compiles and returns the path of the pipeline JSON."""
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  args, beam_args = build_parser().parse_known_args(argv)
  # Data and root stay as given (cloud paths are not made absolute).
  data_root = args.data_root
  config = local_runner.config_from_args(args)
  p = pipeline_lib.create_pipeline_from_config(
      config, data_root=data_root, pipeline_root=args.pipeline_root,
      metadata_connection_config=None,
      beam_pipeline_args=beam_args or ['--direct_running_mode=in_memory'])
  out = os.path.abspath(args.output_file)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=args.image),
      output_dir=os.path.dirname(out), output_filename=os.path.basename(out))
  runner.run(p, write_out=True)
  return out


def main(argv: Optional[List[str]] = None) -> int:
  try:
    out = compile_pipeline(argv)
  except (ValueError, OSError) as e:
    print(f'error: {str(e).strip().splitlines()[0]}', file=sys.stderr)
    return 1
  print(f'Pipeline compiled to {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
