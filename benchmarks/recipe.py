"""13. The training recipe on sets nobody tuned on (issue 47).

A user's plain stateful model trained by the StatefulTrainer at its defaults
(plain LSTM, plain GRU, LRU; ``--variant NAME="FLAGS"``: the plain LSTM with
a candidate rule) against the Keras pad-to-max ``fit`` floor, over seeds, on
``CASES`` (``--data-dir``: comma-separated folders, default $TSS_AEON_DATA
then $TSS_SKTIME_DATA). The rule and the reading: BENCHMARKS.md section 13.

  PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 python -m benchmarks.recipe \\
      [--datasets GunPoint,ItalyPowerDemand] [--models keras,plain,gru,lru]
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

from benchmarks import harness
from benchmarks import real_data
from benchmarks import ucr

SECTION = 'recipe'
TITLE = '## 13. The training recipe on sets nobody tuned on'

CASES = ('ArrowHead', 'BasicMotions', 'GunPoint', 'ItalyPowerDemand',
         'JapaneseVowels', 'OSULeaf', 'PickupGestureWiimoteZ', 'UnitTest',
         'PLAID', 'ACSF1', 'ItalyPowerDemand:forecast', 'ACSF1:forecast')
SEEDS = 3
KERAS, PLAIN, GRU, LRU = 'keras', 'plain', 'gru', 'lru'
# The stronger Keras reference: the same fit with Adam at 3e-3 and
# the gradients clipped to a global norm of 1 (a column, not the floor).
KERAS_STRONG = 'keras_strong'
# The floor of the plain GRU module: the floor's fit of a GRU(64).
KERAS_GRU = 'keras_gru'
# The Keras models (the floor first) and their keras_pad_to_max keywords.
KERAS_MODELS = {KERAS: {}, KERAS_STRONG: {'learning_rate': 3e-3,
                                          'clip_global_norm': 1.0},
                KERAS_GRU: {'cell': 'gru'}}
MODELS = (KERAS, PLAIN, GRU, LRU, KERAS_STRONG, KERAS_GRU)
MODEL_FLAGS = {PLAIN: ['--module-file', real_data.LSTM_MODULE],
               GRU: ['--module-file', real_data.LSTM_MODULE,
                     '--hyperparameters', 'cell=gru'],
               LRU: list(real_data.LRU_FLAGS)}

log = harness.progress_log('recipe')


def score(case: real_data.Case, result: Dict) -> Optional[float]:
  """Higher is better: accuracy, or minus the RMSE."""
  if 'error' in result:
    return None
  if case.task == 'classification':
    return result.get('accuracy')
  rmse = result.get('rmse')
  return None if rmse is None else -rmse


def summarize(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
  """Mean and spread (max - min) of the runs that gave a figure."""
  got = [v for v in values if v is not None]
  if not got:
    return {'mean': None, 'spread': None, 'runs': 0}
  return {'mean': statistics.fmean(got), 'spread': max(got) - min(got),
          'runs': len(got)}


def column_summary(case, res, column: str) -> Dict[str, Optional[float]]:
  """``summarize`` of one column's scores on one set."""
  return summarize([score(case, x)
                    for x in res.get(case.slug, {}).get(column, [])])


def at_or_above(model: Dict, floor: Dict) -> Optional[bool]:
  """The model's mean at least the floor's, less the larger spread."""
  if model['mean'] is None or floor['mean'] is None:
    return None
  slack = max(model['spread'] or 0.0, floor['spread'] or 0.0)
  return model['mean'] >= floor['mean'] - slack


def _cell(s: Dict, sign: float = 1.0, digits: int = 3) -> str:
  """Mean ± half-spread; ``sign`` -1 shows an RMSE (scored as minus it)."""
  if s['mean'] is None:
    return 'n/a'
  return f'{sign * s["mean"]:.{digits}f} ± {s["spread"] / 2:.{digits}f}'


def rows(cases, res, columns) -> List[List[str]]:
  """One row per set: each column's mean ± half-spread, its ratio to the
  Keras floor and whether it is at or above it; seconds."""
  out = []
  for c in cases:
    r = res.get(c.slug, {})
    floor = column_summary(c, res, KERAS)
    sign = 1.0 if c.task == 'classification' else -1.0
    row = [c.name, _cell(floor, sign)]
    for col in columns:
      s = column_summary(c, res, col)
      verdict = at_or_above(s, floor)
      ratio = (s['mean'] / floor['mean'] if s['mean'] is not None and
               floor['mean'] and c.task == 'classification' else
               floor['mean'] / s['mean'] if s['mean'] and floor['mean']
               else None)
      row.append(_cell(s, sign) + (f' ({ratio:.2f}x)' if ratio else '') +
                 ('' if verdict is None else ' ✓' if verdict else ' ✗'))
    secs = [[x['seconds'] for x in r.get(k, []) if 'seconds' in x]
            for k in [KERAS] + list(columns)]
    row.append(' / '.join(f'{statistics.fmean(s):.0f}' if s else '-'
                          for s in secs))
    out.append(row)
  return out


