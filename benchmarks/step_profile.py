"""10b. Where a training step's time goes: the LSTM module against the LRU.

One compiled train step of the LSTM module and of the default module's LRU,
split by ablation (the LRU with its scan replaced by the identity; the scan
alone, blocked and unblocked) on random batches of B=16 at T in {16, 64,
256}; the variants timed in interleaved rounds, median ms per step
(BENCHMARKS.md section 10b)."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List

import numpy as np

from benchmarks import harness

B = 16
UNROLLS = (16, 64, 256)
STATE = 64
SEED = 0


def _spec(unroll: int, hp: Dict):
  from components.stateful import model_spec as ms  # pylint: disable=g-import-not-at-top
  return ms.ModelSpec(batch_size=B, num_unroll=unroll, stateful=True,
                      feature_names=('x',), task='classification',
                      num_classes=3, hyperparameters=hp, seed=SEED)


def _batch(unroll: int):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(SEED)
  return {'features': tf.constant(rng.normal(size=(B, unroll, 1)),
                                  tf.float32),
          'labels': tf.constant(rng.integers(0, 3, size=(B, unroll))),
          'mask': tf.ones((B, unroll)), 'label_weight': tf.ones((B, unroll)),
          'reset': tf.zeros((B,), tf.int64)}


def train_step(model_name: str, unroll: int) -> Callable[[], object]:
  """The compiled train step of one variant, traced (3 untimed steps)."""
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  from components.stateful.layers import lru  # pylint: disable=g-import-not-at-top
  from components.stateful import model_io  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import settings  # pylint: disable=g-import-not-at-top
  if model_name == 'lstm':
    module = model_io.resolve_module(
        f'{harness.ROOT}/benchmarks/lstm_module.py')
    spec = _spec(unroll, {})
  else:
    module = model_io.resolve_module()
    spec = _spec(unroll, {'model': 'lru'})
  model = module.build_model(spec)
  steps = harness.compiled_steps(model, spec, module,
                                 settings.OPTIMIZER_DEFAULTS,
                                 total_steps=10_000)
  batch = _batch(unroll)
  scan = lru.invariant_scan
  if model_name == 'lru, no scan':
    lru.invariant_scan = lambda decay, phase, b_re, b_im: (b_re, b_im)
  try:
    for _ in range(3):  # The first traces, with the ablation in place.
      steps.train(batch)
  finally:
    lru.invariant_scan = scan
  del keras
  return lambda: steps.train(batch)['loss']


def scan_alone(unroll: int, blocked: bool = True) -> Callable[[], object]:
  """``invariant_scan`` forward and gradient on [B, T, STATE], twice
  (``blocked=False``: doubling over the whole chunk)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from components.stateful.layers import lru  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(SEED)
  decay = tf.Variable(rng.uniform(1e-3, 0.1, STATE).astype(np.float32))
  phase = tf.Variable(rng.uniform(0.0, 6.28, STATE).astype(np.float32))
  parts = [tf.constant(rng.normal(size=(B, unroll, STATE)), tf.float32)
           for _ in range(4)]

  @tf.function(autograph=False)
  def both():
    total = 0.0
    for layer in range(2):
      b_re, b_im = parts[2 * layer], parts[2 * layer + 1]
      with tf.GradientTape() as tape:
        tape.watch([b_re, b_im])
        h_re, h_im = lru.invariant_scan(decay, phase, b_re, b_im)
        loss = tf.reduce_sum(h_re) + tf.reduce_sum(h_im)
      grads = tape.gradient(loss, [decay, phase, b_re, b_im])
      total += tf.add_n([tf.reduce_sum(g) for g in grads])
    return total

  min_blocks = lru.MIN_BLOCKS
  if not blocked:
    lru.MIN_BLOCKS = unroll + 1  # Past any block count of this chunk.
  try:
    for _ in range(3):  # The first traces.
      both()
  finally:
    lru.MIN_BLOCKS = min_blocks
  return both


