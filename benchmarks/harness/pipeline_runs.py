"""Pipeline runs: ``pipeline.local_runner`` in a fresh process, its log kept,
and what its ``summary.json`` and the trainer's ``history.json`` say."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

from benchmarks.harness import child

def run_local_runner(flags: Sequence[str], out: str, logfile: str,
                     more: Sequence[str] = (), **run_kwargs):
  """``local_runner`` with ``flags``, ``--output-dir out`` and ``more`` in a
  fresh process, its output written to ``logfile``; the ``ChildResult``
  and the run's ``summary.json`` (None when the run failed)."""
  cmd = [sys.executable, '-m', 'pipeline.local_runner', *flags,
         '--output-dir', out, *more]
  res = child.run_child(cmd, **run_kwargs)
  os.makedirs(os.path.dirname(logfile), exist_ok=True)
  with open(logfile, 'w') as f:
    f.write('$ ' + ' '.join(cmd) + '\n' + res.stdout + '\n' + res.stderr)
  path = os.path.join(out, 'summary.json')
  if res.returncode != 0 or not os.path.exists(path):
    return res, None
  with open(path) as f:
    return res, json.load(f)


def component_seconds(summary: Dict) -> Dict[str, float]:
  """Seconds per component of a local runner's ``summary.json``."""
  return {n: c['seconds'] for n, c in (summary.get('components') or
                                       {}).items()}


def run_result(res, summary: Optional[Dict], metrics: List[str],
               logfile: str) -> Dict:
  """The eval ``metrics``, wall, trainer and evaluator seconds, cache, batch
  count and efficiency, training rate and chosen settings of one run."""
  result = {'seconds': res.seconds, 'peak_rss': res.peak.tree}
  if summary is None:
    result['error'] = (res.killed or first_error(res.stderr) or
                       f'exit status {res.returncode}')[:300]
    result['log'] = logfile
    return result
  result['summary_seconds'] = summary.get('wall_seconds')
  ev = summary.get('eval') or {}
  missing = [m for m in metrics if m not in ev]
  if missing:
    result['error'] = f'summary.json eval has no {missing} (has {sorted(ev)})'
  result.update({m: float(ev[m]) for m in metrics if m in ev})
  batcher = (summary.get('batcher') or {}).get('train') or {}
  seconds = component_seconds(summary)
  result.update(trainer_seconds=seconds.get('StatefulTrainer'),
                evaluator_seconds=seconds.get('StatefulEvaluator'),
                cached=sorted(summary.get('cached') or []),
                train_batches=batcher.get('num_batches'),
                efficiency=batcher.get('efficiency'))
  rate = training_rate(summary.get('model_uri'))
  if rate is not None:
    result['real_steps_per_sec'] = rate
  logged = logged_settings(res.stderr)
  for key in ('batch_size', 'num_unroll', 'epochs', 'epochs_run'):
    value = find_setting(summary, key)
    value = logged.get(key) if value is None else value
    if value is not None:
      result[key] = value
  return result


def training_rate(model_uri: Optional[str]) -> Optional[float]:
  """Real (unpadded) time steps per second of the run that made the
  exported model, over its epochs after the first (which traces), from the
  ``history.json`` of its ``model_run`` beside ``model_uri``; None without
  one or a second epoch."""
  if not model_uri:
    return None
  head, run_id = os.path.split(os.path.normpath(model_uri))
  path = os.path.join(os.path.dirname(head), 'model_run', run_id,
                      'history.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    epochs = json.load(f).get('epochs') or []
  steps = sum(e.get('real_timesteps') or 0 for e in epochs[1:])
  seconds = sum(e.get('seconds') or 0 for e in epochs[1:])
  return steps / seconds if steps and seconds else None


def first_error(stderr: str) -> Optional[str]:
  """The runner's one-line ``error:``, else the last exception line of a
  traceback, else the last line."""
  lines = [l.strip() for l in stderr.splitlines() if l.strip()]
  for pattern in (r'^error:', r'^[\w.]*(Error|Exception)\b'):
    hits = [l for l in lines if re.match(pattern, l)]
    if hits:
      return hits[-1]
  return lines[-1] if lines else None


def logged_settings(stderr: str) -> Dict[str, int]:
  """B, T and epochs from the trainer's log lines (``ModelSpec(batch_size=
  32, num_unroll=32, ...`` and ``epoch 1/10 done``), when it logs them."""
  out = {}
  m = re.search(r'ModelSpec\(batch_size=(\d+), num_unroll=(\d+)', stderr)
  if m:
    out['batch_size'], out['num_unroll'] = int(m.group(1)), int(m.group(2))
  epochs = re.findall(r'\bepoch (\d+)/(\d+) done', stderr)
  if epochs:
    out['epochs_run'], out['epochs'] = (int(v) for v in epochs[-1])
  return out


def find_setting(summary: Dict, key: str):
  """A chosen setting, if summary.json reports it (top level or one dict
  down, e.g. a ``config`` block)."""
  for d in [summary] + [v for v in summary.values() if isinstance(v, dict)]:
    if isinstance(d.get(key), (int, float)):
      return d[key]
  return None
