"""2. SequenceBatcher throughput and scaling against a NumPy reference.

The same CSV input (``data/generate.py``, ``cue`` target, 5 features,
lengths as in the sample) at about 1M and 10M time steps goes through

* the SequenceBatcher command line (``python -m components.sequence_batcher``,
  the ``BatchSequences`` transform with ``csv_files`` input) on the Beam
  DirectRunner, ``--direct_running_mode=in_memory``;
* the same with ``--direct_running_mode=multi_processing
  --direct_num_workers=2``;
* the same on Beam's DaskRunner (``--runner=DaskRunner``) against a
  ``dask.distributed`` LocalCluster of 2 worker processes (1 thread each,
  127.0.0.1) that the child process starts, and warms (each worker imports
  what the transform imports) before the timed part;
* the single-process NumPy reference: pandas reads every file, rows are
  grouped by key and ordered by ``t`` (one ``lexsort``), and
  ``in_memory.write_split`` builds the layout with ``layout_in_memory`` and
  serializes and writes the same TFRecord files (checked byte-identical to
  the Beam output) and metadata. It skips the per-sequence input checks the
  transform does (missing values, NaN, duplicates).

Each run is a fresh process. Its time is measured twice: the whole command
(wall, with Python/TensorFlow/Beam start-up) and the work alone (timed inside
the process after the imports). Peak resident memory is polled (psutil,
every 50 ms) over the process tree: the launching/runner process and, in
``multi_processing`` mode, each SDK worker process (on Dask: each Dask
worker process).

  PYTHONPATH=. python -m benchmarks.batcher_throughput [--quick]
      [--methods reference,in_memory,multi_processing,dask]
      [--save results.json] [--render results.json]
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import sys
import time
from typing import Dict, List

from benchmarks import harness

DATA_DIR = os.path.join(harness.QUICK_DIR, 'batcher-data')
# Sequences per time step: data/generate.py's defaults (median 200, 30%
# short) give a mean length of about 230, so 4,400 sequences ~ 1M steps.
SEQUENCES_PER_MILLION = 4400
NUM_SHARDS = 8
NUM_FEATURES = 5
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


# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------


def ensure_csv(steps: int) -> str:
  """CSV shards of about ``steps`` time steps (cached under /tmp)."""
  return harness.generated_csv(
      DATA_DIR, int(round(steps * SEQUENCES_PER_MILLION / 1e6)),
      num_shards=NUM_SHARDS, num_features=NUM_FEATURES)


# --------------------------------------------------------------------------
# Children (each in a fresh process)
# --------------------------------------------------------------------------


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
  import numpy as np  # pylint: disable=g-import-not-at-top
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


def element_costs(input_glob: str) -> dict:
  """What the transform's shuffle between ``CutSegments`` and
  ``WriteShards`` costs per element: Beam's default coder
  (``FastPrimitivesCoder``) encoding and decoding every ``(shard, Segment)``
  element, against one element per whole sequence."""
  from apache_beam import coders  # pylint: disable=g-import-not-at-top
  import psutil  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import layout  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import segments as segments_lib  # pylint: disable=g-import-not-at-top
  seqs, _ = read_sequences(input_glob)
  config = layout.LayoutConfig(batch_size=B, num_unroll=T)
  plan = layout.plan_lanes(((q.key, q.length) for q in seqs), config,
                           NUM_FEATURES)
  place = dict(plan.placements())
  segments = [seg for q in seqs
              for seg in segments_lib.cut_segments(q, *place[q.key], config)]
  coder = coders.FastPrimitivesCoder()
  out = {'sequences': len(seqs), 'segments': len(segments),
         'steps': plan.real_timesteps, 'batches': plan.num_batches,
         'batches_per_shard': plan.batches_per_shard}
  for name, items in (('segment', segments), ('sequence', seqs)):
    t0 = time.perf_counter()
    encoded = [coder.encode((0, item)) for item in items]
    rss = psutil.Process().memory_info().rss
    decoded = [coder.decode(e) for e in encoded]
    out[name + '_decoded_rss'] = (
        psutil.Process().memory_info().rss - rss)
    out[name + '_seconds'] = time.perf_counter() - t0
    out[name + '_bytes'] = sum(len(e) for e in encoded)
    del decoded, encoded
  return out


def child(kind: str, input_glob: str, output: str, beam_args: List[str]
          ) -> dict:
  """One run in a fresh process (``harness.call``)."""
  if kind == 'reference':
    result = child_reference(input_glob, output)
  else:
    result = child_beam(input_glob, output, beam_args)
  import resource  # pylint: disable=g-import-not-at-top
  result['ru_maxrss_self'] = resource.getrusage(
      resource.RUSAGE_SELF).ru_maxrss * 1024
  result['ru_maxrss_children'] = resource.getrusage(
      resource.RUSAGE_CHILDREN).ru_maxrss * 1024
  return result


# --------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------


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
  with open(os.path.join(output, 'Split-train', 'metadata.json')) as f:
    meta = json.load(f)
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
  p.add_argument('--sizes', default=None,
                 help='comma-separated time-step counts (default: 1M,10M; '
                 'quick: 50k,500k)')
  p.add_argument('--methods', default=','.join(m for m, _, _ in METHODS),
                 help='comma-separated methods to run (reference is always '
                 'run: the rates are relative to it)')
  p.add_argument('--save', default=None,
                 help='also write the raw measurements to this JSON file')
  p.add_argument('--render', default=None,
                 help='write the section from measurements saved with --save '
                 '(no new runs)')
  args = p.parse_args(argv)
  if args.render:
    with open(args.render) as f:
      saved = json.load(f)
    return _write_report(args, saved)
  methods = ['reference'] + [m for m in args.methods.split(',')
                             if m and m != 'reference']
  unknown = sorted(set(methods) - {m for m, _, _ in METHODS})
  if unknown:
    p.error(f'--methods: unknown {unknown}')
  if args.sizes:
    sizes = [int(float(s)) for s in args.sizes.split(',')]
  else:
    sizes = [50_000, 500_000] if args.quick else [1_000_000, 10_000_000]
  data = {}
  for steps in sizes:
    data[steps] = ensure_csv(steps)
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
        if method not in methods:
          continue
        r = measure(method, extra, data[steps], out_root)
        best = results[steps].get(method)
        if best is None or r['seconds'] < best['seconds']:
          results[steps][method] = r
  costs = element_costs(os.path.join(data[sizes[0]], '*.csv'))
  run.finish()
  saved = {
      'preamble': run.preamble(args.quick), 'sizes': sizes,
      'methods': methods,
      'csv_bytes': {str(s): harness.csv_size(data[s])['bytes'] for s in sizes},
      'results': {str(s): r for s, r in results.items()}, 'costs': costs}
  if args.save:
    with open(args.save, 'w') as f:
      json.dump(saved, f)
  return _write_report(args, saved)


def _write_report(args, saved) -> int:
  sizes = saved['sizes']
  results = {s: saved['results'][str(s)] for s in sizes}
  csv_mb = {s: saved['csv_bytes'][str(s)] for s in sizes}
  preamble = saved['preamble']
  if args.render:
    preamble += ('\n* Rendered from the measurements that run saved: '
                 f'`{harness.command_line()}`')
  body = report(preamble, sizes, csv_mb, results, saved['costs'],
                saved['methods'])
  harness.write_section(harness.output_path(args), 'batcher_throughput', body)
  return 0


PHASES = {
    'reference': ('read CSV, group', '-', 'layout_in_memory, serialize, '
                  'write'),
    'beam': ('read CSV, group rows, build sequences, plan',
             'join plan, cut segments, group by chunk',
             'assemble, serialize, write chunks, concatenate shards'),
}


def report(preamble, sizes, csv_mb, results, costs, methods) -> str:
  small, large = sizes[0], sizes[-1]
  label = {m: name for m, name, _ in METHODS}
  run_methods = [m for m in METHODS if m[0] in methods]
  rows = []
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
  phase_rows = []
  for steps in sizes:
    for method, _, _ in run_methods:
      r = results[steps][method]
      names = PHASES['reference' if method == 'reference' else 'beam']
      for k, (secs, root, worker) in enumerate(r['phases']):
        if names[k] == '-':
          continue
        phase_rows.append([f'{r["real_timesteps"]:,}', label[method],
                           names[k], f'{secs:.1f}', harness.mib(root),
                           harness.mib(worker) if r['workers'] else '-'])
  scale_rows = []
  checks = {}
  marginal = {}
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
    marginal[method] = (1 / slope, fixed, ref_slope / slope)
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
  big = results[large]['reference']
  feature_bytes = big['real_timesteps'] * NUM_FEATURES * 4
  layout_bytes = big['num_batches'] * B * T * (NUM_FEATURES * 4 + 8 + 4 + 4)
  longest_bytes = big['max_length'] * (NUM_FEATURES * 4 + 8)
  runners = sorted({r['runner'] for s in sizes for m, r in
                    results[s].items() if m != 'reference'})
  body = [
      '## 2. SequenceBatcher throughput and scaling',
      '',
      preamble,
      '',
      f'Input: `data/generate.py` CSV (`cue`, {NUM_FEATURES} features, '
      f'lengths as in the sample: median 200, 30% short, max 3000) in '
      f'{NUM_SHARDS} files; output B={B}, T={T}, `packed`. The smaller input '
      f'is run in {ROUNDS_SMALL} interleaved rounds of the methods and '
      'each method\'s fastest run is shown (other load on the machine only '
      'adds time); the larger once. Beam runs the '
      'command line `python -m components.sequence_batcher` (`csv_files` '
      f'input). Runner that actually ran: {", ".join(runners)}' + (
          ' (Beam 2.74\'s DirectRunner first tries the Prism runner, which '
          'it downloads; with no network here it fell back to the '
          'FnApiRunner, whose `direct_running_mode`s are measured)'
          if any('fell back' in r for r in runners) else '') +
      '. "work" is '
      'timed inside the process after the imports; "wall" is the whole '
      'command with Python/TF/Beam start-up. Rates are real time steps per '
      'second of work. CPU seconds and peak RSS are polled (psutil, 50 ms) '
      'over the process tree: the main (runner) process and the SDK worker '
      f'processes (Dask: the {DASK_WORKERS} worker processes of a '
      '`dask.distributed` LocalCluster the child process starts and warms — '
      'each worker imports what the transform imports — before the timed '
      'part; the scheduler runs in the main process). Figures were taken on '
      'a shared 2-core machine while other jobs ran (see the load average). '
      'The reference reads with pandas, groups with one lexsort '
      'and writes the same files with `in_memory.write_split` '
      '(`layout_in_memory` + serialization); it does not run the '
      'per-sequence input checks the transform does. "same bytes": every '
      'TFRecord shard equals the reference\'s.',
      '',
      harness.table(['time steps', 'CSV MB', 'method', 'work s', 'wall s',
                    'steps/s', 'rate vs reference', 'CPU s main / workers',
                    'peak RSS main', 'peak RSS per worker', 'peak RSS total',
                    'shards', 'same bytes'],
                   rows, align='rrlrrrrrrrrrc'),
      '',
      f'Scaling from {results[small]["reference"]["real_timesteps"]:,} to '
      f'{results[large]["reference"]["real_timesteps"]:,} steps:',
      '',
      harness.table(['method', 'input', 'work time', 'wall time',
                    'work time per 10x input', 'fixed s', 'marginal steps/s',
                    'marginal vs reference', 'peak RSS main',
                    'peak RSS per worker'], scale_rows,
                   align='lrrrrrrrrr'),
      '',
      '"fixed" and "marginal" fit work time = fixed + steps / marginal rate '
      'through the two sizes.',
      '',
      'Where the time and the memory go (phases cut at the transform\'s '
      'own log lines: "planned ..." and the start of the first "wrote chunk '
      '..."; on Dask the workers\' log lines):',
      '',
      harness.table(['time steps', 'method', 'phase', 'seconds',
                    'peak RSS main', 'peak RSS largest worker'], phase_rows,
                   align='rllrrr'),
      '',
      f'For scale: at {big["real_timesteps"]:,} steps the input holds '
      f'{harness.mib(feature_bytes)} of float32 features; all its batches '
      f'together are {harness.mib(layout_bytes)}; the longest sequence is '
      f'{big["max_length"]:,} steps ({longest_bytes / 1024:,.0f} KiB); an '
      'output shard holds up to 64 MiB of features, a chunk (what one '
      'writer assembles at a time) up to 4 MiB '
      f'({big["num_shards"]} shard(s) here, '
      f'{results[small]["reference"]["num_shards"]} at the smaller size).',
      '',
  ]
  for method, c in checks.items():
    rates = ', '.join(f'{v:.2f} at {results[s]["reference"]["real_timesteps"]:,}'
                      for s, v in c['ratios'].items())
    body.append(
        f'* {label[method]}: 10x input in <= 12x time: '
        f'{harness.verdict(c["scaling"])} ({c["per10"]:.1f}x); >= 1/4 of the '
        f'reference rate: {harness.verdict(c["rate"])} ({rates})' +
        (f'; >= 0.5x of the reference (issue 11): '
         f'{harness.verdict(c["half"])}' if method == 'in_memory' else '') +
        (f'; peak worker RSS within 10% from {small:,} to {large:,} steps '
         f'(issue 11): {harness.verdict(c["flat"])}'
         if results[small][method]['workers'] else '') + '.')
  body.append(f'* Output byte-identical to the reference at every size: '
              f'{harness.verdict(identical)}.')
  body += ['', '### What the figures show', ''] + analysis(
      results, sizes, costs, checks, marginal, label, methods)
  return '\n'.join(body)


def analysis(results, sizes, costs, checks, marginal, label,
             methods) -> List[str]:
  """The measured causes behind each target, from this run's figures."""
  small, large = sizes[0], sizes[-1]
  out = []
  ref_s, ref_l = results[small]['reference'], results[large]['reference']
  per_m = lambda r, key: r[key] / r['real_timesteps'] * 1e6
  cpu_m = lambda r: (r['cpu_root'] + (r['cpu_children'] if r['workers']
                                      else 0)) / r['real_timesteps'] * 1e6
  if 'in_memory' in methods:
    im_s, im_l = results[small]['in_memory'], results[large]['in_memory']
    share = costs['segment_seconds'] / im_s['seconds']
    out.append(
        f'* **Rate, `in_memory`**: {checks["in_memory"]["ratios"][small]:.2f}'
        f' and {checks["in_memory"]["ratios"][large]:.2f} of the reference; '
        f'marginal {marginal["in_memory"][2]:.2f}; the 0.5x target of issue '
        f'11 is {harness.verdict(checks["in_memory"]["half"])}. CPU per '
        f'million steps: {cpu_m(im_l):.1f} s against {cpu_m(ref_l):.1f} s '
        'for the reference. Its time over the reference\'s is Beam moving '
        'elements between stages: each GroupByKey/CoGroupByKey encodes and '
        'decodes every element with Beam\'s default coder, which pickles '
        'every NumPy array on its own. One `Segment` element per segment '
        f'({costs["segments"]:,} for {costs["steps"]:,} steps, '
        f'{costs["segments"] / costs["sequences"]:.1f} per sequence) costs '
        f'{costs["segment_seconds"]:.1f} s to encode and decode once '
        f'({share:.0%} of this work time; '
        f'{costs["segment_bytes"] / 2**20:,.0f} MiB), against '
        f'{costs["sequence_seconds"]:.2f} s for one element per sequence '
        f'({costs["sequence_bytes"] / 2**20:,.0f} MiB), so `CutSegments` now '
        'emits one element per sequence and chunk with the segments\' '
        'fields stacked and pickled together, one bytes element '
        '(`write_stage.pack_segments`). What is left is the rest of the '
        'DirectRunner\'s per-element work (every GroupByKey buffers and '
        're-encodes its input in the runner process, which also grows with '
        'the input, below) and the per-sequence input checks the transform '
        'runs and the reference does not. Phases: '
        + '; '.join(f'"{n}" {im_l["phases"][k][0]:.1f} s'
                    for k, n in enumerate(PHASES['beam'])) +
        f' at {im_l["real_timesteps"]:,} steps.')
  if 'multi_processing' in methods:
    mp_s, mp_l = results[small]['multi_processing'], results[large][
        'multi_processing']
    out.append(
        f'* **Rate, `multi_processing`** (2 workers on 2 cores): '
        f'{checks["multi_processing"]["ratios"][small]:.2f} and '
        f'{checks["multi_processing"]["ratios"][large]:.2f} of the reference'
        f'; fixed cost {marginal["multi_processing"][1]:.0f} s (the runner '
        'starts two SDK worker processes, each importing Beam, TensorFlow '
        'and pandas, and sets up every fused stage over gRPC); '
        f'{cpu_m(mp_l):.1f} CPU-s per million steps (runner '
        f'{per_m(mp_l, "cpu_root"):.1f}, workers '
        f'{per_m(mp_l, "cpu_children"):.1f}): every element between stages '
        'also crosses the process boundary through the runner process.')
  if 'dask' in methods:
    dk_s, dk_l = results[small]['dask'], results[large]['dask']
    out.append(
        f'* **Rate, Dask** (2 worker processes on 2 cores, plus the '
        f'scheduler and the launcher): {checks["dask"]["ratios"][small]:.2f} '
        f'and {checks["dask"]["ratios"][large]:.2f} of the reference; fixed '
        f'{marginal["dask"][1]:.0f} s, marginal '
        f'{marginal["dask"][2]:.2f} of the reference; '
        f'{cpu_m(dk_l):.1f} CPU-s per million steps (launcher and scheduler '
        f'{per_m(dk_l, "cpu_root"):.1f}, workers '
        f'{per_m(dk_l, "cpu_children"):.1f}). Beam\'s DaskRunner runs each '
        'DoFn over a whole Dask partition and shuffles every GroupByKey '
        'between the worker processes (pickled); the launcher only builds '
        'the task graph and waits, so its memory stays flat '
        f'({harness.mib(dk_s["peak_root"])} -> '
        f'{harness.mib(dk_l["peak_root"])}).')
  plan = max(r.get('plan_seconds', 0.0) for s in sizes
             for r in results[s].values())
  out.append(
      '* **Scaling**: ' + ', '.join(
          f'{label[m]} {c["per10"]:.1f}x' for m, c in checks.items()) +
      ' time per 10x input — a fixed start-up part plus a linear part, no '
      'super-linear step: the only global step, the lane plan over '
      f'(key, length) pairs, took at most {plan:.2f} s (logged by the '
      'transform).')
  grow = lambda a, b: b - a
  if 'in_memory' in methods:
    out.append(
        '* **Memory, DirectRunner main process**: it grows with the input '
        f'(`in_memory` +{harness.mib(grow(im_s["peak_root"], im_l["peak_root"]))}'
        f' for {large / small:.0f}x the input): the DirectRunner keeps every '
        'PCollection that goes into a GroupByKey in the runner\'s memory (an '
        'in-memory shuffle, by design; distributed runners shuffle through '
        'their own service, disk or workers). The reference holds everything '
        f'by construction: +{harness.mib(grow(ref_s["peak_root"], ref_l["peak_root"]))}.')
  worker_lines = []
  for m in ('multi_processing', 'dask'):
    if m not in methods:
      continue
    a, b = results[small][m], results[large][m]
    pa, pb = a['phases'], b['phases']
    worker_lines.append(
        f'{label[m]}: largest worker {harness.mib(a["peak_worker"])} -> '
        f'{harness.mib(b["peak_worker"])} '
        f'({harness.verdict(checks[m]["flat"])}; by phase: '
        + ', '.join(f'{PHASES["beam"][k].split(",")[0]} '
                    f'{harness.mib(pa[k][2])} -> {harness.mib(pb[k][2])}'
                    for k in range(3)) + ')')
  if worker_lines:
    out.append(
        '* **Memory, workers** (target: bounded by the sequences in flight, '
        'not by the input): ' + '; '.join(worker_lines) + '. The growth is '
        'not in the write stage: every phase grows alike, the read phase '
        'first. The write stage no longer holds a shard: segments are '
        'grouped per chunk of batches '
        '(at most 4 MiB of features; a full shard would be 64 MiB of '
        f'features, about {harness.mib(costs["segment_decoded_rss"] * costs["batches_per_shard"] / costs["batches"])}'
        ' of decoded `Segment` objects), each chunk is written to its own '
        'file, and a shard is the concatenation of its chunk files, copied '
        'a MiB at a time.' + (
            ' On Dask a worker holds more than the elements in flight: '
            'Beam\'s DaskRunner runs a DoFn over a whole Dask partition and '
            'returns all its outputs as one list (`apply_dofn_to_bundle`), '
            'and a Dask bag `groupby` materialises each output partition, so '
            'a worker holds a partition of every stage\'s elements at once; '
            'the command line makes one partition per input file, and these '
            f'inputs have {NUM_SHARDS} files at every size, so a partition '
            'grows with the input; more, smaller input files make smaller '
            'partitions. The DirectRunner\'s `multi_processing` workers grow '
            'too; that was not attributed further.'
            if 'dask' in methods else ''))
  return out


if __name__ == '__main__':
  raise SystemExit(main())
