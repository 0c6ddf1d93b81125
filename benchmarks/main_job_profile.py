"""12. The main job's profile: seconds per component and trainer phase.

``make run``'s main job in fresh processes (with ``--baseline-tree DIR``,
alternating with that checkout's): wall time, ``summary.json``'s component
seconds and ``history.json``'s trainer phases (BENCHMARKS.md section 12).

  PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 python -m benchmarks.main_job_profile \\
      [--baseline-tree /tmp/old] [--pairs 2] [--quick]
"""

from __future__ import annotations

import glob
import os
import shutil
import statistics
import sys
from typing import Dict, List, Optional, Sequence

from benchmarks import harness
from benchmarks.harness import recorded
from benchmarks.harness.recorded import cell as _s

SECTION = 'main_job_profile'
TITLE = "## 12. The main job's profile"
OUT_DIR = os.path.join(harness.QUICK_DIR, 'main-job-profile')
# The target: the main job at most this share of the baseline's
# wall time (issue 48, against commit 91548d4).
TARGET_RATIO = 0.4
# The trainer's phases (``progress.PHASES``; no TensorFlow imported here).
PHASES = ('setup', 'adapt', 'training', 'validation', 'refit', 'export')
PHASE_NOTES = {
    'setup': 'open the batches, read the label statistics, fingerprint',
    'adapt': 'build the model, adapt it (two passes over the train split)',
    'training': 'the epochs of the carve run (its carve passes apart)',
    'validation': 'the passes over the validation carve',
    'refit': 'the refit (its model and epochs; its carve score apart)',
    'export': 'the serving SavedModel and stateful/',
}
# Components in pipeline order.
COMPONENTS = ('CsvExampleGen', 'ExampleSplitCheck', 'StatisticsGen',
              'SchemaGen', 'ExampleValidator', 'Transform', 'SequenceBatcher',
              'StatefulTrainer', 'latest_blessed_model_resolver',
              'StatefulEvaluator', 'Pusher')
log = harness.progress_log('main_job_profile')


def command(data_root: str, out: str) -> List[str]:
  """The main job's command line (``make run``'s, another output folder)."""
  return [sys.executable, '-m', 'pipeline.local_runner', '--data-root',
          data_root, '--output-dir', out]


def history_path(out: str) -> Optional[str]:
  """The trainer's ``history.json`` under a run's output folder."""
  found = sorted(glob.glob(os.path.join(
      out, 'pipeline_root', 'StatefulTrainer', 'model_run', '*',
      'history.json')))
  return found[-1] if found else None


def ordered(names: Sequence[str], order: Sequence[str]) -> List[str]:
  """``names`` in ``order`` first, the rest after in their own order."""
  return [n for n in order if n in names] + [n for n in names
                                             if n not in order]


def mean(values: Sequence[Optional[float]]) -> Optional[float]:
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None


def ratios(runs: Sequence[dict]) -> List[Optional[float]]:
  """current / baseline wall seconds of each pair (in run order)."""
  by_pair: Dict[int, Dict[str, float]] = {}
  for r in runs:
    by_pair.setdefault(r['pair'], {})[r['which']] = r['wall_seconds']
  return [p['current'] / p['baseline'] if p.get('baseline') and
          'current' in p else None for _, p in sorted(by_pair.items())]


def overall_ratio(runs: Sequence[dict]) -> Optional[float]:
  """Median current wall time over median baseline wall time."""
  cur = [r['wall_seconds'] for r in runs if r['which'] == 'current']
  base = [r['wall_seconds'] for r in runs if r['which'] == 'baseline']
  if not cur or not base:
    return None
  return statistics.median(cur) / statistics.median(base)


def wall_rows(runs: Sequence[dict]) -> List[List[str]]:
  """One row per pair: the baseline's and the current wall seconds."""
  rows = []
  for i, ratio in enumerate(ratios(runs)):
    pair = {r['which']: r for r in runs if r['pair'] == i}
    rows.append([str(i + 1), _s(pair.get('baseline', {}).get('wall_seconds')),
                 _s(pair.get('current', {}).get('wall_seconds')),
                 '-' if ratio is None else f'{ratio:.2f}x'])
  return rows


def component_rows(runs: Sequence[dict]) -> List[List[str]]:
  """Seconds per component: each run's, and the means' ratio."""
  names = ordered(sorted({n for r in runs for n in r['components']}),
                  COMPONENTS)
  rows = []
  for name in names + ['pipeline (LocalDagRunner.run)', 'process wall']:
    if name == 'process wall':
      values = [r['wall_seconds'] for r in runs]
    elif name.startswith('pipeline'):
      values = [r.get('pipeline_seconds') for r in runs]
    else:
      values = [r['components'].get(name) for r in runs]
    base = mean([v for v, r in zip(values, runs) if r['which'] == 'baseline'])
    cur = mean([v for v, r in zip(values, runs) if r['which'] == 'current'])
    ratio = (f'{cur / base:.2f}x' if base and cur is not None else '-')
    rows.append([name] + [_s(v) for v in values] +
                ([ratio] if any(r['which'] == 'baseline' for r in runs)
                 else []))
  return rows


