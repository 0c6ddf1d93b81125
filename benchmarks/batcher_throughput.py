"""2. SequenceBatcher throughput and scaling against a NumPy reference.

Generated CSV at about 1M and 10M time steps through the batcher's command
line on the DirectRunner and the DaskRunner against the NumPy reference,
each run a fresh process (BENCHMARKS.md section 2)."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import sys
import time
from typing import Dict, List

import numpy as np

from benchmarks import harness
from benchmarks.harness import speed

DATA_DIR = os.path.join(harness.QUICK_DIR, 'batcher-data')
B, T = 32, 32
ROUNDS_SMALL = 2  # Interleaved rounds at the smaller size; fastest counts.
METHODS = (
    ('reference', 'NumPy reference (1 process)', None),
    ('in_memory', 'Beam DirectRunner in_memory',
     ['--direct_running_mode=in_memory']),
    ('multi_processing', 'Beam DirectRunner multi_processing, 2 workers',
     ['--direct_running_mode=multi_processing', '--direct_num_workers=2']),
    ('dask', 'Beam DaskRunner, 2 workers', ['--runner=DaskRunner']),
)
DASK_WORKERS = 2


def _warm_worker():
  """Run on each Dask worker before the timed part: the transform's imports
  and its log lines (INFO, the launcher's format) on the worker's stderr."""
  import logging  # pylint: disable=g-import-not-at-top
  import apache_beam  # pylint: disable=g-import-not-at-top,unused-import
  import pandas  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  from components.sequence_batcher import batch_format  # pylint: disable=g-import-not-at-top,unused-import
  from components.sequence_batcher import decode  # pylint: disable=g-import-not-at-top,unused-import
  logging.basicConfig(level=logging.INFO,
                      format='%(asctime)s %(levelname)s %(message)s')
  return os.getpid()


def child_beam(input_glob: str, output: str, beam_args: List[str]) -> dict:
  t0 = time.perf_counter()
  # Everything the pipeline imports, so that the timed part is the work.
  import apache_beam  # pylint: disable=g-import-not-at-top,unused-import
  import pandas  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  from components.sequence_batcher import __main__ as cli  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import decode  # pylint: disable=g-import-not-at-top,unused-import
  cluster = None
  if '--runner=DaskRunner' in beam_args:
    import distributed  # pylint: disable=g-import-not-at-top
    cluster = distributed.LocalCluster(
        n_workers=DASK_WORKERS, threads_per_worker=1, processes=True,
        host='127.0.0.1', scheduler_port=0, dashboard_address=None)
    with distributed.Client(cluster) as client:
      client.run(_warm_worker)
    beam_args = beam_args + [
        f'--dask_client_address={cluster.scheduler_address}']
  t1 = time.perf_counter()
  start = time.time()
  code = cli.main(['--input', input_glob, '--output', output,
                   '--batch-size', str(B), '--num-unroll', str(T)] + beam_args)
  if code != 0:
    raise RuntimeError(f'the batcher failed with code {code}')
  t2 = time.perf_counter()
  if cluster is not None:
    cluster.close()
  return {'import_seconds': t1 - t0, 'seconds': t2 - t1, 'start': start}


def read_sequences(input_glob: str):
  """The reference's reading: pandas reads every file, one lexsort groups
  the rows by key and orders them by ``t``; whole sequences as
  ``SequenceArrays``, and the feature names."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import layout  # pylint: disable=g-import-not-at-top
  frames = [pd.read_csv(p, dtype={'seq_id': str}, keep_default_na=False,
                        na_values=[''])
            for p in sorted(glob.glob(input_glob))]
  df = pd.concat(frames, ignore_index=True)
  del frames
  names = sorted(c for c in df.columns if c not in ('seq_id', 't', 'label'))
  codes, uniques = pd.factorize(df['seq_id'], sort=True)
  order = np.lexsort((df['t'].to_numpy(), codes))
  codes = codes[order]
  feats = df[names].to_numpy(np.float32)[order]
  labels = df['label'].to_numpy()[order]
  labels = labels.astype(np.int64 if labels.dtype.kind in 'iu' else
                         np.float32)
  del df
  bounds = np.flatnonzero(codes[1:] != codes[:-1]) + 1
  starts = np.concatenate([[0], bounds])
  ends = np.concatenate([bounds, [codes.size]])
  seqs = [layout.SequenceArrays(key=str(uniques[codes[s]]),
                                features=feats[s:e], labels=labels[s:e])
          for s, e in zip(starts, ends)]
  return seqs, names


def child_reference(input_glob: str, output: str) -> dict:
  t0 = time.perf_counter()
  import pandas  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  from components.sequence_batcher import in_memory  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import layout  # pylint: disable=g-import-not-at-top
  t1 = time.perf_counter()
  start = time.time()
  seqs, names = read_sequences(input_glob)
  t2 = time.perf_counter()
  grouped = time.time()
  meta = in_memory.write_split(
      seqs, output, split='train',
      config=layout.LayoutConfig(batch_size=B, num_unroll=T),
      feature_names=names)
  t3 = time.perf_counter()
  return {'import_seconds': t1 - t0, 'seconds': t3 - t1,
          'start': start, 'grouped': grouped,
          'real_timesteps': meta['real_timesteps']}


def child(kind: str, input_glob: str, output: str, beam_args: List[str]
          ) -> dict:
  """One run in a fresh process (``harness.call``)."""
  if kind == 'reference':
    result = child_reference(input_glob, output)
  else:
    result = child_beam(input_glob, output, beam_args)
  import resource  # pylint: disable=g-import-not-at-top
  result['ru_maxrss_self'] = speed.maxrss()
  result['ru_maxrss_children'] = resource.getrusage(
      resource.RUSAGE_CHILDREN).ru_maxrss * 1024
  return result


def shard_digests(output: str) -> Dict[str, str]:
  out = {}
  for path in sorted(glob.glob(os.path.join(output, 'Split-train',
                                            '*.tfrecord'))):
    with open(path, 'rb') as f:
      out[os.path.basename(path)] = hashlib.sha256(f.read()).hexdigest()
  return out


_LOG_TIME = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ')
_WORKER_TIME = re.compile(r'timestamp \{\s*seconds: (\d+)\s+nanos: (\d+)')
_DURATION = re.compile(r' in ([\d.]+) s')


def log_events(stderr: str):
  """``(time of planning, [(start, end) of every chunk write])`` in epoch
  seconds, from the transform's log lines (forwarded worker logs carry the
  worker's own timestamp)."""
  planned, writes, plan_seconds = None, [], []
  # Assembling starts with the first chunk written (WriteChunkFn); older
  # versions of the transform logged only shards.
  marker = 'wrote chunk' if 'wrote chunk' in stderr else 'wrote shard'
  for line in stderr.splitlines():
    is_plan = 'planned' in line and 'sequences into' in line
    is_write = marker in line
    if not (is_plan or is_write):
      continue
    m = _WORKER_TIME.search(line)
    if m:
      t = int(m.group(1)) + int(m.group(2)) / 1e9
    else:
      m = _LOG_TIME.match(line)
      if not m:
        continue
      t = time.mktime(time.strptime(m.group(1), '%Y-%m-%d %H:%M:%S')) + int(
          m.group(2)) / 1e3
    if is_plan:
      planned = t
      d = _DURATION.search(line)
      plan_seconds.append(float(d.group(1)) if d else 0.0)
    else:
      d = _DURATION.search(line)
      writes.append((t - float(d.group(1)) if d else t, t))
  return planned, writes, plan_seconds


def measure(method: str, extra, data_dir: str, out_root: str) -> dict:
  output = os.path.join(out_root, method)
  shutil.rmtree(output, ignore_errors=True)
  info, res = harness.call(
      'batcher_throughput.child', 'reference' if method == 'reference' else
      'beam', os.path.join(data_dir, '*.csv'), output, list(extra or []),
      timeout=1800)
  if info is None:
    raise RuntimeError(f'{method} failed ({res.killed}): '
                       f'{res.stderr[-3000:]}')
  end = res.peak.series[-1][0] if res.peak.series else time.time()
  if method == 'reference':
    bounds = [info['start'], info['grouped'], info['grouped'], end]
  else:
    planned, writes, plan_seconds = log_events(res.stderr)
    if planned is None or not writes:
      raise RuntimeError(f'{method}: no planning/shard log lines found')
    info['plan_seconds'] = plan_seconds[-1]
    bounds = [info['start'], planned, min(w for w, _ in writes), end]
  info['phases'] = [
      (b - a,) + res.peak.peak_between(a, b) for a, b in zip(bounds[:-1],
                                                             bounds[1:])]
  info['runner'] = (
      f'DaskRunner (LocalCluster, {DASK_WORKERS} worker processes)'
      if method == 'dask' else 'PrismRunner' if 'Running pipeline with PrismRunner' in
                    res.stderr and 'Falling back' not in res.stderr else
                    'FnApiRunner (DirectRunner fell back from Prism)' if
                    'Falling back to DirectRunner' in res.stderr else
                    'FnApiRunner')
  meta = harness.read_json(
      os.path.join(output, 'Split-train', 'metadata.json'))
  info.update(
      wall=res.seconds, peak_tree=res.peak.tree, peak_root=res.peak.root,
      peak_worker=res.peak.child_max,
      workers=method in ('multi_processing', 'dask'),
      cpu_root=res.peak.cpu_root,
      cpu_children=res.peak.cpu_children,
      real_timesteps=meta['real_timesteps'], num_batches=meta['num_batches'],
      num_shards=meta['num_shards'], num_sequences=meta['num_sequences'],
      max_length=meta['max_length'], digests=shard_digests(output))
  shutil.rmtree(output, ignore_errors=True)
  print(f'{method}: {info["seconds"]:.1f} s work, {res.seconds:.1f} s wall, '
        f'peak tree {harness.mib(res.peak.tree)}', file=sys.stderr)
  return info


def main(argv=None) -> int:
  p = harness.parser(__doc__.split('\n')[0])
  p.add_argument('--sizes', default=None, help='comma-separated time-step '
                 'counts (default: 1M,10M; quick: 50k,500k)')
  p.add_argument('--save', default=None,
                 help='also write the raw measurements to this JSON file')
  p.add_argument('--render', default=None,
                 help='write the section from measurements saved with --save')
  args = p.parse_args(argv)
  if args.render:
    saved = harness.read_json(args.render)
    return _write_report(args, saved)
  methods = [m for m, _, _ in METHODS]
  if args.sizes:
    sizes = [int(float(s)) for s in args.sizes.split(',')]
  else:
    sizes = [50_000, 500_000] if args.quick else [1_000_000, 10_000_000]
  data = {steps: speed.csv_of(DATA_DIR, steps) for steps in sizes}
  run = harness.Run()
  out_root = os.path.join(harness.QUICK_DIR, 'batcher-out')
  results: Dict[int, Dict[str, dict]] = {}
  for steps in sizes:
    results[steps] = {}
    # Small inputs are timed in interleaved rounds and the fastest counts
    # (other load on the machine only adds time); the largest once.
    rounds = ROUNDS_SMALL if steps < max(sizes) else 1
    for _ in range(rounds):
      for method, _, extra in METHODS:
        r = measure(method, extra, data[steps], out_root)
        best = results[steps].get(method)
        if best is None or r['seconds'] < best['seconds']:
          results[steps][method] = r
  run.finish()
  saved = {
      'preamble': run.preamble(args.quick), 'sizes': sizes,
      'methods': methods,
      'csv_bytes': {str(s): harness.csv_size(data[s])['bytes'] for s in sizes},
      'results': {str(s): r for s, r in results.items()}}
  if args.save:
    harness.write_json(args.save, saved)
  return _write_report(args, saved)


def _write_report(args, saved) -> int:
  sizes = saved['sizes']
  results = {s: saved['results'][str(s)] for s in sizes}
  csv_mb = {s: saved['csv_bytes'][str(s)] for s in sizes}
  preamble = saved['preamble']
  if args.render:
    preamble += ('\n* Rendered from the measurements that run saved: '
                 f'`{harness.command_line()}`')
  harness.write_report(args, 'batcher_throughput', *report(
      preamble, sizes, csv_mb, results, saved['methods']))
  return 0


PHASES = {
    'reference': ('read CSV, group', '-', 'layout_in_memory, serialize, '
                  'write'),
    'beam': ('read CSV, group rows, build sequences, plan',
             'join plan, cut segments, group by chunk',
             'assemble, serialize, write chunks, concatenate shards'),
}


def report(preamble, sizes, csv_mb, results, methods) -> list:
  small, large = sizes[0], sizes[-1]
  label = {m: name for m, name, _ in METHODS}
  run_methods = [m for m in METHODS if m[0] in methods]
  rows, phase_rows = [], []
  identical = True
  for steps in sizes:
    ref = results[steps]['reference']
    for method, _, _ in run_methods:
      r = results[steps][method]
      same = r['digests'] == ref['digests']
      identical &= same
      rows.append([
          f'{r["real_timesteps"]:,}', f'{csv_mb[steps] / 1e6:,.0f}',
          label[method], f'{r["seconds"]:.1f}', f'{r["wall"]:.1f}',
          harness.si(r['real_timesteps'] / r['seconds']),
          harness.ratio(r['real_timesteps'] / r['seconds'],
                        ref['real_timesteps'] / ref['seconds']),
          f'{r["cpu_root"]:.0f} / ' + (f'{r["cpu_children"]:.0f}'
                                       if r['workers'] else '-'),
          harness.mib(r['peak_root']),
          harness.mib(r['peak_worker']) if r['workers'] else '-',
          harness.mib(r['peak_tree']), r['num_shards'],
          'yes' if same else 'NO'])
      names = PHASES['reference' if method == 'reference' else 'beam']
      phase_rows += [[f'{r["real_timesteps"]:,}', label[method], name,
                      f'{secs:.1f}', harness.mib(root),
                      harness.mib(worker) if r['workers'] else '-']
                     for name, (secs, root, worker) in zip(names, r['phases'])
                     if name != '-']
  scale_rows = []
  checks = {}
  step_ratio = (results[large]['reference']['real_timesteps'] /
                results[small]['reference']['real_timesteps'])

  def rate(steps, method):
    r = results[steps][method]
    return r['real_timesteps'] / r['seconds']

  for method, _, _ in run_methods:
    a, b = results[small][method], results[large][method]
    time_ratio = b['seconds'] / a['seconds']
    per10 = time_ratio / step_ratio * 10
    worker = (f'{b["peak_worker"] / a["peak_worker"]:.2f}x '
              f'(+{harness.mib(b["peak_worker"] - a["peak_worker"])})'
              if a['workers'] else '-')
    slope = ((b['seconds'] - a['seconds']) /
             (b['real_timesteps'] - a['real_timesteps']))
    fixed = a['seconds'] - slope * a['real_timesteps']
    ref_a, ref_b = results[small]['reference'], results[large]['reference']
    ref_slope = ((ref_b['seconds'] - ref_a['seconds']) /
                 (ref_b['real_timesteps'] - ref_a['real_timesteps']))
    scale_rows.append([
        label[method], f'{step_ratio:.2f}x', f'{time_ratio:.2f}x',
        f'{b["wall"] / a["wall"]:.2f}x', f'{per10:.1f}x', f'{fixed:.1f}',
        harness.si(1 / slope), f'{ref_slope / slope:.2f}x',
        f'{b["peak_root"] / a["peak_root"]:.2f}x '
        f'(+{harness.mib(b["peak_root"] - a["peak_root"])})', worker])
    if method != 'reference':
      ratios = {s: rate(s, method) / rate(s, 'reference') for s in sizes}
      checks[method] = {'scaling': per10 <= 12, 'per10': per10,
                        'rate': min(ratios.values()) >= 0.25,
                        'half': min(ratios.values()) >= 0.5,
                        'ratios': ratios,
                        'flat': (not a['workers'] or
                                 b['peak_worker'] <= 1.1 * a['peak_worker'])}
  runners = sorted({r['runner'] for s in sizes for m, r in
                    results[s].items() if m != 'reference'})
  bullets = []
  for method, c in checks.items():
    rates = ', '.join(f'{v:.2f} at {results[s]["reference"]["real_timesteps"]:,}'
                      for s, v in c['ratios'].items())
    bullets.append(
        f'* {label[method]}: 10x input in <= 12x time: '
        f'{harness.verdict(c["scaling"])} ({c["per10"]:.1f}x); >= 1/4 of the '
        f'reference rate: {harness.verdict(c["rate"])} ({rates})' +
        (f'; >= 0.5x of the reference (issue 11): '
         f'{harness.verdict(c["half"])}' if method == 'in_memory' else '') +
        (f'; peak worker RSS within 10% from {small:,} to {large:,} steps '
         f'(issue 11): {harness.verdict(c["flat"])}'
         if results[small][method]['workers'] else '') + '.')
  bullets.append(f'* Output byte-identical to the reference at every size: '
                 f'{harness.verdict(identical)}.')
  return [
      '## 2. SequenceBatcher throughput and scaling', preamble,
      f'Input: `data/generate.py` CSV (`cue`, {speed.NUM_FEATURES} features) '
      f'in {speed.NUM_SHARDS} files; output B={B}, T={T}, `packed`; the smaller size '
      f'the fastest of {ROUNDS_SMALL} interleaved rounds. Runners: '
      f'{", ".join(runners)}. "work" excludes start-up; rates are real steps '
      'per second of work; "same bytes": every shard equals the reference\'s.',
      harness.table(['time steps', 'CSV MB', 'method', 'work s', 'wall s',
                     'steps/s', 'rate vs reference', 'CPU s main / workers',
                     'peak RSS main', 'peak RSS per worker', 'peak RSS total',
                     'shards', 'same bytes'], rows, align='rrlrrrrrrrrrc'),
      f'Scaling from {results[small]["reference"]["real_timesteps"]:,} to '
      f'{results[large]["reference"]["real_timesteps"]:,} steps:',
      harness.table(['method', 'input', 'work time', 'wall time',
                     'work time per 10x input', 'fixed s', 'marginal steps/s',
                     'marginal vs reference', 'peak RSS main',
                     'peak RSS per worker'], scale_rows, align='lrrrrrrrrr'),
      '"fixed" and "marginal" fit work time = fixed + steps / marginal rate '
      'through the two sizes.',
      'Where the time and the memory go (phases cut at the transform\'s '
      'own log lines: "planned ..." and the start of the first "wrote chunk '
      '..."; on Dask the workers\' log lines):',
      harness.table(['time steps', 'method', 'phase', 'seconds',
                     'peak RSS main', 'peak RSS largest worker'], phase_rows,
                    align='rllrrr'),
      bullets]


if __name__ == '__main__':
  raise SystemExit(main())
