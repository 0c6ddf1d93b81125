"""1. Padding efficiency: the fraction of processed time steps that are real.

For several length distributions and T in 32, 128, 512: pad-to-max,
``padded_batch`` (exact, in NumPy), ``bucket_by_sequence_length`` (run for
real) and our ``bucketed``, ``packed`` and ``dense`` layouts
(``layout.plan_lanes``), with the best any one-lane-per-sequence layout can
reach (``bound``) split into segment fill and lane fill (BENCHMARKS.md
section 1)."""

from __future__ import annotations

import glob
import math
import os
from typing import Dict, List, Tuple

import numpy as np

from benchmarks import harness

B = 32
UNROLLS = (32, 128, 512)
TARGET = 0.9
DENSE_TARGET = 0.99


def sample_lengths() -> np.ndarray:
  """Sequence lengths of the bundled ``data/sample`` (300 sequences)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(harness.ROOT, 'data', 'sample',
                                        '*.csv')))
  keys = pd.concat([pd.read_csv(p, usecols=['seq_id'], dtype=str)
                    for p in paths])['seq_id']
  return keys.value_counts().sort_index().to_numpy().astype(np.int64)


def distributions(quick: bool) -> List[Tuple[str, str, np.ndarray]]:
  """``(name, description, lengths)`` of every distribution."""
  n = 300 if quick else 1000
  rng = np.random.default_rng(6)
  out = [('bundled sample', '`data/sample`: 300 `cue` sequences',
          sample_lengths())]
  out.append(('uniform', f'{n} sequences, uniform in [64, 2048]',
              rng.integers(64, 2048, size=n, endpoint=True)))
  out.append(('log-normal', f'{n} sequences, median 400, log-sigma 1.0',
              np.maximum(8, np.rint(rng.lognormal(math.log(400), 1.0, n)))
              .astype(np.int64)))
  for count in ((n,) if quick else (n, 10 * n)):
    base = np.maximum(8, np.rint(rng.lognormal(math.log(200), 0.5, count)))
    giants = max(1, round(0.01 * count))
    idx = rng.choice(count, size=giants, replace=False)
    base[idx] = np.rint(200 * 100 * rng.uniform(0.9, 1.1, giants))
    out.append((f'heavy-tailed (N={count})',
                f'{count} sequences, log-normal median 200, log-sigma 0.5, '
                f'and 1% ({giants}) of ~20,000 steps (100x the median)',
                base.astype(np.int64)))
  return out


def pad_to_max(lengths: np.ndarray) -> float:
  return float(lengths.sum() / (lengths.size * lengths.max()))


def padded_batch(lengths: np.ndarray, seed: int = 0) -> float:
  """Shuffled order, batches of B, each padded to its own maximum."""
  order = np.random.default_rng(seed).permutation(lengths)
  processed = sum(int(order[i:i + B].size * order[i:i + B].max())
                  for i in range(0, order.size, B))
  return float(lengths.sum() / processed)


def pow2_boundaries(lengths: np.ndarray) -> List[int]:
  top = int(lengths.max())
  return [2**k for k in range(4, 40) if 2**k < top]


def bucket_by_sequence_length(lengths: np.ndarray, seed: int = 0
                             ) -> Tuple[float, int]:
  """Runs ``tf.data`` bucketing for real; returns (efficiency, batches)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  boundaries = pow2_boundaries(lengths)
  ds = (tf.data.Dataset.from_tensor_slices(lengths.astype(np.int32))
        .shuffle(lengths.size, seed=seed)
        .map(lambda n: tf.ones([n], tf.int8))
        .bucket_by_sequence_length(
            element_length_func=lambda x: tf.shape(x)[0],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[B] * (len(boundaries) + 1)))
  real = processed = batches = 0
  for batch in ds.as_numpy_iterator():
    real += int(batch.sum(dtype=np.int64))
    processed += batch.size
    batches += 1
  if real != int(lengths.sum()):
    raise AssertionError(f'bucketing lost steps: {real} != {lengths.sum()}')
  return real / processed, batches