def compare(cases, res, column: str, against: str) -> Dict[str, List[str]]:
  """Sets where ``column``'s mean beats ``against``'s by more than the
  larger spread (``better``), loses by more (``worse``), or neither
  (``level``)."""
  out = {'better': [], 'worse': [], 'level': []}
  for c in cases:
    a, b = column_summary(c, res, column), column_summary(c, res, against)
    if a['mean'] is None or b['mean'] is None:
      continue
    slack = max(a['spread'], b['spread'])
    key = ('better' if a['mean'] > b['mean'] + slack else
           'worse' if a['mean'] < b['mean'] - slack else 'level')
    out[key].append(c.name)
  return out


def reading(cases, res, columns) -> List[str]:
  """The table's reading, computed: each column against the Keras floor,
  each variant against its model's default."""
  lines = []
  for col in columns:
    ran = [v for v in (at_or_above(column_summary(c, res, col),
                                   column_summary(c, res, KERAS))
                       for c in cases) if v is not None]
    lines.append(f'* {col}: at or above the Keras floor on {sum(ran)} of '
                 f'{len(ran)} sets.')
  if GRU in columns and KERAS_GRU in columns:
    ran = {c.name: at_or_above(column_summary(c, res, GRU),
                               column_summary(c, res, KERAS_GRU))
           for c in cases}
    ran = {k: v for k, v in ran.items() if v is not None}
    below = [k for k, v in ran.items() if not v]
    lines.append(f'* {GRU} against its own architecture\'s floor '
                 f'({KERAS_GRU}): at or above on {len(ran) - len(below)} of '
                 f'{len(ran)} sets' + (f' (below: {", ".join(below)}).'
                                       if below else '.'))
  for col in columns:
    # A variant's base: its name less the last word ('plain refit loss'
    # against 'plain refit').
    model, _, variant = col.rpartition(' ')
    if not variant or not model:
      continue
    cmp = compare(cases, res, col, model)
    lines.append(
        f'* {col} against {model}: better beyond the spread on '
        f'{len(cmp["better"])} ({", ".join(cmp["better"]) or "none"}), '
        f'worse on {len(cmp["worse"])} ({", ".join(cmp["worse"]) or "none"}),'
        f' level on {len(cmp["level"])}.')
  return lines


def write(args, run, cases, res, columns) -> None:
  run.seconds = None  # The preamble's time: up to this write.
  not_run = [c for c in CASES if c not in args.datasets.split(',')]
  harness.write_report(
      args, SECTION, TITLE, run.preamble(args.quick),
      'Decided before any rule changed (issue 47, item 7): the sets, '
      'seeds 0 to 2, and the comparison below. Figures: accuracy '
      '(classification) or RMSE (forecasting), mean ± half the spread '
      '(max - min) over seeds; the ratio to the Keras floor (for RMSE '
      'the floor over the model, so above 1x is better); ✓: at or above '
      'the floor (the mean within the larger spread counts as level). '
      'Seconds: mean training seconds (Keras fit; the pipeline '
      'models\' StatefulTrainer component).',
      harness.table(['set', 'Keras fit (floor)'] + list(columns) +
                    ['seconds (' + ' / '.join([KERAS] + list(columns)) +
                     ')'], rows(cases, res, columns)),
      reading(cases, res, columns),
      'The rule for adopting a variant as the default: better beyond the '
      'spread on most sets and worse beyond it on none.',
      [f'* {n}' for n in args.note],
      f'Not run here: {", ".join(not_run)}.' if not_run else None)


def merged_results(paths: Sequence[str]) -> Dict[str, Dict]:
  """Several runs' results.json as one: a later file's column of a set
  adds to (or replaces) the earlier files' column of that name."""
  res: Dict[str, Dict] = {}
  for path in paths:
    with open(path) as f:
      for slug, columns in json.load(f).items():
        res.setdefault(slug, {}).update(columns)
  return res


def from_results(args, run, cases) -> None:
  """The section from earlier runs' results.json (``--from-results``:
  comma-separated, merged by ``merged_results``; their sets, in
  ``--datasets`` order)."""
  res = merged_results(args.from_results.split(','))
  cases = [c for c in cases if c.slug in res]
  columns = []
  for c in cases:
    c.meta = {'task': 'regression' if c.forecast else 'classification',
              'label_kind': 'per_step' if c.forecast else 'per_sequence'}
    columns += [k for k in res[c.slug] if k != KERAS and k not in columns]
  args.datasets = ','.join(c.name.replace(' (forecast)', ':forecast')
                           for c in cases)
  write(args, run, cases, res, columns)


