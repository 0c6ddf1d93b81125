"""The main job: the pipeline on LocalDagRunner, Beam DirectRunner, SQLite MLMD.

  python -m pipeline.local_runner --data-root data/sample --output-dir outputs/local

Flags other than ours must be Beam pipeline options (e.g.
``--direct_running_mode=multi_processing --direct_num_workers=2``, or another
runner: ``--runner=DaskRunner --dask_client_address=tcp://HOST:8786``,
``--runner=FlinkRunner --flink_master=HOST:8081``, ...; components a runner
cannot run stay on the DirectRunner, see ``pipeline/beam_options.py``); any
other is an error (exit code 2). The input data and the module file are checked
before the pipeline starts (``input_check``): bad input stops the run with
one line naming the file, sequence key and row, exit code 2, and nothing is
trained, blessed or pushed. At the end a summary is printed and written to
``<output-dir>/summary.json``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import sys
import time
import warnings
from typing import Dict, List, Optional

from components.sequence_batcher import command_line
from components.stateful import heap
from components.sequence_batcher import sequences as seqlib
from pipeline import flags as flags_lib
from pipeline import input_check
from pipeline import pipeline_config


def check_data_root(config: pipeline_config.PipelineConfig) -> None:
  root = config.data_root
  if not os.path.isdir(root):
    raise ValueError(f'--data-root {root}: no such directory')
  files = [f for _, _, fs in os.walk(root) for f in fs
           if not f.startswith('.')]
  if not files:
    raise ValueError(f'--data-root {root}: no data files')
  if config.input_format == 'csv' and not any(
      f.endswith('.csv') for f in files):
    raise ValueError(f'--data-root {root}: no .csv files (use '
                     '--input-format sequence_example for TFRecords)')


def run(config: pipeline_config.PipelineConfig,
        beam_args: Optional[List[str]] = None) -> Dict:
  """Runs the pipeline and returns the summary (also in summary.json)."""
  # Start-up (imports, the input check, the pipeline) without automatic
  # garbage collections: they would walk the growing heap of imported
  # modules again and again (heap.collection_paused).
  with heap.collection_paused():
    # Not ``tfx.v1``, which also imports Google Cloud extensions unused here.
    from tfx.orchestration import metadata  # pylint: disable=g-import-not-at-top
    from tfx.orchestration.local import local_dag_runner  # pylint: disable=g-import-not-at-top
    from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
    from pipeline import summary as summary_lib  # pylint: disable=g-import-not-at-top
    check_data_root(config)
    # Bad input fails here, in one line, before any component runs.
    _, feature_names, longest = input_check.check_input_details(config)
    if config.recipe == 'keras' and not config.num_unroll:
      # Whole sequences: one segment each, as Keras fit sees them.
      config = dataclasses.replace(config, num_unroll=longest)
    if not config.feature_columns and feature_names:
      # The features are decided once, by the check: Transform and the
      # batcher are given them, so nothing downstream (a schema that marks a
      # column deprecated) can drop one silently.
      config = dataclasses.replace(config,
                                   feature_columns=tuple(feature_names))
    os.makedirs(config.output_dir, exist_ok=True)
    beam_args = list(beam_args or ['--direct_running_mode=in_memory'])
    p = pipeline_lib.create_pipeline(
        config, pipeline_root=config.pipeline_root,
        metadata_connection_config=(
            metadata.sqlite_metadata_connection_config(config.metadata_path)),
        beam_pipeline_args=beam_args)
  t0 = time.time()
  # What is alive now (the imported TensorFlow, Beam and TFX: most of the
  # heap) is left out of the run's full garbage collections.
  with heap.frozen_heap():
    local_dag_runner.LocalDagRunner().run(p)
  wall = time.time() - t0
  summary = summary_lib.collect(config, wall_seconds=wall)
  with open(os.path.join(config.output_dir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1, sort_keys=True)
  return summary


def main(argv: Optional[List[str]] = None) -> int:
  # google-cloud libraries warn about Python 3.10 on import; TFX 1.16 needs it.
  warnings.filterwarnings('ignore', category=FutureWarning)
  # Every flag that is not ours must be a Beam pipeline option (exit 2).
  with heap.collection_paused():  # It imports Beam.
    args, beam_args = command_line.split_args(flags_lib.build_parser(), argv)
  logging.basicConfig(level=logging.INFO,
                      format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  for noisy in ('absl', 'apache_beam', 'tensorflow'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  try:
    config = flags_lib.config_from_args(args)
    if config.trainer.replicas > 1:
      # Logical CPU devices (no GPU) exist only if made before TensorFlow
      # starts, i.e. before the first component runs.
      from components.stateful_trainer import distribution  # pylint: disable=g-import-not-at-top
      distribution.configure_local_devices(config.trainer.replicas)
    summary = run(config, beam_args)
  except Exception as e:  # pylint: disable=broad-except
    # Bad input, settings, files or modules (TrainingConfigError too): one
    # line naming the file, sequence key and row, exit code 2.
    if command_line.is_user_error(e):
      from components.stateful import model_io  # pylint: disable=g-import-not-at-top
      # Errors whose message is the line to show, wherever they are wrapped.
      shown = (seqlib.InputDataError, model_io.ModuleError)
      print(f'error: {command_line.one_line_error(e, shown)}',
            file=sys.stderr)
      return 2
    if not isinstance(e, RuntimeError):
      raise  # A bug: keep its traceback.
    msg = str(e).strip().splitlines()
    print(f'error: {msg[0] if msg else type(e).__name__}', file=sys.stderr)
    return 1
  from pipeline import summary as summary_lib  # pylint: disable=g-import-not-at-top
  print(summary_lib.render(summary))
  return 0


if __name__ == '__main__':
  exit_code = main()
  # Everything is written and printed by now. The interpreter's exit would
  # run its garbage collector over every object TensorFlow, Beam and TFX
  # made (seconds: about 4 s after importing TensorFlow alone, on 2 busy
  # cores); frozen objects are skipped. atexit handlers still run.
  gc.freeze()
  sys.exit(exit_code)
