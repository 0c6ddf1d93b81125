"""7. Pipeline overhead: per-component seconds of the local pipeline.

The main job (``pipeline.local_runner --no-cache``, defaults otherwise) on
``data/generate.py`` CSV at about 100k, 1M and 10M rows, a fresh process per
run; component seconds from ML Metadata (``summary.json``). Target: the
stages before the trainer, together, below the trainer. ``--profile DIR``
runs every executor under cProfile instead; ``--baseline DIR`` also runs
each size on the code checked out in DIR (BENCHMARKS.md section 7)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Dict, List, Optional

from benchmarks import harness
from benchmarks.harness import recorded
from benchmarks.harness import speed
from benchmarks.harness.recorded import cell as _s

DATA_DIR = os.path.join(harness.QUICK_DIR, 'pipeline-overhead-data')
OUT_DIR = os.path.join(harness.QUICK_DIR, 'pipeline-overhead-out')
SECTION = 'pipeline_overhead'
POST_TRAINER = ('latest_blessed_model_resolver', 'StatefulEvaluator',
                'Pusher')
TRAINER = 'StatefulTrainer'
PROFILE = os.path.join(recorded.RESULTS_DIR, 'pipeline_overhead-profile.json')

log = harness.progress_log('pipeline_overhead')


def ensure_csv(rows: int) -> str:
  """CSV files of about ``rows`` rows (generated once, cached under /tmp)."""
  return speed.csv_of(DATA_DIR, rows, minimum=8, log=log)


def _profile_executors(directory: str) -> None:
  """Runs every executor of the pipeline under cProfile: one ``.prof`` per
  component in ``directory``."""
  import cProfile  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.portable import beam_executor_operator  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.portable import python_executor_operator  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)

  def wrap(cls):
    original = cls.run_executor

    def run_executor(self, execution_info, *args, **kwargs):
      node = execution_info.pipeline_node.node_info.id
      profile = cProfile.Profile()
      t0 = time.perf_counter()
      try:
        return profile.runcall(original, self, execution_info, *args,
                               **kwargs)
      finally:
        seconds = time.perf_counter() - t0
        profile.dump_stats(os.path.join(directory, f'{node}.prof'))
        log(f'profiled {node}: {seconds:.1f} s -> {directory}/{node}.prof')

    cls.run_executor = run_executor

  wrap(beam_executor_operator.BeamExecutorOperator)
  wrap(python_executor_operator.PythonExecutorOperator)


# What a component's executor spends its time on, by the functions that
# contain that work (cumulative seconds under cProfile; nested parts of a
# row are inside the row above them only where said).
PROFILE_PARTS = (
    ('executor', 'executor_operator.py', 'run_executor'),
    ('TFX builds its own sdist for Beam (dependency_utils.'
     'build_ephemeral_package)', 'dependency_utils.py',
     'build_ephemeral_package'),
    ('Beam graph building (Pipeline.apply)', 'apache_beam/pipeline.py',
     'apply'),
    ('Beam graph to protos (Pipeline.to_runner_api)',
     'apache_beam/pipeline.py', 'to_runner_api'),
    ('Beam bundles run (bundle_processor.process_bundle)',
     'bundle_processor.py', 'process_bundle'),
    ('  of which: TFRecord reading, Python (tfrecordio.read_records)',
     'tfrecordio.py', 'read_records'),
    ('  of which: TFRecord writing, Python (tfrecordio.write_record)',
     'tfrecordio.py', 'write_record'),
    ('  of which: tf.Example decoding (tfx_bsl DecodeBatch)',
     'example_coder.py', 'DecodeBatch'),
    ('  of which: gzip compression (zlib)', '~', "<method 'compress' of "
     "'zlib.Compress' objects>"),
    ('  of which: row-by-row CSV parsing and typing (TFX csv_decoder)',
     'csv_decoder.py', 'add_input'),
    ('  of which: TFDV statistics generators (add_input)',
     'tensorflow_data_validation', 'add_input'),
    ('  of which: tf.Transform graph runs (_RunMetaGraphDoFn)',
     'tensorflow_transform/beam/impl.py', '_handle_batch'),
    ('  of which: block CSV reading, encoding, writing (this ExampleGen)',
     'pipeline/csv_example_gen.py', 'process'),
)


def profile_digest(path: str) -> Dict[str, object]:
  """Seconds by ``PROFILE_PARTS`` from one ``.prof`` file."""
  import pstats  # pylint: disable=g-import-not-at-top
  stats = pstats.Stats(path).stats
  parts = {}
  for label, file_part, function in PROFILE_PARTS:
    # The outermost of the matching functions (cumtime already counts a
    # function's recursive calls once).
    parts[label] = round(max(
        (v[3] for (f, _, name), v in stats.items()
         if file_part in f and name == function), default=0.0), 2)
  return {'parts': parts}


def child(profile_dir: Optional[str], flags: List[str]) -> dict:
  """The local runner with ``flags`` in a fresh process (``harness.call``),
  timed from inside (or its executors profiled into ``profile_dir``)."""
  t0 = time.perf_counter()
  from pipeline import input_check  # pylint: disable=g-import-not-at-top
  from pipeline import local_runner  # pylint: disable=g-import-not-at-top
  timings = {'input_check_seconds': 0.0}
  original = input_check.check_input

  def timed_check(*args, **kwargs):
    start = time.perf_counter()
    try:
      return original(*args, **kwargs)
    finally:
      timings['input_check_seconds'] += time.perf_counter() - start

  input_check.check_input = timed_check
  if profile_dir:
    _profile_executors(profile_dir)
  timings['import_seconds'] = time.perf_counter() - t0
  if local_runner.main(flags) != 0:
    raise RuntimeError('the local runner failed')
  timings['main_seconds'] = time.perf_counter() - t0
  return timings


def run_pipeline(data: str, out: str, *, code_root: str = harness.ROOT,
                 profile_dir: Optional[str] = None) -> dict:
  """One fresh-process run of the local runner on ``data``; the summary's
  per-component seconds, the input check's, wall time and peak RSS."""
  shutil.rmtree(out, ignore_errors=True)
  os.makedirs(out)
  flags = ['--data-root', data, '--output-dir', out, '--no-cache']
  timings, res = harness.call('pipeline_overhead.child', profile_dir, flags,
                              code_root=code_root)
  with open(os.path.join(out, 'stderr.log'), 'w') as f:
    f.write(res.stderr)
  if timings is None:
    raise RuntimeError(f'{data}: the pipeline failed (exit code '
                       f'{res.returncode}); log: {out}/stderr.log')
  summary = harness.read_json(os.path.join(out, 'summary.json'))
  components = harness.component_seconds(summary)
  return {
      'components': components,
      'pre_trainer_seconds': pre_trainer_seconds(components),
      'trainer_seconds': components.get(TRAINER),
      'pipeline_seconds': summary['wall_seconds'],
      'input_check_seconds': round(timings['input_check_seconds'], 2),
      'import_seconds': round(timings['import_seconds'], 2),
      'process_seconds': round(res.seconds, 2),
      'peak_rss_bytes': res.peak.tree,
      'batcher': summary.get('batcher'),
      'eval': summary.get('eval'),
      'blessed': summary.get('blessed'),
  }