def ours(lengths: np.ndarray, unroll: int) -> Dict[str, float]:
  from components.sequence_batcher import layout  # pylint: disable=g-import-not-at-top
  pairs = [(f's{i}', int(n)) for i, n in enumerate(lengths)]
  out = {}
  for mode in layout.MODES:
    plan = layout.plan_lanes(pairs, layout.LayoutConfig(
        batch_size=B, num_unroll=unroll, mode=mode))
    if plan.real_timesteps != int(lengths.sum()):
      raise AssertionError('plan lost steps')
    out[mode] = plan.efficiency
    out[mode + '_batches'] = plan.num_batches
  segs = -(-lengths // unroll)
  min_batches = max(int(-(-segs.sum() // B)), int(segs.max()))
  out['bound'] = float(lengths.sum() / (min_batches * B * unroll))
  out['segment_fill'] = float(lengths.sum() / (segs.sum() * unroll))
  out['lane_fill'] = float(segs.sum() / (out['packed_batches'] * B))
  return out


def main(argv=None) -> int:
  args = harness.parser(__doc__.split('\n')[0]).parse_args(argv)
  run = harness.Run()
  dists = distributions(args.quick)
  rows, checks, dense_checks = [], [], []
  stats_rows = []
  for name, desc, lengths in dists:
    stats_rows.append([name, desc, f'{lengths.size:,}', f'{lengths.sum():,}',
                       int(lengths.min()), f'{np.median(lengths):g}',
                       f'{lengths.mean():.0f}', f'{lengths.max():,}'])
    ptm = pad_to_max(lengths)
    pb = padded_batch(lengths)
    bucket, _ = bucket_by_sequence_length(lengths)
    for unroll in UNROLLS:
      o = ours(lengths, unroll)
      applies = np.median(lengths) >= 4 * unroll
      if applies:
        ok = o['packed'] >= TARGET
        checks.append(ok)
        target = ('met' if ok else 'missed')
      else:
        target = 'n/a (median < 4T)'
      if lengths.sum() / B >= 4 * lengths.max():
        ok = o['dense'] >= DENSE_TARGET
        dense_checks.append(ok)
        dense_target = 'met' if ok else 'missed'
      else:
        dense_target = 'n/a (steps / B < 4 x longest)'
      rows.append([name, unroll, f'{ptm:.3f}', f'{pb:.3f}', f'{bucket:.3f}',
                   f'{o["bucketed"]:.3f}', f'**{o["packed"]:.3f}**',
                   f'**{o["dense"]:.3f}**',
                   f'{o["bound"]:.3f}', f'{o["segment_fill"]:.3f}',
                   f'{o["lane_fill"]:.3f}',
                   harness.ratio(o['packed'], bucket),
                   harness.ratio(o['packed'], ptm), target, dense_target])
  run.finish()

  def target(ok, rule):
    return (f'**Target ({rule}): ' + (
        'met** on every row where it applies.' if ok else
        'missed** on some rows (segment fill and lane fill give the cause).'
        if ok is not None else 'no row applies.**'))

  harness.write_report(
      args, 'padding', '## 1. Padding efficiency', run.preamble(args.quick),
      f'Fraction of processed time steps that are real, B={B}. Pad-to-max, '
      '`padded_batch` and `bucket_by_sequence_length` (power-of-two '
      'boundaries) run whole sequences, so they do not depend on T; our '
      'modes count every slot of `num_batches x B x T`; `bound` = the best '
      'layout keeping a sequence in one lane; packed = segment fill x lane '
      'fill.',
      harness.table(['distribution', 'T', 'pad-to-max', 'padded_batch',
                     'bucket_by_sequence_length', 'ours bucketed',
                     'ours packed', 'ours dense', 'bound (packed)',
                     'segment fill', 'lane fill',
                     'packed / bucket_by_seq_len', 'packed / pad-to-max',
                     'target packed >= 0.9 (median >= 4T)',
                     'target dense >= 0.99 (steps / B >= 4 x longest)'],
                    rows, align='lrrrrrrrrrrrrll'),
      'The distributions:',
      harness.table(['distribution', 'what', 'sequences', 'time steps',
                     'min', 'median', 'mean', 'max'], stats_rows,
                    align='llrrrrrr'),
      target(all(checks) if checks else None,
             f'`packed` >= {TARGET} wherever median >= 4 x T'),
      target(all(dense_checks) if dense_checks else None,
             f'`dense` >= {DENSE_TARGET} wherever total steps / B >= 4 x the '
             'longest sequence'))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