def phase_rows(runs: Sequence[dict]) -> List[List[str]]:
  """Seconds per trainer phase of each run that recorded them."""
  with_phases = [r for r in runs if r.get('phases')]
  names = ordered(sorted({n for r in with_phases for n in r['phases']}),
                  PHASES + ('total',))
  return [['trainer run (total)' if name == 'total' else name] +
          [_s(r['phases'].get(name)) for r in with_phases] +
          [PHASE_NOTES.get(name, '')] for name in names]


def run_label(r: dict) -> str:
  return f'{r["which"]} {r["pair"] + 1}'


def run_main_job(code_root: str, out: str) -> dict:
  """One fresh-process run of the main job from ``code_root``."""
  shutil.rmtree(out, ignore_errors=True)
  env = harness.child_env()
  env['PYTHONPATH'] = code_root  # The code under test only.
  res = harness.run_child(command('data/sample', out), cwd=code_root, env=env)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'stderr.log'), 'w') as f:
    f.write(res.stderr)
  if res.returncode != 0:
    raise RuntimeError(f'the main job from {code_root} failed (exit code '
                       f'{res.returncode}); log: {out}/stderr.log')
  summary = harness.read_json(os.path.join(out, 'summary.json'))
  path = history_path(out)
  return {'wall_seconds': round(res.seconds, 2),
          'pipeline_seconds': summary.get('wall_seconds'),
          'components': harness.component_seconds(summary),
          'phases': harness.read_json(path).get('phases') if path else None,
          'peak_rss_bytes': res.peak.tree,
          'blessed': summary.get('blessed'), 'eval': summary.get('eval')}


def measure(which: str, i: int, root: str) -> dict:
  """One run, with the checkout's state before it (and whether it moved)."""
  state = harness.code_state(root)
  r = run_main_job(root, os.path.join(OUT_DIR, f'{which}-{i}'))
  r['code'] = state
  if harness.code_state(root) != state:
    r['code_changed'] = True
    log(f'the checkout {root} changed during the run')
  log(f'{which} run {i + 1}: {r["wall_seconds"]:.1f} s (trainer '
      f'{r["components"].get("StatefulTrainer", 0):.1f} s; phases '
      f'{r["phases"]})')
  return r


def report(results: dict) -> str:
  runs = results['runs']
  base = results.get('baseline_code')
  lines = [TITLE, ''] + recorded.header(
      results, 'a shared machine: every figure includes whatever else ran '
      '(the load average below says how much)',
      code_root=True) + [
          '',
          'The main job, `python -m pipeline.local_runner --data-root '
          'data/sample --output-dir <fresh folder>` (exactly `make run`), '
          'each run a fresh process. "process wall" is what a user waits for '
          '(imports, the input check and the pipeline); "pipeline" is '
          '`LocalDagRunner.run`; per component, ML Metadata\'s seconds as '
          '`summary.json` gives them; the trainer\'s phases from its '
          '`history.json` (`phases`, wall seconds).'
          + (' Baseline and current runs alternate (baseline first in each '
             'pair).' if base else ''), '']
  if base:
    lines += ['Wall time of each pair:', '',
              harness.table(['pair', 'baseline s', 'current s',
                             'current / baseline'], wall_rows(runs)), '']
  headers = (['seconds'] + [run_label(r) for r in runs] +
             (['current / baseline (means)'] if base else []))
  lines += ['Seconds per component:', '',
            harness.table(headers, component_rows(runs)), '']
  rows = phase_rows(runs)
  if rows:
    with_phases = [r for r in runs if r.get('phases')]
    lines += ['The StatefulTrainer\'s phases (runs that record them):', '',
              harness.table(['phase'] + [run_label(r) for r in with_phases] +
                            ['what'], rows,
                            'l' + 'r' * len(with_phases) + 'l'), '']
  ratio = overall_ratio(runs)
  if ratio is not None:
    lines.append(
        f'* Current / baseline, median wall time: **{ratio:.2f}x** '
        f'(per pair: {", ".join(f"{x:.2f}x" for x in ratios(runs) if x)}); '
        f'the issue\'s target, at most {TARGET_RATIO}x: '
        f'{harness.verdict(ratio <= TARGET_RATIO)}.')
  changed = [run_label(r) for r in runs if r.get('code_changed')]
  if changed:
    lines.append(f'* The checkout changed during {", ".join(changed)}: '
                 'those runs measured code in flux.')
  lines += [f'* {note}' for note in results.get('notes', [])]
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = harness.parser(__doc__.split('\n')[0])
  recorded.add_options(p, 'also run the main job from this checkout, '
                       'interleaved (e.g. a git worktree of 91548d4)')
  p.add_argument('--results', default=None, help='the JSON results (default:'
                 ' benchmarks/results/main_job_profile.json; quick: /tmp)')
  p.add_argument('--from-results', default=None, metavar='JSON',
                 help='write the section from an earlier run\'s results')
  args = p.parse_args(argv)
  if args.from_results:
    results = harness.read_json(args.from_results)
    if args.note:  # Kept with the results: the section is theirs.
      results['notes'] = args.note
      recorded.save(args.from_results, results)
    harness.write_section(harness.output_path(args), SECTION, report(results))
    return 0
  run = harness.Run()
  results, baseline = recorded.start(args)
  recorded.run_in_turn(results, args.pairs or (1 if args.quick else 2),
                       {'baseline': baseline, 'current': harness.ROOT},
                       measure, log)
  return recorded.finish(args, run, results, SECTION, report, log)


if __name__ == '__main__':
  sys.exit(main())