def with_longest(flags: List[str], train) -> List[str]:
  """A variant's flags with ``{longest}`` replaced by the length of the
  longest sequence of ``train`` (``real_data.load_split``'s list)."""
  longest = str(max(len(features) for features, _ in train))
  return [f.replace('{longest}', longest) for f in flags]


def run_plan(models: Sequence[str], variants: Dict[str, List[str]],
             variant_models: Sequence[str], variants_only: bool = False
             ) -> List[tuple]:
  """One seed's runs on one set, in order: ``(model, column, flags)``.

  The Keras models first (the floor, then the others), then the pipeline
  models, each with every variant (``variants``: name to local-runner flags;
  ``''``: the defaults) if it is one of ``variant_models``. ``variants_only``
  leaves out a variant model's defaults (measured in an earlier run).
  """
  ordered = [m for m in KERAS_MODELS if m in models] + [
      m for m in models if m not in KERAS_MODELS]
  plan = []
  for model in ordered:
    if model in KERAS_MODELS:
      plan.append((model, model, []))
      continue
    for name, flags in variants.items():
      if name and model not in variant_models:
        continue
      if not name and variants_only and model in variant_models:
        continue
      plan.append((model, model + (f' {name}' if name else ''), flags))
  return plan


def main(argv=None) -> int:
  p = harness.parser(__doc__.split('\n')[0])
  p.add_argument('--datasets', default=','.join(CASES))
  p.add_argument('--models', default=','.join(MODELS))
  p.add_argument('--seeds', type=int, default=None)
  p.add_argument('--variant', action='append', default=[],
                 metavar='NAME="FLAGS"',
                 help='pipeline models again with these local-runner flags '
                 '({longest}: the set\'s longest training sequence, e.g. '
                 '--num-unroll {longest} for whole sequences)')
  p.add_argument('--variant-models', default=PLAIN,
                 help='the pipeline models the variants run for '
                 '(comma-separated; default: %(default)s)')
  p.add_argument('--variants-only', action='store_true',
                 help='run the variant-models with their variants only, '
                 'not again without (their defaults measured before)')
  p.add_argument('--data-dir', default=None,
                 help='comma-separated folders of <Name>/<Name>_TRAIN.ts')
  p.add_argument('--note', action='append', default=[],
                 help='a bullet of the reading that is not computed; '
                 'repeatable')
  p.add_argument('--from-results', default=None, metavar='JSON',
                 help='write the section from earlier runs\' '
                 'results.json instead of running (comma-separated: '
                 'merged, a later file\'s column replacing an earlier '
                 'one\'s of the same name and set)')
  args = p.parse_args(argv)
  models = [m for m in args.models.split(',') if m]
  if set(models) - set(MODELS):
    print(f'error: --models: choose from {",".join(MODELS)}', file=sys.stderr)
    return 2
  variants = {'': []}
  for text in args.variant:
    name, _, flags = text.partition('=')
    variants[name] = shlex.split(flags)
  variant_models = args.variant_models.split(',')
  cases = real_data.parse_cases(args.datasets)
  nseeds = harness.seed_count(args, SEEDS)
  run = harness.Run()
  if args.from_results:
    from_results(args, run, cases)
    return 0
  work = tempfile.mkdtemp(prefix='tss-bench-recipe-')
  res: Dict[str, Dict] = {}
  folders = (args.data_dir.split(',') if args.data_dir else
             [f for f in (os.environ.get('TSS_AEON_DATA'),
                          os.environ.get('TSS_SKTIME_DATA')) if f] or [None])
  for c in cases:
    for folder in folders:
      try:
        real_data.prepare([c], ucr.find_source(folder, None), work)
        break
      except (ValueError, OSError) as e:
        last = e
    else:
      print(f'error: {c.name}: {str(last).splitlines()[0]}', file=sys.stderr)
      return 1
  columns = []
  for c in cases:
    r = res[c.slug] = {}
    train, evals = real_data.load_split(c, 'train'), real_data.load_split(
        c, 'eval')
    for seed in range(nseeds):
      for model, column, flags in run_plan(models, variants, variant_models,
                                           args.variants_only):
        if column not in columns and column != KERAS:
          columns.append(column)
        if model in KERAS_MODELS:
          out = real_data.timed_keras(c, train, evals, seed,
                                      **KERAS_MODELS[model])
        else:
          given = with_longest(flags, train)
          out = real_data.run_pipeline(c, real_data.OURS, seed, work,
                                       MODEL_FLAGS[model] + given)
          out['seconds'] = out.get('trainer_seconds') or out['seconds']
          out['flags'] = given
        r.setdefault(column, []).append(out)
        real_data.log_run(log, f'{c.name}: {column}', seed, out,
                          real_data.metric_names(c))
        # After every run: a long set stopped part-way keeps its runs.
        with open(os.path.join(work, 'results.json'), 'w') as f:
          json.dump(res, f, indent=1)
    write(args, run, cases[:cases.index(c) + 1], res, columns)
  log(f'results: {os.path.join(work, "results.json")}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
