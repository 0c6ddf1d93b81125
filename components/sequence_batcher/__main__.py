"""Command line: run the SequenceBatcher on CSV files with any Beam runner.

  python -m components.sequence_batcher --input 'data/sample/*.csv' \\
      --output /tmp/batches --batch-size 32 --num-unroll 32

Flags other than ours must be Beam pipeline options (``--runner``,
``--direct_running_mode=multi_processing``, ``--direct_num_workers=2``,
``--runner=DaskRunner --dask_client_address=HOST:PORT``, ...); any other is
an error (exit code 2), as is bad input, reported in one line naming the
file, sequence key and row. The DirectRunner is the default.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional

from components import declared
from components.sequence_batcher import command_line
from components.sequence_batcher import layout
from components.sequence_batcher import sequences as seqlib


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m components.sequence_batcher',
      description=('Group CSV time-step rows into sequences and lay them into '
                   'fixed-size stateful batches (ordered TFRecord shards + '
                   'metadata.json). Other flags must be Beam pipeline options.'))
  p.add_argument('--input', required=True,
                 help='CSV file glob; each file has a header line')
  p.add_argument('--output', required=True, help='output directory')
  p.add_argument('--split', default='train',
                 help='split name of the output folder (default: train)')
  # The column and layout settings, declared once (ColumnConfig,
  # LayoutConfig).
  declared.add_flags(p, seqlib.ColumnConfig)
  declared.add_flags(p, layout.LayoutConfig)
  return p


def dask_partitions(beam_args: List[str], num_files: int) -> List[str]:
  """``beam_args`` plus ``--dask_npartitions`` (one partition per input file,
  at most 64) when the DaskRunner is used and neither it nor
  ``--dask_partition_size`` is set. Beam's DaskRunner partitions only the
  output of ``Create`` (by default 128 elements a partition: here the file
  names, so one partition) and every later stage keeps that partitioning, so
  without this one worker would do all the work."""
  if not command_line.uses_dask(beam_args) or any(
      a.split('=')[0] in ('--dask_npartitions', '--dask_partition_size')
      for a in beam_args):
    return list(beam_args)
  return list(beam_args) + [f'--dask_npartitions={max(1, min(num_files, 64))}']


def main(argv: Optional[List[str]] = None) -> int:
  # Every flag that is not ours must be a Beam pipeline option (exit 2).
  args, beam_args = command_line.split_args(build_parser(), argv)
  logging.basicConfig(level=logging.INFO,
                      format='%(asctime)s %(levelname)s %(message)s')
  # Imported after parsing so --help is fast.
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import beam as sb_beam  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import read_stage  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import metadata as metadata_lib  # pylint: disable=g-import-not-at-top
  try:
    values = declared.values_from_args(args, seqlib.ColumnConfig)
    columns = seqlib.ColumnConfig(**{
        **values, 'order_column': values['order_column'] or None,
        'label_column': values['label_column'] or None,
        'feature_columns': values['feature_columns'] or None})
    config = layout.LayoutConfig(
        **declared.values_from_args(args, layout.LayoutConfig))
    config.check_lane_multiple()
    # Checks every file's header on the launcher (one line per file) so that
    # a wrong column name fails at once, before any worker starts.
    headers = read_stage.read_csv_headers(args.input, columns)
    source = (next(iter(headers)) if len(headers) == 1 else
              f'{args.input} ({len(headers)} files)')
    paths = sorted(headers)
    p = beam.Pipeline(options=PipelineOptions(
        dask_partitions(beam_args, len(paths))))
    # The file names (not the data) are listed here: the workers read the
    # files, and runners that split only Create's output (Beam's DaskRunner)
    # get one partition per file to spread.
    _ = (p
         | 'CsvFiles' >> beam.Create(paths)
         | 'BatchSequences' >> sb_beam.BatchSequences(
             metadata_lib.split_dir(args.output, args.split),
             split=args.split, input_format=read_stage.CSV_FILES,
             columns=columns, config=config, source=source,
             feature_names=read_stage.csv_feature_names(paths, columns)))
    result = p.run()
    try:
      result.wait_until_finish()
    finally:
      command_line.close_runner_client(result)
    merged = metadata_lib.write_root_metadata(args.output)
  except Exception as e:  # pylint: disable=broad-except
    if not command_line.is_user_error(e):
      raise  # A bug: keep its traceback.
    print(f'error: {command_line.one_line_error(e)}', file=sys.stderr)
    return 2
  stats = merged['splits'][args.split]
  print(json.dumps({k: stats[k] for k in (
      'num_sequences', 'num_batches', 'real_timesteps', 'padded_timesteps',
      'efficiency')}, indent=1))
  return 0


if __name__ == '__main__':
  sys.exit(main())