COLUMNS = (('CsvExampleGen', 'ExampleGen'), ('StatisticsGen', 'StatisticsGen'),
           ('SchemaGen', 'SchemaGen'), ('ExampleValidator', 'Validator'),
           ('Transform', 'Transform'), ('SequenceBatcher', 'Batcher'))


def pre_trainer_seconds(components: Dict[str, float]) -> float:
  """The sum over every component that runs before the trainer."""
  return round(sum(v for k, v in components.items()
                   if k != TRAINER and k not in POST_TRAINER), 2)


def size_rows(entry: dict) -> List[List[str]]:
  """Table rows of one size: the code measured, then the baseline."""
  out = []
  for name in ('current', 'baseline'):
    r = entry.get(name)
    if r is None:
      continue
    c = r['components']
    pre, trainer = pre_trainer_seconds(c), r['trainer_seconds']
    seqs = sum(v['num_sequences'] for v in (r.get('batcher') or {}).values())
    out.append([
        f'{entry["input"]["rows"]:,}', f'{seqs:,}',
        'this change' if name == 'current' else 'before (baseline)'] + [
            _s(c.get(k)) for k, _ in COLUMNS] + [
                f'**{pre:.1f}**', f'**{trainer:.1f}**',
                f'{pre / trainer:.2f}x' if trainer else 'n/a',
                _s(c.get('StatefulEvaluator')), _s(r['pipeline_seconds']),
                _s(r['input_check_seconds']),
                harness.verdict(bool(trainer) and pre < trainer)])
  return out


