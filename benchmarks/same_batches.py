"""Do two checkouts write the same batches? (issue 46's "figures do not move")

Runs the pipeline's components up to the SequenceBatcher (no trainer) from
each checkout on the same data and prints a SHA-256 of each split's batch
files: equal hashes mean byte-identical batches, hence the same figures.

  PYTHONPATH=. python -m benchmarks.same_batches --baseline-tree /tmp/old \\
      --data-root data/sample [-- <local runner flags>]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import tempfile

from benchmarks import harness


def child(data: str, out: str, extra) -> dict:
  """In a fresh process on the checkout under test (``harness.call``): its
  pipeline up to the SequenceBatcher, and each split's batch hash and
  counts."""
  # pylint: disable=g-import-not-at-top
  import dataclasses
  from tfx import v1 as tfx
  from pipeline import input_check, pipeline as pipeline_lib
  try:
    from pipeline import flags as flags_lib
  except ImportError:  # An older checkout: the flags were in the runner.
    from pipeline import local_runner as flags_lib
  # pylint: enable=g-import-not-at-top
  args, _ = flags_lib.build_parser().parse_known_args(
      ['--data-root', data, '--output-dir', out] + list(extra))
  config = flags_lib.config_from_args(args)
  if hasattr(input_check, 'check_input_details'):
    names = input_check.check_input_details(config)[1]
    if not config.feature_columns and names:
      config = dataclasses.replace(config, feature_columns=tuple(names))
  p = pipeline_lib.create_pipeline_from_config(
      config, pipeline_root=os.path.join(out, 'root'))
  drop = {'StatefulTrainer', 'latest_blessed_model_resolver',
          'StatefulEvaluator', 'Pusher'}
  keep = [c for c in p.components if c.id not in drop]
  ids = {id(c) for c in keep}
  for c in keep:
    c._downstream_nodes = {d for d in c._downstream_nodes if id(d) in ids}  # pylint: disable=protected-access
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name='same-batches', pipeline_root=os.path.join(out, 'root'),
      components=keep,
      metadata_connection_config=tfx.orchestration.metadata
      .sqlite_metadata_connection_config(os.path.join(out, 'm.sqlite')),
      beam_pipeline_args=['--direct_running_mode=in_memory']))
  uri = glob.glob(os.path.join(out, 'root', 'SequenceBatcher', 'batches',
                               '*'))[0]
  result = {}
  for split in ('train', 'eval'):
    folder = os.path.join(uri, f'Split-{split}')
    h = hashlib.sha256()
    for f in sorted(glob.glob(os.path.join(folder, '*.tfrecord*'))):
      with open(f, 'rb') as fh:
        h.update(fh.read())
    meta = harness.read_json(os.path.join(folder, 'metadata.json'))
    result[split] = {'sha256': h.hexdigest()[:16],
                     'sequences': meta.get('num_sequences'),
                     'real_timesteps': meta.get('real_timesteps')}
  return result


def batches_of(tree: str, data_root: str, extra) -> dict:
  """The hashes and counts of the batches ``tree``'s code writes."""
  result, res = harness.call(
      'same_batches.child', os.path.abspath(data_root),
      tempfile.mkdtemp(prefix='tss-same-batches-'), list(extra),
      code_root=tree)
  if result is None:
    raise RuntimeError(f'{tree}: no result (exit {res.returncode}): '
                       f'{res.stderr[-2000:]}')
  return result


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--baseline-tree', required=True)
  p.add_argument('--current-tree', default=harness.ROOT)
  p.add_argument('--data-root', required=True)
  p.add_argument('extra', nargs='*', help='local runner flags (after --)')
  args = p.parse_args(argv)
  base = batches_of(args.baseline_tree, args.data_root, args.extra)
  cur = batches_of(args.current_tree, args.data_root, args.extra)
  same = base == cur
  print(json.dumps({'baseline': base, 'current': cur, 'identical': same},
                   indent=1, sort_keys=True))
  return 0 if same else 1


if __name__ == '__main__':
  raise SystemExit(main())
