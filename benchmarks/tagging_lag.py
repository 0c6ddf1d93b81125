"""11. Tagging streams: per-step accuracy by steps since the recording changed.

Section 8's tagging streams scored by each eval step's position in its
recording, against the per-recording model given the first t steps (the
prefix ceiling) and whole. BENCHMARKS.md section 11."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np

from benchmarks import harness
from benchmarks import real_data
from benchmarks import streams
from benchmarks import ucr

SECTION = 'tagging_lag'
TITLE = ('## 11. Tagging: accuracy by steps since the recording changed')
DEFAULT_CASES = ('ArrowHead:tagging', 'JapaneseVowels:tagging')
QUICK_CASE = 'JapaneseVowels:tagging'
# Position buckets: [lo, hi) steps since the recording started.
BUCKETS = ((0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 128),
           (128, 256), (256, None))
# Prefix lengths the ceiling model is given: every one up to 64, then a grid.
DENSE_UP_TO = 64
GRID_STEP = 16

log = harness.progress_log('tagging_lag')


def eval_streams(case: streams.StreamCase, source: ucr.Source
                ) -> Tuple[List[streams.Stream], List[np.ndarray]]:
  """The eval streams exactly as ``streams.prepare`` builds them, and the
  eval recordings (the ceiling's eval sequences, in file order)."""
  data = source.read(case.dataset, 'TEST')
  mapping = ucr.class_mapping(source.read(case.dataset, 'TRAIN').header)
  built = streams.tagging_streams(data.series,
                                  [mapping[l] for l in data.labels], 'eval')
  if any(s.length > streams.MAX_STREAM for s in built):
    raise ValueError(f'{case.name}: a stream is cut (> {streams.MAX_STREAM} '
                     'steps); positions would not line up')
  return built, [np.asarray(s, np.float64) for s in data.series]


def _as_read(case: streams.StreamCase, built: Sequence[streams.Stream]
            ) -> List[streams.Stream]:
  """The built eval streams with the features as the pipeline read them
  (the stream CSV, in key order), checked against the build."""
  read = real_data.load_split(case, 'eval')
  ordered = sorted(built, key=lambda s: s.key)
  if len(read) != len(ordered) or any(
      x.shape != s.x.shape or not np.array_equal(y, s.y)
      for s, (x, y) in zip(ordered, read)):
    raise ValueError(f'{case.name}: the eval streams read differ from the '
                     'ones built')
  return [streams.Stream(s.key, x, s.y, s.parts)
          for s, (x, _) in zip(ordered, read)]


def positions(stream: streams.Stream,
              recordings: Sequence[np.ndarray]) -> np.ndarray:
  """Each step's position in its recording (0 where a recording starts)."""
  return np.concatenate([np.arange(len(recordings[i])) for i in stream.parts])


def _serving(run_dir: str, columns: Sequence[str]):
  """The run's ``serving_default`` and, for data whose feature columns are
  ``columns``, the column order it takes (``spec.feature_names``)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  summary = harness.read_json(os.path.join(run_dir, 'summary.json'))
  names = harness.read_json(os.path.join(
      summary['model_uri'], 'stateful', 'spec.json'))['feature_names']
  loaded = tf.saved_model.load(os.path.join(summary['model_uri'],
                                            'Format-Serving'))
  fn = loaded.signatures['serving_default']
  fn.order = [list(columns).index(n) for n in names]
  return fn


def _classes(fn, sequences: Sequence[np.ndarray],
             lengths: Sequence[int]) -> np.ndarray:
  """``classes`` of ``serving_default`` for zero-padded ``sequences``
  (columns in the data's order, reordered to the model's)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  longest = max(x.shape[0] for x in sequences)
  feats = np.zeros((len(sequences), longest, sequences[0].shape[1]),
                   np.float32)
  for i, x in enumerate(sequences):
    feats[i, :x.shape[0]] = x[:, fn.order]
  out = fn(features=tf.constant(feats),
           lengths=tf.constant(np.asarray(lengths, np.int64)))
  return out['classes'].numpy()


def stream_accuracy(run_dir: str, columns: Sequence[str],
                    built: Sequence[streams.Stream],
                    recordings: Sequence[np.ndarray]) -> Dict:
  """Per-step correctness of the stream model and each step's position."""
  fn = _serving(run_dir, columns)
  return {'correct': np.concatenate([_classes(fn, [s.x], [s.length])[0] == s.y
                                     for s in built]),
          'position': np.concatenate([positions(s, recordings)
                                      for s in built])}


def prefix_ceiling(run_dir: str, columns: Sequence[str],
                   recordings: Sequence[np.ndarray],
                   labels: np.ndarray) -> Dict[int, float]:
  """Accuracy of the per-recording model given each recording's first t
  steps, for the t of ``_prefix_lengths``; recordings shorter than t are
  left out at that t."""
  fn = _serving(run_dir, columns)
  longest = max(len(r) for r in recordings)
  out = {}
  for t in _prefix_lengths(longest):
    keep = [i for i, r in enumerate(recordings) if len(r) >= t]
    classes = _classes(fn, [recordings[i][:t] for i in keep], [t] * len(keep))
    out[t] = float(np.mean(classes == labels[keep]))
  return out


def _prefix_lengths(longest: int) -> List[int]:
  dense = list(range(1, min(DENSE_UP_TO, longest) + 1))
  return dense + list(range(DENSE_UP_TO + GRID_STEP, longest + 1, GRID_STEP))


def bucket_rows(ours: Dict, prefix: Dict[int, float], ceiling: float,
                longest: int) -> List[Dict]:
  rows = []
  for lo, hi in BUCKETS:
    if lo >= longest:
      break
    top = longest if hi is None else min(hi, longest)
    sel = (ours['position'] >= lo) & (ours['position'] < top)
    ts = [t for t in prefix if lo < t <= top]
    rows.append({'bucket': f'{lo}-{top - 1}', 'share': float(sel.mean()),
                 'ours': float(ours['correct'][sel].mean()),
                 'prefix_ceiling': (float(np.mean([prefix[t] for t in ts]))
                                    if ts else None),
                 'ceiling': ceiling})
  return rows


def every_step_prefix(prefix: Dict[int, float],
                      lengths: Sequence[int]) -> float:
  """The prefix ceiling over every eval step: step t of a recording (t = 1
  .. its length) scored at prefix t, so each t weighs as many recordings as
  are at least t long. A t between measured prefix lengths (the grid above
  ``DENSE_UP_TO``) takes the largest measured one below it."""
  lengths = np.asarray(lengths)
  measured = sorted(prefix)
  total = weight = 0.0
  for t in range(1, int(lengths.max()) + 1):
    n = float((lengths >= t).sum())
    below = [m for m in measured if m <= t]
    total += n * prefix[below[-1]]
    weight += n
  return total / weight


def main(argv=None) -> int:
  p = harness.parser(__doc__.split('\n')[0], 'data_dir', 'keep')
  p.add_argument('--cases', default=None,
                 help='comma-separated Name:tagging (default: '
                 f'{",".join(DEFAULT_CASES)}; with --quick: {QUICK_CASE})')
  p.add_argument('--seed', type=int, default=0)
  args = p.parse_args(argv)
  run = harness.Run()
  try:
    cases = streams.parse_cases(args.cases or (
        QUICK_CASE if args.quick else ','.join(DEFAULT_CASES)))
    if any(c.kind != streams.TAGGING for c in cases):
      raise ValueError('--cases: tagging cases only (Name:tagging)')
    source = ucr.find_source(args.data_dir)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  work = tempfile.mkdtemp(prefix='tss-bench-tagging-lag-')
  log(f'work folder {work}; {len(cases)} case(s), seed {args.seed}')
  results = []
  for case in cases:
    try:
      results.append(measure(case, source, work, args.seed))
    except RuntimeError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
  harness.write_report(args, SECTION, *render(args, run, results))
  if args.keep:
    log(f'kept {work}')
  else:
    shutil.rmtree(work, ignore_errors=True)
  return 0


def measure(case, source: ucr.Source, work: str, seed: int) -> Dict:
  """One case: its two pipeline runs, then the per-step accuracy by
  position; RuntimeError when a run failed."""
  streams.prepare(case, source, work)
  built, recordings = eval_streams(case, source)
  ours = streams._run(case, seed, work, case.name)  # pylint: disable=protected-access
  ceil = streams._run(case.ceiling, seed, work,  # pylint: disable=protected-access
                      f'{case.name} ceiling')
  for what, res in (('ours', ours), ('ceiling', ceil)):
    if 'error' in res:
      raise RuntimeError(f'{case.name} {what}: {res["error"]}')
  steps = stream_accuracy(os.path.join(work, 'runs', case.slug),
                          case.meta['feature_names'],
                          _as_read(case, built), recordings)
  singles = real_data.load_split(case.ceiling, 'eval')
  prefix = prefix_ceiling(os.path.join(work, 'runs', case.ceiling.slug),
                          case.ceiling.meta['feature_names'],
                          [x for x, _ in singles],
                          np.array([int(y[-1]) for _, y in singles]))
  overall = float(steps['correct'].mean())
  log(f'{case.name}: per-step accuracy {overall:.4f} (summary: '
      f'{ours["accuracy"]:.4f}); ceiling {ceil["accuracy"]:.4f}')
  lengths = [len(r) for r in recordings]
  return {
      'name': case.name, 'ours': ours['accuracy'], 'recomputed': overall,
      'ceiling': ceil['accuracy'], 'steps': int(steps['correct'].size),
      'recordings': len(recordings), 'lengths': (min(lengths), max(lengths)),
      'rows': bucket_rows(steps, prefix, ceil['accuracy'], max(lengths)) + [{
          'bucket': 'every step', 'share': 1.0, 'ours': overall,
          'prefix_ceiling': every_step_prefix(prefix, lengths),
          'ceiling': ceil['accuracy']}]}


def render(args, run, results: List[Dict]) -> list:
  run.finish()
  blocks = [TITLE, run.preamble(args.quick),
            f'"ours" = the default model on the tagging streams (seed '
            f'{args.seed}), by the step\'s position in its recording (0 = the '
            'first step after the unmarked change); "prefix ceiling" = the '
            'per-recording model given the recording\'s first t steps; '
            '"whole ceiling" = section 8\'s ceiling; "recomputed" = ours over '
            'every eval step from the signature.']
  for r in results:
    rows = [[x['bucket'], f'{x["share"]:.0%}'] + [
        real_data.fixed(x[k]) for k in ('ours', 'prefix_ceiling', 'ceiling')
    ] + ['-' if not x['prefix_ceiling'] else
         f'{x["ours"] / x["prefix_ceiling"]:.2f}'] for x in r['rows']]
    every = r['rows'][-1]['prefix_ceiling']
    blocks += [f'**{r["name"]}**: {r["recordings"]} eval recordings of '
               f'{r["lengths"][0]} to {r["lengths"][1]} steps, '
               f'{r["steps"]:,} eval steps; ours {r["ours"]:.3f} (recomputed '
               f'{r["recomputed"]:.3f}), whole ceiling {r["ceiling"]:.3f} '
               f'({r["ours"] / r["ceiling"]:.2f}x); the prefix ceiling over '
               f'every step {every:.3f} ({every / r["ceiling"]:.2f}x the '
               'whole ceiling).',
               harness.table(['steps since the change', 'share of steps',
                              'ours', 'prefix ceiling', 'whole ceiling',
                              'ours / prefix ceiling'], rows, align='lrrrrr')]
  return blocks


if __name__ == '__main__':
  raise SystemExit(main())
