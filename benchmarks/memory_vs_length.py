"""4. Peak memory of a training run against the longest sequence's length.

63 fixed ``cue`` sequences plus one of L = 1k, 10k, 100k steps; one LSTM
layer of 32 units, B=32, T=32, one epoch, each run a fresh process (peak RSS
from ``ru_maxrss``, and polled): the StatefulTrainer's ``trainer_run.run``
against Keras ``fit`` on the sequences padded to the longest (stopped at a
memory cap or a time limit; BENCHMARKS.md section 4)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from typing import Dict

import numpy as np

from benchmarks import harness
from benchmarks.harness import speed

B, T, UNITS = 32, 32, 32
OTHERS = 63
RSS_CAP = 6 << 30         # Keras pad-to-max runs are stopped above this.
TIME_LIMIT = 300.0        # ... or after this many seconds.


def sequences(longest: int):
  """The 63 fixed sequences and one of ``longest`` steps."""
  from components.sequence_batcher import layout  # pylint: disable=g-import-not-at-top
  seqs, names = harness.generated_sequences(
      OTHERS, seed=4, median_length=200, max_length=1000,
      short_fraction=0.0)
  rng = np.random.default_rng(5)
  label = 1
  feats = rng.normal(size=(longest, len(names))).astype(np.float32)
  feats[:3, 0] = 1.0  # The cue of label 1.
  seqs.append(layout.SequenceArrays(
      key='z_longest', features=feats,
      labels=np.full(longest, label, np.int64)))
  return seqs, names


def _rss() -> int:
  import psutil  # pylint: disable=g-import-not-at-top
  return psutil.Process().memory_info().rss


def child_ours(batches: str, work: str) -> dict:
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  from components.stateful_trainer import run  # pylint: disable=g-import-not-at-top,unused-import
  ready = _rss()
  t0 = time.perf_counter()
  result = harness.run_trainer(
      batches, work, {'epochs': 1, 'validation_fraction': 0.0},
      task='classification', num_classes=2, hyperparameters={
          'model': 'lstm', 'units': [UNITS], 'learning_rate': 0.01})
  return {'ready_rss': ready, 'seconds': time.perf_counter() - t0,
          'steps': result.fit.steps}


def child_keras(longest: int) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  seqs, names = sequences(longest)
  feats, labels, mask = harness.padded(seqs)
  keras.utils.set_random_seed(0)
  inputs = keras.Input(shape=(None, len(names)))
  x = keras.layers.Masking(mask_value=0.0)(inputs)
  x = keras.layers.LSTM(UNITS, return_sequences=True)(x)
  model = keras.Model(inputs, keras.layers.Dense(2)(x))
  model.compile(optimizer=keras.optimizers.Adam(0.01, global_clipnorm=1.0),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  ready = _rss()
  t0 = time.perf_counter()
  model.fit(feats, labels, sample_weight=mask, batch_size=B, epochs=1,
            verbose=0)
  del tf
  return {'ready_rss': ready, 'seconds': time.perf_counter() - t0,
          'steps': -(-len(seqs) // B)}


def child(kind: str, longest: int, batches: str, work: str) -> dict:
  """One run in a fresh process (``harness.call``)."""
  result = (child_ours(batches, work) if kind == 'ours' else
            child_keras(longest))
  result['maxrss'] = speed.maxrss()
  return result


def run_one(kind: str, longest: int, batches: str, work: str) -> dict:
  limits = (dict(timeout=TIME_LIMIT * 2) if kind == 'ours' else
            dict(timeout=TIME_LIMIT, rss_cap=RSS_CAP))
  out, res = harness.call('memory_vs_length.child', kind, longest, batches,
                          work, **limits)
  out = out or {}
  out.update(wall=res.seconds, polled=res.peak.tree, killed=res.killed,
             ok=res.returncode == 0 and not res.killed)
  if not out['ok'] and not res.killed:
    tail = res.stderr.strip().splitlines()[-1:] or ['']
    out['error'] = f'exit code {res.returncode}: {tail[0][:200]}'
  print(f'{kind} {longest}: {out}', file=sys.stderr)
  return out


def main(argv=None) -> int:
  args = harness.parser(__doc__.split('\n')[0]).parse_args(argv)
  sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
  run = harness.Run()
  work = tempfile.mkdtemp(prefix='tss-bench-memory-')
  results: Dict[int, Dict[str, dict]] = {}
  info = {}
  for longest in sizes:
    seqs, names = sequences(longest)
    batches = harness.write_batches(
        os.path.join(work, f'batches-{longest}'), {'train': seqs},
        batch_size=B, num_unroll=T, label_kind='per_step',
        feature_names=names)
    meta = harness.read_json(
        os.path.join(batches, 'Split-train', 'metadata.json'))
    info[longest] = {'steps': meta['real_timesteps'],
                     'batches': meta['num_batches'],
                     'padded': len(seqs) * longest}
    results[longest] = {
        'ours': run_one('ours', longest, batches,
                        os.path.join(work, f'ours-{longest}')),
        'keras': run_one('keras', longest, batches, work)}
  shutil.rmtree(work, ignore_errors=True)
  run.finish()
  harness.write_report(args, 'memory_vs_length',
                       *report(args, run, sizes, results, info))
  return 0


def _peak(r: dict) -> int:
  return r.get('maxrss') or r['polled']


def report(args, run, sizes, results, info) -> list:
  first = sizes[0]
  base_ours = _peak(results[first]['ours'])
  base_keras = _peak(results[first]['keras'])
  rows = []
  for n in sizes:
    o, k = results[n]['ours'], results[n]['keras']
    if k['ok']:
      keras_cells = [harness.mib(_peak(k)), harness.ratio(_peak(k), base_keras),
                     f'{k["seconds"]:.1f} s', 'completed']
    else:
      keras_cells = [f'> {harness.mib(k["polled"])}', '-',
                     f'{k["wall"]:.0f} s (wall)',
                     k.get('killed') or k.get('error', 'failed')]
    rows.append([f'{n:,}', f'{info[n]["steps"]:,}', info[n]['batches'],
                 harness.mib(_peak(o)), harness.ratio(_peak(o), base_ours),
                 harness.mib(_peak(o) - o['ready_rss']),
                 f'{o["seconds"]:.1f} s', f'{info[n]["padded"]:,}'] +
                keras_cells)
  last = sizes[-1]
  growth = _peak(results[last]['ours']) / base_ours - 1.0
  blocks = [
      '## 4. Memory against sequence length',
      run.preamble(args.quick),
      f'{OTHERS} fixed `cue` sequences (median 200, at most 1,000 steps) plus '
      f'one of L steps; one LSTM layer of {UNITS} units, B={B}, T={T}, '
      'per-step labels, one epoch; each run a fresh process; peak RSS = '
      '`ru_maxrss` (a run stopped at the cap: the last polled RSS). "ours" = '
      '`trainer_run.run` on `packed` batches; '
      '"above start" = peak minus the RSS after the imports. Keras `fit` '
      f'pads to L; stopped above {harness.mib(RSS_CAP)} or after '
      f'{TIME_LIMIT:.0f} s.',
      harness.table(['longest L', 'real steps', 'batches (ours)',
                    'ours: peak RSS', 'vs L=1k', 'above start',
                    'ours: train+export time', 'padded steps (Keras)',
                    'Keras pad-to-max: peak RSS', 'vs L=1k', 'fit time',
                    'outcome'], rows, align='rrrrrrrrrrrl')]
  bullets = [
      f'* Ours from L={first:,} to L={last:,}: peak RSS {growth * 100:+.1f}%;'
      f' target flat within 10%: {harness.verdict(abs(growth) <= 0.10)}. '
      f'Batches (ours): {info[first]["batches"]} -> '
      f'{info[last]["batches"]}.']
  ks = [n for n in sizes if results[n]['keras']['ok']]
  if len(ks) >= 2:
    a, b = ks[0], ks[-1]
    slope = (_peak(results[b]['keras']) - _peak(results[a]['keras'])) / (
        b - a)
    line = (f'* Keras pad-to-max: peak RSS grows by {slope / 1024:.0f} KiB '
            f'per step of L (L={a:,} -> {b:,}).')
    for n in sizes:
      k = results[n]['keras']
      if not k['ok']:
        proj = _peak(results[a]['keras']) + slope * (n - a)
        line += (f' At L={n:,} that projects to {harness.mib(proj)}; the run '
                 f'was {k.get("killed") or k.get("error")}.')
    bullets.append(line)
  return blocks + [bullets]


if __name__ == '__main__':
  raise SystemExit(main())
