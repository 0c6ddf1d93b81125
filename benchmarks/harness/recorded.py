"""Runs kept in a results JSON (``feature_pass``, ``main_job_profile``,
``pipeline_overhead``): the checkouts measured (this one and a baseline
tree, in turn), the file, and the section's header read back from it."""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Tuple

from benchmarks.harness import report

RESULTS_DIR = os.path.join(report.ROOT, 'benchmarks', 'results')


def tree_state(root: str) -> Dict[str, object]:
  """``code_state`` of a baseline checkout; an archive's commit from the
  ``COMMIT`` file written beside ``git archive``'s output, else 'unknown'."""
  state = report.code_state(root)
  marker = os.path.join(root, 'COMMIT')
  if os.path.exists(marker):
    with open(marker) as f:
      state['commit'] = f.read().strip()
  state['commit'] = state['commit'] or 'unknown'
  return state


def add_options(p, baseline_help: str) -> None:
  """``--baseline-tree``, ``--pairs`` and ``--note``."""
  p.add_argument('--baseline-tree', default=None, metavar='DIR',
                 help=baseline_help)
  p.add_argument('--pairs', type=int, default=None,
                 help='runs of each checkout (default 2; quick: 1)')
  p.add_argument('--note', action='append', default=[],
                 help='a reading bullet to add to the section (repeatable)')


def start(args, code_root: str = report.ROOT) -> Tuple[dict, Optional[str]]:
  """The results' head (command, code, notes) and the baseline tree."""
  baseline = (os.path.abspath(args.baseline_tree) if args.baseline_tree
              else None)
  results = {'command': report.command_line(),
             'code': report.code_state(code_root), 'runs': [],
             'notes': args.note}
  if baseline:
    results['baseline_code'] = tree_state(baseline)
  return results, baseline


def interleaved(pairs: int, baseline: bool) -> List[Tuple[str, int]]:
  """The runs' order: ``(which, index)``; with a baseline, baseline and
  current alternate (baseline first in each pair)."""
  if pairs < 1:
    raise ValueError('--pairs must be at least 1')
  order = []
  for i in range(pairs):
    if baseline:
      order.append(('baseline', i))
    order.append(('current', i))
  return order


def run_in_turn(results: dict, pairs: int, roots: Dict[str, Optional[str]],
                measure: Callable[[str, int, str], dict], log) -> None:
  """``measure(which, index, root)`` of each run in ``interleaved`` order,
  appended to ``results['runs']`` with its ``which`` and ``pair``."""
  for which, i in interleaved(pairs, bool(roots.get('baseline'))):
    log(f'{which} {i + 1}/{pairs}: {roots[which]}')
    r = measure(which, i, roots[which])
    r.update(which=which, pair=i)
    results['runs'].append(r)


def results_path(args, name: str) -> str:
  """``--results``, else ``benchmarks/results/<name>.json`` (quick: under
  the scratch folder)."""
  return getattr(args, 'results', None) or os.path.join(
      report.QUICK_DIR if args.quick else RESULTS_DIR, f'{name}.json')


def save(path: str, results: dict, log=None) -> None:
  report.write_json(path, results, indent=1, sort_keys=True)
  if log:
    log(f'wrote {path}')


def finish(args, run, results: dict, name: str, render, log=None) -> int:
  """Records the run, saves the results and writes section ``name``."""
  run.finish()
  results['run'] = run.record()
  save(results_path(args, name), results, log)
  report.write_section(report.output_path(args), name, render(results))
  return 0


def changes(code: dict, lead: str) -> str:
  """``lead`` and the checkout's uncommitted files, if it has any."""
  return lead + ', '.join(code['uncommitted']) if code.get(
      'uncommitted') else ''


def header(results: dict, shared: str, code_root: bool = False) -> List[str]:
  """A section's bullets from the results: command, date, machine (with
  ``shared``), load, versions, code and baseline."""
  run, code = results['run'], results['code']
  lines = [f'* Command: `{results["command"]}`',
           f'* Date: {run["date"]}; run took {run["seconds"]:.0f} s',
           f'* Machine: {run["machine"]}; {shared}',
           f'* Load average (1/5/15 min) before: {run["load_before"]}; '
           f'after: {run["load_after"]}',
           f'* Versions: {run["versions"]}',
           '* Code: ' + (f'`{code["root"]}`, ' if code_root else '') +
           f'commit {code["commit"][:10]}' +
           changes(code, ', with uncommitted changes to ')]
  base = results.get('baseline_code')
  if base:
    lines.append(f'* Baseline: `{base["root"]}`, commit {base["commit"][:10]}'
                 + changes(base, ' with uncommitted changes to '))
  return lines


def cell(value: Optional[float]) -> str:
  """Seconds to one decimal; '-' for none."""
  return '-' if value is None else f'{value:.1f}'
