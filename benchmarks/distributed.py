"""9. Data-parallel training: real steps per second of 1 worker against 2.

The StatefulTrainer in fresh processes: 1 worker, 2 workers, 2 independent
processes, 2 threads, ``MirroredStrategy``; then the default model's
``adapt`` on 1 worker and on 2 (BENCHMARKS.md section 9)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional

import numpy as np

from benchmarks import harness
from benchmarks.harness import speed

B, T, UNITS = 256, 32, 256
MODULE = os.path.join(harness.ROOT, 'benchmarks', 'lstm_module.py')
INDEPENDENT = '2 independent processes, half the work each (the ceiling)'
SETUPS = (
    # (name, workers, threads per process, local replicas)
    ('1 worker, 1 thread', 1, 1, 1),
    ('2 workers, 1 thread each', 2, 1, 1),
    (INDEPENDENT, 2, 1, 1),
    ('1 process, 2 threads', 1, 2, 1),
    ('MirroredStrategy, 2 logical CPUs', 1, 2, 2),
)


def _adapt_worker(args, runner) -> Dict[str, Any]:
  """The default model's adapt alone (``model_setup.build``, as
  ``run.run`` calls it): its seconds and the fitted weights."""
  import time  # pylint: disable=g-import-not-at-top
  from components.stateful import batches as batches_lib  # pylint: disable=g-import-not-at-top
  from components.stateful import model_io  # pylint: disable=g-import-not-at-top
  from components.stateful.distribution import shards  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import distribution  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import model_setup  # pylint: disable=g-import-not-at-top
  dist = distribution.make_distribution(1)
  trainer_args = harness.trainer_args(args.batches, args.out, {'seed': 0})
  train = batches_lib.BatchSource.open(args.batches, 'train')
  spec = runner.make_spec(trainer_args, train.meta,
                          batches_lib.label_statistics(train))
  module = model_io.resolve_module(None)
  shard = shards.of(dist.strategy, dist.num_workers, spec.batch_size)
  started = time.monotonic()
  model, _ = model_setup.build(module, spec, train, 0, shard=shard)
  seconds = time.monotonic() - started
  os.makedirs(args.out, exist_ok=True)
  np.savez(f'{args.out}/weights-{shard.index}.npz', *model.get_weights())
  return {'seconds': seconds}


def worker(args) -> int:
  """One trainer process: prints its epochs' rates and peak RSS as JSON
  (``--adapt``: the default model's adapt seconds)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  from components.stateful_trainer import distribution  # pylint: disable=g-import-not-at-top
  if args.replicas > 1:
    distribution.configure_local_devices(args.replicas)
  from components.stateful_trainer import run as runner  # pylint: disable=g-import-not-at-top
  if args.adapt:
    got = _adapt_worker(args, runner)
    got['peak_rss'] = speed.maxrss()
    print(json.dumps(got))
    return 0
  out = args.out
  result = harness.run_trainer(
      args.batches, out, {'epochs': args.epochs, 'validation_fraction': 0.0,
                          'refit': False, 'replicas': args.replicas,
                          'seed': 0},
      module_file=MODULE,
      hyperparameters={'units': UNITS, 'learning_rate': 1e-3})
  if result.stateful_dir:
    np.savez(f'{out}/weights.npz', *result.model.get_weights())
  print(json.dumps({
      'rates': [e.real_steps_per_sec for e in result.fit.epochs],
      'seconds': [e.seconds for e in result.fit.epochs],
      'steps': result.fit.steps,
      'peak_rss': speed.maxrss(),
      'chief': bool(result.stateful_dir)}))
  return 0


def _ports(n: int) -> List[int]:
  out = []
  for _ in range(n):
    with socket.socket() as s:
      s.bind(('localhost', 0))
      out.append(s.getsockname()[1])
  return out


def run_setup(batches, out: str, workers: int, threads: int,
              replicas: int, epochs: int, independent: bool = False,
              adapt: bool = False) -> List[Dict[str, Any]]:
  """Runs one set-up; returns each process's JSON (chief first).
  ``independent``: the workers are separate runs (no TF_CONFIG), each on
  its own batches (``batches[i]``) into its own output folder. ``adapt``:
  the default model's adapt only."""
  cmd = [sys.executable, '-m', 'benchmarks.distributed', '--worker',
         '--threads', str(threads), '--replicas', str(replicas),
         '--epochs', str(epochs)] + (['--adapt'] if adapt else [])
  cluster = {'worker': [f'localhost:{p}' for p in _ports(workers)]}
  procs = []
  for i in range(workers):
    env = harness.child_env()
    if workers > 1 and not independent:
      env['TF_CONFIG'] = json.dumps({'cluster': cluster,
                                     'task': {'type': 'worker', 'index': i}})
    own = ['--batches', batches[i], '--out', f'{out}/{i}'] if independent \
        else ['--batches', batches, '--out', out]
    procs.append(subprocess.Popen(cmd + own, cwd=harness.ROOT, env=env,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  results = []
  for proc in procs:
    stdout, stderr = proc.communicate(timeout=3600)
    if proc.returncode != 0:
      raise RuntimeError(f'worker failed: {stderr[-2000:]}')
    results.append(json.loads(stdout.strip().splitlines()[-1]))
  return results


def rate_of(name: str, runs: List[Dict[str, Any]]) -> float:
  """A set-up's real steps per second in one run: the median over the
  epochs after the first; for the independent processes both halves' real
  steps over the slower one's seconds, else the chief's figure (every
  worker steps through the same global batches)."""
  if name == INDEPENDENT:
    per_epoch = [sum(r['rates'][e] * r['seconds'][e] for r in runs) /
                 max(r['seconds'][e] for r in runs)
                 for e in range(1, len(runs[0]['rates']))]
    return statistics.median(per_epoch)
  return statistics.median(runs[0]['rates'][1:])


def _max_rel_diff(a_path: str, b_path: str) -> Optional[float]:
  if not (os.path.exists(a_path) and os.path.exists(b_path)):
    return None
  a, b = np.load(a_path), np.load(b_path)
  return max(float(np.max(np.abs(a[k] - b[k])) /
                   max(float(np.max(np.abs(a[k]))), 1e-12)) for k in a.files)


def main(argv=None) -> int:
  parser = harness.parser(__doc__.split('\n')[0])
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--batches', help=argparse.SUPPRESS)
  parser.add_argument('--out', help=argparse.SUPPRESS)
  parser.add_argument('--threads', type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument('--replicas', type=int, default=1,
                      help=argparse.SUPPRESS)
  parser.add_argument('--adapt', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--epochs', type=int, default=None,
                      help='epochs per run (default 4; --quick 2)')
  parser.add_argument('--repeats', type=int, default=None,
                      help='runs per set-up (default 3; --quick 1)')
  args = parser.parse_args(argv)
  if args.worker:
    return worker(args)
  log = harness.progress_log('distributed')
  epochs = args.epochs or (2 if args.quick else 4)
  repeats = args.repeats or (1 if args.quick else 3)
  run = harness.Run()
  # Lengths without a long tail, so that packed lanes end together
  # (padding would count as work without real steps).
  seqs, names = harness.generated_sequences(
      300 if args.quick else 1200, seed=0, num_features=3, max_length=400)
  results: Dict[str, List[List[Dict[str, Any]]]] = {s[0]: [] for s in SETUPS}
  with tempfile.TemporaryDirectory() as tmp:
    batches = harness.write_batches(f'{tmp}/batches', {'train': seqs},
                                   batch_size=B, num_unroll=T,
                                   label_kind='per_sequence',
                                   feature_names=names)
    halves = [harness.write_batches(f'{tmp}/half{i}', {'train': seqs[i::2]},
                                   batch_size=B // 2, num_unroll=T,
                                   label_kind='per_sequence',
                                   feature_names=names) for i in range(2)]
    real = sum(s.length for s in seqs)
    efficiency = float(harness.read_json(
        f'{batches}/Split-train/metadata.json')['efficiency'])
    log(f'{len(seqs)} sequences, {real} real steps, B={B}, T={T}, '
        f'{UNITS} units')
    for repeat in range(repeats):
      for name, workers, threads, replicas in SETUPS:
        out = f'{tmp}/{repeat}-{workers}w{threads}t{replicas}r'
        got = run_setup(halves if name == INDEPENDENT else batches, out,
                        workers, threads, replicas, epochs,
                        independent=name == INDEPENDENT)
        results[name].append(got)
        log(f'{name} (run {repeat + 1}): {rate_of(name, got):,.0f} real '
            'steps/s')
    agree = _max_rel_diff(f'{tmp}/0-1w1t1r/weights.npz',
                          f'{tmp}/0-2w1t1r/weights.npz')
    # The default model's adapt (no training): 1 worker against 2.
    adapt_runs: Dict[int, List[Dict[str, Any]]] = {1: [], 2: []}
    for repeat in range(repeats):
      for workers in (1, 2):
        got = run_setup(batches, f'{tmp}/adapt-{repeat}-{workers}w', workers,
                        1, 1, 0, adapt=True)
        adapt_runs[workers].append(got)
        log(f'default model adapt, {workers} worker(s) (run {repeat + 1}): '
            f'{max(g["seconds"] for g in got):.1f} s')
    adapt_agree = max(_max_rel_diff(f'{tmp}/adapt-0-1w/weights-0.npz',
                                    f'{tmp}/adapt-0-2w/weights-{i}.npz')
                      for i in range(2))
  run.finish()

  def rate(name: str) -> float:
    return statistics.median(rate_of(name, runs) for runs in results[name])

  def peak(name: str) -> int:
    return max(p['peak_rss'] for runs in results[name] for p in runs)

  base = {'2 workers, 1 thread each': '1 worker, 1 thread',
          INDEPENDENT: '1 worker, 1 thread',
          'MirroredStrategy, 2 logical CPUs': '1 process, 2 threads'}
  rows = []
  for name, workers, threads, replicas in SETUPS:
    against = base.get(name)
    rows.append([name, workers, threads,
                 '-' if name == INDEPENDENT else workers * replicas,
                 f'{rate(name):,.0f}',
                 harness.ratio(rate(name), rate(against)) if against else '-',
                 harness.mib(peak(name))])
  adapt_seconds = {w: statistics.median(max(g['seconds'] for g in got)
                                        for got in adapt_runs[w])
                   for w in (1, 2)}
  adapt_rows = [[f'{w} worker{"s, 1 thread each" if w > 1 else ", 1 thread"}',
                 w,
                 f'{adapt_seconds[w]:.1f}',
                 harness.ratio(adapt_seconds[1], adapt_seconds[w])
                 if w > 1 else '-',
                 harness.mib(max(g['peak_rss'] for got in adapt_runs[w]
                                for g in got))] for w in (1, 2)]
  scaling = rate('2 workers, 1 thread each') / rate('1 worker, 1 thread')
  ceiling = rate(INDEPENDENT) / rate('1 worker, 1 thread')
  harness.write_report(
      args, 'distributed',
      '## 9. Data-parallel training: 1 worker against 2',
      run.preamble(args.quick),
      f'{len(seqs)} generated `cue` sequences ({real:,} real steps, at most '
      f'400 long; padding efficiency {efficiency:.2f}), '
      f'B = {B} lanes, T = {T}, the plain LSTM module at {UNITS} units, '
      f'{epochs} epochs per run, {repeats} run(s) per set-up; rate = median '
      'real steps per second of the epochs after the first (the trainer\'s '
      '`history.json`); memory = peak RSS of each worker process (the '
      'largest).',
      harness.table(['set-up', 'processes', 'threads / process', 'replicas',
                    'real steps / s', 'speed-up', 'peak RSS / worker'],
                   rows, align='lrrrrrr'),
      [f'* 2 workers x 1 thread against 1 worker x 1 thread on the same '
       f'global batch: **{scaling:.2f}x** (target >= 1.7x: '
       f'{harness.verdict(scaling >= 1.7)}); two independent processes on '
       f'half the work each, with nothing shared, reach {ceiling:.2f}x: the '
       f'2 workers get {scaling / ceiling:.0%} of what this machine gives '
       'two processes.',
       f'* Trained weights, 2 workers against 1 (first run): max relative '
       f'difference {agree:.1e}.' if agree is not None else
       '* Trained weights: not compared (a run wrote none).'],
      'The default model\'s `adapt` alone (`model_setup.build`), each '
      'worker on its own lanes, statistics combined by `Shard.agree`; '
      f'seconds = the slower worker\'s, median of {repeats} run(s).',
      harness.table(['set-up', 'processes', 'adapt seconds', 'speed-up',
                    'peak RSS / worker'], adapt_rows, align='lrrrr'),
      '* Fitted weights, 2 workers against 1 (first run): ' + (
          'identical, bit for bit' if adapt_agree == 0 else
          f'max relative difference {adapt_agree:.1e}') +
      ' (every worker holds the chief\'s after `Shard.agree`).')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