def report(all_results: List[dict], profile: Optional[dict],
           not_run: List[str]) -> str:
  """The BENCHMARKS.md section from the results of one or more runs (and a
  profile digest)."""
  lines = ['## 7. Pipeline overhead: the stages before the trainer', '']
  for results in all_results:
    run = results.get('run')
    code = results['code']
    rows = ', '.join(f'{e["input"]["rows"]:,}' for e in results['sizes'])
    lines.append(f'* Command: `{results["command"]}` ({rows} rows)')
    if run:
      lines.append(
          f'  * Date: {run["date"]}; run took {run["seconds"]:.0f} s; load '
          f'average (1/5/15 min) before: {run["load_before"]}; after: '
          f'{run["load_after"]}')
    else:  # The .partial file of a run stopped after these sizes.
      lines.append('  * Stopped after the sizes listed (results from its '
                   '`.partial` file): date and load not recorded')
    lines.append(f'  * Code: commit {code["commit"][:10]}' + recorded.changes(
        code, ', with uncommitted changes to '))
    base = results.get('baseline_code')
    if base:
      lines.append(f'  * Baseline ("before"): `{base["root"]}`, commit '
                   f'{base["commit"][:10]}'
                   + (f' with {", ".join(base["uncommitted"])} as before '
                      'this change' if base['uncommitted'] else ''))
  run = next((r['run'] for r in all_results if r.get('run')),
             {'machine': harness.machine(), 'versions': harness.versions()})
  lines += [
      f'* Machine: {run["machine"]}; **shared**: other people\'s jobs ran '
      'on the same 2 cores during the runs, so every figure includes their '
      'load',
      f'* Versions: {run["versions"]}']
  sizes = [e for r in all_results for e in r['sizes']]
  lines += [
      '',
      '`pipeline.local_runner --data-root <data> --output-dir <out> '
      f'--no-cache` on `data/generate.py` CSV ({speed.NUM_SHARDS} files), a '
      'fresh process per run; seconds per component from ML Metadata; "before the '
      'trainer" sums every component before it; the input check is timed '
      'apart; "pipeline" is the whole run.', '']
  headers = (['rows', 'sequences', 'code'] + [h for _, h in COLUMNS] +
             ['before the trainer', 'StatefulTrainer',
              'before / trainer', 'StatefulEvaluator', 'pipeline',
              'input check', 'target'])
  rows = [row for entry in sizes for row in size_rows(entry)]
  for note in not_run:
    rows.append([note] + [''] * (len(headers) - 1))
  lines.append(harness.table(headers, rows, 'rrl' + 'r' * 13 + 'l'))
  lines.append('')
  for entry in sizes:
    r, b = entry['current'], entry.get('baseline')
    pre = pre_trainer_seconds(r['components'])
    verdict = harness.verdict(pre < (r['trainer_seconds'] or 0))
    parts = ', '.join(f'{h} {r["components"].get(k, 0):.1f} s'
                      for k, h in COLUMNS if k != 'SchemaGen' and
                      k != 'ExampleValidator')
    line = (f'* {entry["input"]["rows"]:,} rows: before the trainer '
            f'{pre:.1f} s ({parts}) against the '
            f'trainer\'s {r["trainer_seconds"]:.1f} s: {verdict}')
    if b:
      line += (f'; before this change '
               f'{pre_trainer_seconds(b["components"]):.1f} s '
               f'(ExampleGen {b["components"].get("CsvExampleGen", 0):.1f} '
               f'-> {r["components"].get("CsvExampleGen", 0):.1f} s, '
               f'Transform {b["components"].get("Transform", 0):.1f} -> '
               f'{r["components"].get("Transform", 0):.1f} s)')
    lines.append(line + '.')
  if profile:
    lines += ['', profile_section(profile)]
  return '\n'.join(lines)