VARIANTS = ('lstm', 'lru', 'lru, no scan', 'scan alone',
            'scan alone, unblocked')


def measure(unroll: int, rounds: int, steps: int, log) -> Dict[str, float]:
  """Median ms per step of each variant at T = ``unroll``."""
  fns = {}
  for name in VARIANTS:
    log(f'T={unroll}: tracing {name}')
    if name.startswith('scan alone'):
      fns[name] = scan_alone(unroll, blocked=name == 'scan alone')
    else:
      fns[name] = train_step(name, unroll)
  times: Dict[str, List[float]] = {name: [] for name in VARIANTS}
  for r in range(rounds):
    for name, fn in fns.items():
      start = time.perf_counter()
      for _ in range(steps):
        out = fn()
      float(out)  # Waits for the last step.
      times[name].append((time.perf_counter() - start) / steps * 1e3)
    log(f'T={unroll}: round {r + 1}/{rounds}: ' + ', '.join(
        f'{n} {times[n][-1]:.1f} ms' for n in VARIANTS))
  return {name: statistics.median(v) for name, v in times.items()}


def main(argv=None) -> int:
  parser = harness.parser(__doc__.split('\n')[0])
  parser.add_argument('--rounds', type=int, default=None,
                      help='interleaved timing rounds (median; default 7, '
                      '2 with --quick)')
  parser.add_argument('--steps', type=int, default=None,
                      help='steps per round (default 20, 3 with --quick)')
  args = parser.parse_args(argv)
  rounds = args.rounds or (2 if args.quick else 7)
  steps = args.steps or (3 if args.quick else 20)
  unrolls = (16, 64) if args.quick else UNROLLS
  log = harness.progress_log('step_profile')
  run = harness.Run()
  results = {unroll: measure(unroll, rounds, steps, log)
             for unroll in unrolls}
  from components.stateful.layers import lru  # pylint: disable=g-import-not-at-top
  rows = []
  for unroll, r in results.items():
    rows.append([
        str(unroll), f'{r["lstm"]:.1f}', f'{r["lru"]:.1f}',
        f'{r["lru, no scan"]:.1f}', f'{r["lru"] - r["lru, no scan"]:.1f}',
        f'{r["scan alone"]:.1f}', f'{r["scan alone, unblocked"]:.1f}',
        f'{B * unroll / r["lstm"] * 1e3:,.0f}',
        f'{B * unroll / r["lru"] * 1e3:,.0f}',
        harness.ratio(r['lstm'], r['lru']),
        harness.ratio(r['lstm'], r['lru, no scan'])])
  harness.write_report(
      args, 'step_profile',
      '### 10b. Where a training step\'s time goes: the LSTM module '
      'against the LRU model',
      run.preamble(args.quick),
      f'One compiled train step (forward, loss, gradient, clipping, Adam, '
      f'the carried state), B={B}, one feature, 3 classes, every step '
      f'labelled; median ms per step of {rounds} interleaved rounds of '
      f'{steps} steps. "lru, no scan": the LRU model with its scans '
      'replaced by the identity while the step is traced; "scans" = lru '
      'minus that; "scan alone": `invariant_scan` forward and gradient on '
      f'[{B}, T, {STATE}], twice (the model\'s two layers), in blocks of '
      f'{lru.BLOCK} steps from {lru.BLOCK * lru.MIN_BLOCKS} steps on '
      '(the layer\'s path); "unblocked": doubling over the whole chunk. '
      'Rate ratios are LRU over LSTM (above 1: the LRU is faster).',
      harness.table(['T', 'lstm ms', 'lru ms', 'lru, no scan ms',
                    'scans ms', 'scan alone ms', 'scan alone, unblocked ms',
                    'lstm real steps / s',
                    'lru real steps / s', 'lru rate / lstm',
                    'lru without scans: rate / lstm'], rows))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