def profile_section(profile: dict) -> str:
  """Where each component's time goes, from a ``--profile`` digest."""
  lines = [f'Where the time goes: every executor under cProfile (`'
           f'{profile["command"]}`, commit {profile["code"]["commit"][:10]}'
           '; cProfile slows Python-heavy code, so read the shares, not the '
           'seconds):', '']
  for rows, entry in sorted(profile['sizes'].items(), key=lambda kv:
                            int(kv[0])):
    comps = [c for c in ('CsvExampleGen', 'StatisticsGen', 'Transform',
                         'SequenceBatcher') if c in entry['profiles']]
    headers = [f'{int(rows):,} rows: seconds in'] + comps
    table_rows = [['the component (ML Metadata, profiled run)'] + [
        f'{entry["components_profiled"].get(c, 0):.1f}' for c in comps]]
    for label, _, _ in PROFILE_PARTS:
      table_rows.append([label] + [
          f'{entry["profiles"][c]["parts"].get(label, 0):.1f}'
          for c in comps])
    lines.append(harness.table(headers, table_rows))
    lines.append('')
  return '\n'.join(lines)


def profile_sizes(args, sizes: List[int]) -> int:
  """``--profile``: every executor under cProfile at each size; the parts'
  seconds saved for the section's profile table."""
  digest = {'command': harness.command_line(),
            'code': harness.code_state(harness.ROOT), 'sizes': {}}
  for rows in sizes:
    data = ensure_csv(rows)
    prof_dir = os.path.join(args.profile, str(rows))
    log(f'profiling the pipeline on {data} into {prof_dir}')
    r = run_pipeline(data, os.path.join(OUT_DIR, f'profile-{rows}'),
                     profile_dir=prof_dir)
    digest['sizes'][str(rows)] = {
        'input': harness.csv_size(data), 'components_profiled': r[
            'components'], 'profiles': {
                name[:-5]: profile_digest(os.path.join(prof_dir, name))
                for name in sorted(os.listdir(prof_dir))
                if name.endswith('.prof')}}
  recorded.save(args.results or PROFILE, digest, log)
  return 0


def main(argv=None) -> int:
  p = harness.parser(__doc__.split('\n')[0])
  p.add_argument('--rows', default=None, help='comma-separated row counts '
                 '(default: 100k,1M,10M; quick: 20k)')
  p.add_argument('--profile', default=None, metavar='DIR',
                 help='profile every executor (cProfile) into DIR; no table')
  p.add_argument('--baseline', default=None, metavar='DIR',
                 help='also run each size with the code checked out in DIR')
  p.add_argument('--from-results', default=None, metavar='JSON', nargs='+',
                 help='write the section from earlier runs\' results')
  p.add_argument('--results', default=None, help='the JSON results file '
                 '(default: benchmarks/results/pipeline_overhead.json)')
  args = p.parse_args(argv)
  if args.rows:
    sizes = [int(float(s)) for s in args.rows.split(',')]
  else:
    sizes = [20_000] if args.quick else [100_000, 1_000_000, 10_000_000]
  if args.profile:
    return profile_sizes(args, sizes)
  not_run = [f'{r:,}: not run (see below)' for r in (10_000_000,)
             if r not in sizes and not args.quick]
  profile = harness.read_json(PROFILE) if os.path.exists(PROFILE) else None
  if args.from_results:
    loaded = [harness.read_json(name) for name in args.from_results]
    harness.write_section(harness.output_path(args), SECTION,
                          report(loaded, profile, not_run))
    return 0
  path = recorded.results_path(args, SECTION)
  run = harness.Run()
  results = {'command': harness.command_line(), 'sizes': [],
             'code': harness.code_state(harness.ROOT)}
  if args.baseline:
    results['baseline_code'] = harness.code_state(args.baseline)
  for rows in sizes:
    data = ensure_csv(rows)
    entry = {'requested_rows': rows, 'input': harness.csv_size(data),
             'data': data}
    for name, root in (('current', harness.ROOT), ('baseline', args.baseline)):
      if root is None:
        continue
      log(f'{name}: the pipeline on {data} ({entry["input"]["rows"]:,} '
          'rows)')
      r = run_pipeline(data, os.path.join(OUT_DIR, f'{name}-{rows}'),
                       code_root=os.path.abspath(root))
      entry[name] = r
      log(f'{name}: pre-trainer {r["pre_trainer_seconds"]:.1f} s, trainer '
          f'{r["trainer_seconds"]:.1f} s, pipeline {r["pipeline_seconds"]:.1f}'
          f' s')
    results['sizes'].append(entry)
    # What is measured so far survives an interrupted run.
    recorded.save(path + '.partial', results)
  run.finish()
  results['run'] = run.record()
  recorded.save(path, results, log)
  harness.write_section(harness.output_path(args), SECTION,
                        report([results], profile, not_run))
  return 0


if __name__ == '__main__':
  sys.exit(main())
