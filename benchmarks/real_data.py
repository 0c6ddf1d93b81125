"""6. Real public data (UCR/UEA): the default model against baselines.

Each set (converted by ``benchmarks/ucr.py``) through ``pipeline.local_runner``
with no tuning flags, scored on the TEST split, against a plain stateful LSTM
(a), a Keras pad-to-max LSTM (b), no skill (c), published ROCKET (d), the LRU
(e, ``--models lru``), persistence and AR(16). BENCHMARKS.md section 6."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks import harness
from benchmarks import ucr

SECTION = 'real_data'
TITLE = '## 6. Real public data (UCR/UEA)'

DEFAULT_CASES = ('GunPoint', 'ItalyPowerDemand', 'ArrowHead', 'BasicMotions',
                 'JapaneseVowels', 'Covid3Month', 'ItalyPowerDemand:forecast',
                 'ACSF1')
QUICK_CASES = ('ItalyPowerDemand',)
SEEDS = 3

# (b) Keras pad-to-max LSTM.
KERAS_UNITS = 64
KERAS_EPOCHS = 50
KERAS_BATCH = 32
KERAS_LEARNING_RATE = 1e-3
# Forecasting baseline.
AR_ORDER = 16
# Published ROCKET test accuracies (angus924/rocket, results/results_ucr.csv).
ROCKET = {'ACSF1': 0.886, 'ArrowHead': 0.814, 'GunPoint': 1.000,
          'ItalyPowerDemand': 0.970}
ROCKET_MARGIN = 0.02

LSTM_MODULE = os.path.join(harness.ROOT, 'benchmarks', 'lstm_module.py')
RUN_TIMEOUT = 4 * 3600  # seconds, one pipeline run

OURS, PLAIN, KERAS, LRU = 'ours', 'plain', 'keras', 'lru'
MODELS = (OURS, PLAIN, KERAS, LRU)
DEFAULT_MODELS = (OURS, PLAIN, KERAS)
PIPELINE_MODELS = (OURS, PLAIN, LRU)
LRU_FLAGS = ('--hyperparameters', 'model=lru')

log = harness.progress_log('real_data')


@dataclasses.dataclass
class Case:
  dataset: str
  forecast: bool = False
  # Filled in by prepare():
  data_dir: str = ''
  meta: Dict = dataclasses.field(default_factory=dict)

  @property
  def name(self) -> str:
    return self.dataset + (' (forecast)' if self.forecast else '')

  @property
  def slug(self) -> str:
    return self.dataset + ('-forecast' if self.forecast else '')

  @property
  def task(self) -> str:
    return self.meta['task']

  @property
  def per_step(self) -> bool:
    return self.meta['label_kind'] == 'per_step'

  def runner_flags(self) -> List[str]:
    flags = ['--data-root', self.data_dir, '--key-column', 'seq_id',
             '--order-column', 't', '--label-column', 'label']
    if self.per_step:
      flags += ['--label-kind', 'per_step']
    if self.task == 'regression':
      flags += ['--task', 'regression']
    return flags


def parse_items(text: str, flag: str, kinds: Sequence[str]):
  """``Name[:kind],...`` -> [(name, kind)]; ValueError on a kind not in
  ``kinds`` ('' = none) or an empty list."""
  out = []
  for item in (t.strip() for t in text.split(',')):
    name, _, kind = item.partition(':')
    if item and kind not in kinds:
      raise ValueError(f'{flag}: {item!r}: give ' + ' or '.join(
          f'Name:{k}' if k else 'Name' for k in kinds))
    if item:
      out.append((name.strip(), kind))
  if not out:
    raise ValueError(f'{flag} is empty')
  return out


def parse_cases(text: str) -> List[Case]:
  return [Case(name, forecast=kind == 'forecast')
          for name, kind in parse_items(text, '--datasets', ('', 'forecast'))]


def prepare(cases: Sequence[Case], source: ucr.Source, work: str) -> None:
  have = set(source.datasets())
  missing = [c.dataset for c in cases if c.dataset not in have]
  if missing:
    raise ValueError(f'not in the {source.describe()}: {missing} (have: '
                     f'{sorted(have)})')
  for c in cases:
    c.data_dir = os.path.join(work, 'data', c.slug)
    t0 = time.perf_counter()
    c.meta = ucr.convert(c.dataset, c.data_dir, source, forecast=c.forecast)
    log(f'{c.name}: converted ({c.task}, {c.meta["label_kind"]}, '
        f'{c.meta["num_features"]} feature(s); train '
        f'{c.meta["train"]["sequences"]} sequences / '
        f'{c.meta["train"]["rows"]:,} rows, eval '
        f'{c.meta["eval"]["sequences"]} / {c.meta["eval"]["rows"]:,}) in '
        f'{time.perf_counter() - t0:.1f} s')


def metric_names(case: Case) -> List[str]:
  return ['accuracy'] if case.task == 'classification' else ['mae', 'rmse']


def run_pipeline(case: Case, model: str, seed: Optional[int], work: str,
                 extra: Sequence[str] = ()) -> Dict:
  """One ``pipeline.local_runner`` run (``extra``: more of its flags); its
  eval metrics and wall time."""
  # One output folder per data set: TFX's cache serves ExampleGen ..
  # SequenceBatcher to every run after the first (only the seed or the model
  # module changes), so only the trainer, evaluator and pusher re-run.
  flags = [] if seed is None else ['--seed', str(seed)]
  flags += {PLAIN: ['--module-file', LSTM_MODULE], LRU: list(LRU_FLAGS)}.get(
      model, [])
  logfile = os.path.join(work, 'logs', f'{case.slug}-{model}-seed{seed or 0}'
                         '.log')
  res, summary = harness.run_local_runner(
      case.runner_flags(), os.path.join(work, 'runs', case.slug), logfile,
      flags + list(extra), timeout=RUN_TIMEOUT, interval=0.5)
  return harness.run_result(res, summary, metric_names(case), logfile)


def log_run(logger, what: str, seed, out: Dict, metrics: Sequence[str]):
  """A finished run's progress line: its ``metrics`` or its error, and its
  seconds."""
  shown = {k: round(out[k], 4) for k in metrics if k in out}
  text = (f'FAILED: {out["error"]}' + (f' (log: {out["log"]})' if 'log' in out
                                       else '')
          if 'error' in out else str(shown))
  logger(f'{what} seed {seed}: {text} ({out["seconds"]:.0f} s)')


def load_split(case: Case, split: str):
  """Sequences of one split in key order: list of (features float64[L, F],
  labels [L]: int64 classes or float64 targets)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  seqs, _ = harness.frame_sequences(
      pd.read_csv(case.meta[split]['csv'], dtype={'seq_id': str}),
      case.meta['feature_names'], 'float64')
  return [(s.features, s.labels) for s in seqs]


def _errors(pred, target) -> Dict[str, float]:
  d = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
  return {'mae': float(np.mean(np.abs(d))),
          'rmse': float(np.sqrt(np.mean(d * d)))}


def no_skill(case: Case, train, evals) -> Dict[str, float]:
  """Majority class / training mean, scored like the pipeline."""
  if case.task == 'classification':
    train_y = np.array([y[-1] for _, y in train])
    eval_y = np.array([y[-1] for _, y in evals])
    majority = int(np.argmax(np.bincount(train_y)))
    return {'accuracy': float(np.mean(eval_y == majority))}
  if case.per_step:
    mean = float(np.mean(np.concatenate([y for _, y in train])))
    target = np.concatenate([y for _, y in evals])
  else:
    mean = float(np.mean([y[-1] for _, y in train]))
    target = np.array([y[-1] for _, y in evals])
  return _errors(np.full(target.shape, mean), target)


def persistence(evals) -> Dict[str, float]:
  """Next value = this value (x0[t] for label x0[t+1])."""
  pred = np.concatenate([x[:, 0] for x, _ in evals])
  return _errors(pred, np.concatenate([y for _, y in evals]))


def _lags(x0, order: int):
  """[L, order + 1]: x0[t], x0[t-1], ..., x0[t-order+1] (zeros before the
  series' start) and a constant 1."""
  n = x0.size
  out = np.zeros((n, order + 1), np.float64)
  for k in range(min(order, n)):
    out[k:, k] = x0[:n - k]
  out[:, order] = 1.0
  return out


def ar_coefficients(train, order: int = AR_ORDER):
  """Least-squares AR(order) on x0 fitted on the train rows: the weights of
  x0[t], ..., x0[t-order+1], then the intercept."""
  a = np.concatenate([_lags(x[:, 0], order) for x, _ in train])
  b = np.concatenate([y for _, y in train])
  coef, *_ = np.linalg.lstsq(a, b, rcond=None)
  return coef


def autoregressive(train, evals, order: int = AR_ORDER) -> Dict[str, float]:
  """Least-squares linear AR(order) on x0, fitted on the train rows."""
  coef = ar_coefficients(train, order)
  pred = np.concatenate([_lags(x[:, 0], order) @ coef for x, _ in evals])
  return _errors(pred, np.concatenate([y for _, y in evals]))


def _padded(seqs, length: int, mean, std):
  nfeat = seqs[0][0].shape[1]
  x = np.zeros((len(seqs), length, nfeat), np.float32)
  y = np.zeros((len(seqs), length), np.float32)
  mask = np.zeros((len(seqs), length), np.float32)
  for i, (f, lab) in enumerate(seqs):
    n = f.shape[0]
    x[i, :n] = (f - mean) / std
    y[i, :n] = lab
    mask[i, :n] = 1.0
  return x, y, mask


def keras_pad_to_max(case: Case, train, evals, seed: int,
                     shuffle: bool = True,
                     learning_rate: float = KERAS_LEARNING_RATE,
                     clip_global_norm: Optional[float] = None,
                     cell: str = 'lstm') -> Dict[str, float]:
  """(b): whole sequences padded to the longest, masked, z-scored,
  LSTM(64) (``cell='gru'``: GRU(64)) -> Dense, Adam; ``shuffle=False`` keeps
  the split's order every epoch; ``clip_global_norm`` None: no clipping.
  Returns the eval metrics."""
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  keras.backend.clear_session()
  keras.utils.set_random_seed(seed)
  allrows = np.concatenate([f for f, _ in train])
  mean = allrows.mean(axis=0)
  std = allrows.std(axis=0)
  std[std == 0] = 1.0
  length = max(f.shape[0] for f, _ in list(train) + list(evals))
  xt, yt, mt = _padded(train, length, mean, std)
  xe, ye, me = _padded(evals, length, mean, std)
  nfeat = xt.shape[2]
  features = keras.Input((length, nfeat), name='features')
  mask_in = keras.Input((length,), dtype='bool', name='mask')
  h = {'lstm': keras.layers.LSTM, 'gru': keras.layers.GRU}[cell](
      KERAS_UNITS, return_sequences=case.per_step,
      kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
      recurrent_initializer=keras.initializers.Orthogonal(seed=seed + 1))(
          features, mask=mask_in)
  classify = case.task == 'classification'
  units = case.meta['num_classes'] if classify else 1
  out = keras.layers.Dense(
      units, kernel_initializer=keras.initializers.GlorotUniform(
          seed=seed + 2))(h)
  model = keras.Model([features, mask_in], out)
  loss = (keras.losses.SparseCategoricalCrossentropy(from_logits=True)
          if classify else keras.losses.MeanSquaredError())
  model.compile(optimizer=keras.optimizers.Adam(
      learning_rate, global_clipnorm=clip_global_norm), loss=loss)
  last_t = mt.sum(axis=1).astype(np.int64) - 1
  if case.per_step:
    target, weight = yt[..., None], mt
  else:
    target = yt[np.arange(len(yt)), last_t]
    target = target.astype(np.int64) if classify else target[:, None]
    weight = None
  model.fit([xt, mt.astype(bool)], target, sample_weight=weight,
            batch_size=KERAS_BATCH, epochs=KERAS_EPOCHS, shuffle=shuffle,
            verbose=0)
  pred = model.predict([xe, me.astype(bool)], batch_size=KERAS_BATCH,
                       verbose=0)
  if case.per_step and not classify:
    real = me.astype(bool)
    return _errors(pred[..., 0][real], ye[real])
  eval_y = ye[np.arange(len(ye)), me.sum(axis=1).astype(np.int64) - 1]
  if classify:
    return {'accuracy': float(np.mean(np.argmax(pred, axis=-1) ==
                                      eval_y.astype(np.int64)))}
  return _errors(pred[:, 0], eval_y)


def timed_keras(case: Case, train, evals, seed: int, **kwargs) -> Dict:
  """``keras_pad_to_max`` and its seconds; a failure recorded as its
  error line."""
  t0 = time.perf_counter()
  try:
    out = keras_pad_to_max(case, train, evals, seed, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    out = {'error': f'{type(e).__name__}: {str(e).splitlines()[0]}'
                    if str(e) else type(e).__name__}
  out['seconds'] = time.perf_counter() - t0
  return out


def _values(results: List[Dict], metric: str) -> List[float]:
  return [r[metric] for r in results if metric in r and 'error' not in r]


def cell(results: Optional[List[Dict]], metric: str, fmt: str = '.3f',
         spread: Optional[str] = None) -> str:
  """'mean (spread)' over seeds (formats ``fmt``, ``spread``: default
  ``fmt``); the error of a failed run; '-' if none."""
  if not results:
    return '-'
  vals = _values(results, metric)
  failed = [r['error'] for r in results if 'error' in r]
  if not vals:
    return 'failed (below)' if failed else '-'
  text = f'{statistics.mean(vals):{fmt}}'
  if len(vals) > 1:
    text += f' ({max(vals) - min(vals):{spread or fmt}})'
  if failed:
    text += f' [{len(failed)} of {len(results)} failed]'
  return text


def mean_of(results: Optional[List[Dict]], metric: str) -> Optional[float]:
  vals = _values(results or [], metric)
  return statistics.mean(vals) if vals else None


def seconds_cell(results: Optional[List[Dict]]) -> str:
  """'whole pipeline s / trainer s / evaluator s': the first (uncached)
  run's wall time, and the trainer's and the evaluator's means over runs."""
  if not results:
    return '-'
  cells = [f'{results[0]["seconds"]:.0f}']
  for key in ('trainer_seconds', 'evaluator_seconds'):
    vals = [r[key] for r in results if r.get(key) is not None]
    cells.append(f'{statistics.mean(vals):.0f}' if vals else '-')
  return ' / '.join(cells)


def fixed(v: Optional[float], digits: int = 3) -> str:
  return '-' if v is None else f'{v:.{digits}f}'


def judge(ok: Optional[bool]) -> str:
  return 'n/a' if ok is None else harness.verdict(ok)


def _md(text: str) -> str:
  return text.replace('|', '\\|').replace('\n', ' ')


def failed_runs(failed: Sequence[str]) -> Optional[List[str]]:
  """The bullet list of failed runs (``name model: error`` lines)."""
  if not failed:
    return None
  return ['* Failed runs (the error line; full logs under the work folder\'s '
          '`logs/`):'] + [f'  * {_md(f)}' for f in sorted(set(failed))]


def _shape(meta: Dict) -> List[str]:
  """'train / eval' sequences and the length (range) of a set."""
  lo = min(meta['train']['length_min'], meta['eval']['length_min'])
  hi = max(meta['train']['length_max'], meta['eval']['length_max'])
  return [f'{meta["train"]["sequences"]} / {meta["eval"]["sequences"]}',
          str(lo) if lo == hi else f'{lo}..{hi}']


def _model_cells(r: Dict, metric: str, with_lru: bool) -> List[str]:
  return [cell(r.get(k), metric)
          for k in (OURS, PLAIN, KERAS) + ((LRU,) if with_lru else ())]


def classification_rows(cases, res, with_lru=False) -> List[List[str]]:
  rows = []
  for c in cases:
    if c.task != 'classification':
      continue
    r = res[c.slug]
    ours = mean_of(r.get(OURS), 'accuracy')
    rocket = ROCKET.get(c.dataset)
    lstm = [mean_of(r.get(k), 'accuracy') for k in (PLAIN, KERAS)]
    checks = []
    if rocket is not None:
      checks.append('ROCKET-2pt ' + judge(
          None if ours is None else ours >= rocket - ROCKET_MARGIN - 1e-9))
    if any(v is not None for v in lstm):
      checks.append('LSTMs ' + judge(
          None if ours is None else all(ours > v for v in lstm
                                        if v is not None)))
    lru = mean_of(r.get(LRU), 'accuracy')
    if with_lru and lru is not None and lstm[0] is not None:
      checks.append('LRU >= (a) ' + judge(lru >= lstm[0]))
    rows.append([c.name, c.meta['num_classes'], c.meta['num_features']] +
                _shape(c.meta) + _model_cells(r, 'accuracy', with_lru) + [
                    fixed(r['no_skill']['accuracy']), fixed(rocket),
                    seconds_cell(r.get(OURS)), '; '.join(checks) or '-'])
  return rows


def regression_rows(cases, res, with_lru=False) -> List[List[str]]:
  rows = []
  for c in cases:
    if c.task != 'regression':
      continue
    r = res[c.slug]
    for metric in ('mae', 'rmse'):
      ours = mean_of(r.get(OURS), metric)
      if c.per_step:
        ref = r.get('ar', {}).get(metric)
        check = ('<= AR(16) ' + judge(None if ours is None or ref is None
                                       else ours <= ref))
      else:
        ref = r['no_skill'][metric]
        check = '< training mean ' + judge(None if ours is None else
                                           ours < ref)
      lru, plain = mean_of(r.get(LRU), metric), mean_of(r.get(PLAIN), metric)
      if with_lru and lru is not None and plain is not None:
        check += '; LRU <= (a) ' + judge(lru <= plain)
      rows.append(
          [c.name, c.meta['label_kind'].replace('_', '-'), metric.upper()] +
          _shape(c.meta) + _model_cells(r, metric, with_lru) + [
              fixed(r['no_skill'][metric]),
              fixed(r.get('persistence', {}).get(metric)),
              fixed(r.get('ar', {}).get(metric)),
              seconds_cell(r.get(OURS)), check])
  return rows


def settings_note(runs: Dict[str, List[Dict]]) -> Optional[str]:
  """What the pipeline chose in each named list of runs (if summary.json
  reports it)."""
  parts = []
  for name, results in runs.items():
    ok = [x for x in results if 'error' not in x]
    got = {}
    for k in ('batch_size', 'num_unroll', 'epochs'):
      vals = sorted({x[k] for x in ok if k in x})
      if vals:
        got[k] = '/'.join(str(v) for v in vals)
    ran = sorted(x['epochs_run'] for x in ok if 'epochs_run' in x)
    if ran:
      got['epochs run'] = (str(ran[0]) if ran[0] == ran[-1] else
                           f'{ran[0]}..{ran[-1]}')
    if got:
      parts.append(f'{name} ' + ', '.join(f'{k}={v}' for k, v in
                                          got.items()))
  return '; '.join(parts) if parts else None


def rates_note(cases, res) -> Optional[str]:
  """Each pipeline model's training rate per data set (``training_rate``),
  mean over its runs that report one."""
  names = {OURS: 'ours', PLAIN: 'plain LSTM (a)', LRU: 'LRU (e)'}
  parts = []
  for c in cases:
    cells = []
    for model, label in names.items():
      rates = [x['real_steps_per_sec'] for x in res[c.slug].get(model, [])
               if 'real_steps_per_sec' in x]
      if rates:
        cells.append(f'{label} {sum(rates) / len(rates):,.0f}')
    if cells:
      parts.append(f'{c.name}: ' + ', '.join(cells))
  return '; '.join(parts) if parts else None


def runner_args_note(cases, res) -> Optional[str]:
  """The line naming the extra local runner flags (``--runner-args``) the
  pipeline runs had, from their own record; None if none had any."""
  flags = sorted({' '.join(x['runner_args']) for c in cases
                  for m in PIPELINE_MODELS
                  for x in res[c.slug].get(m, []) if x.get('runner_args')})
  if not flags:
    return None
  return ('* Pipeline runs with more local runner flags (`--runner-args`): '
          + '; '.join(f'`{f}`' for f in flags))


def write(args, run, cases, res, seeds, source) -> None:
  run.finish()
  # From the runs' own record, so that --from-results renders it too.
  keras_fixed = any(x.get('shuffle') is False for c in cases
                    for x in res[c.slug].get(KERAS, []))
  with_lru = any(res[c.slug].get(LRU) for c in cases)  # The (e) column.
  lru_col = ['LRU model (e)'] if with_lru else []
  preamble = [
      run.preamble(args.quick),
      f'* UCR/UEA files: {source.describe()} (aeon wheel data, read by '
      '`benchmarks/ucr.py`); metrics on the archive\'s TEST split (the '
      '`eval/` folder)',
      f'* Runs: seeds {", ".join(str(s) for s in seeds)} (`--seed`) for the '
      'default model; the LSTM baselines (a) and (b) with the first '
      f'{args.baseline_seeds} of them', runner_args_note(cases, res)]
  if args.from_results:
    preamble.append(
        '* Written from the `results.json` of earlier runs of this script '
        '(`--from-results`; the figures, the per-run wall times and the '
        'settings are theirs, the date and load above are of this '
        'rendering): ' + ', '.join(f'`{p}`' for p in args.from_results))
  if args.baselines_from:
    preamble.append(
        '* The LSTM baselines (a) and (b) (figures and wall times) of the '
        'data sets found there are taken from the `results.json` of an '
        'earlier run of this script (`--baselines-from`): '
        + ', '.join(f'`{p}`' for p in args.baselines_from))
  blocks = [
      TITLE,
      '**Targets**: accuracy within 2 points of the published ROCKET '
      'figure; ahead of both LSTM baselines (plain stateful LSTM on the same '
      'batches, Keras pad-to-max LSTM); MAE and RMSE below the training-mean '
      'predictor on regression; at or below the linear AR(16) on per-step '
      'forecasting.',
      [line for line in preamble if line],
      'Each data set: `python -m benchmarks.ucr --dataset <Name> --out <dir>` '
      '(`--forecast`: label[t] = x0[t+1]), then `pipeline.local_runner` '
      'with no tuning flags; scores from `summary.json`. (a) = '
      '`--module-file benchmarks/lstm_module.py`; (b) = `tf_keras` `fit`, '
      f'LSTM({KERAS_UNITS}), {KERAS_EPOCHS} epochs of Adam '
      f'(lr {KERAS_LEARNING_RATE:g}, batch {KERAS_BATCH})'
      + (', `--keras-fixed-order`' if keras_fixed else '') + '; ROCKET = '
      'Dempster et al. 2020. Cells: mean over runs (max - min). "s/run" = '
      'the first run\'s wall s / trainer s / evaluator s (means).',
      '"LRU model" = `' + ' '.join(LRU_FLAGS) + '`, run with the baselines\' '
      'seeds.' if with_lru else None]
  crow = classification_rows(cases, res, with_lru)
  if crow:
    blocks += ['**Classification** (accuracy, higher is better):',
               harness.table(['data set', 'classes', 'features',
                              'train / eval seqs', 'length', 'ours (default)',
                              'plain LSTM (a)', 'Keras LSTM (b)'] + lru_col + [
                              'majority class (c)', 'ROCKET (d)', 's/run',
                              'targets'], crow,
                             align='lrrrrrrr' + 'r' * len(lru_col) + 'rrrl')]
  rrow = regression_rows(cases, res, with_lru)
  if rrow:
    blocks += ['**Regression and per-step forecasting** (lower is better):',
               harness.table(['data set', 'labels', 'metric',
                              'train / eval seqs', 'length', 'ours (default)',
                              'plain LSTM (a)', 'Keras LSTM (b)'] + lru_col + [
                              'training mean (c)', 'persistence',
                              f'AR({AR_ORDER})', 's/run', 'target'], rrow,
                             align='lllrrrrr' + 'r' * len(lru_col) + 'rrrrl')]
  note = settings_note({c.name: res[c.slug].get(OURS, []) for c in cases})
  rates = rates_note(cases, res)
  blocks.append(([f'* Settings the pipeline chose for the default model (from '
                  f'its summary or log; epochs = the limit): {note}.']
                 if note else []) + (
      [f'* Training rate, real (unpadded) time steps per second of the run '
       'that made the exported model, over its epochs after the first (its '
       f'`history.json`), mean over runs: {rates}.'] if rates else []))
  blocks.append(failed_runs([f'{c.name} {k}: {x["error"]}' for c in cases
                             for k in PIPELINE_MODELS
                             for x in res[c.slug].get(k, []) if 'error' in x]))
  harness.write_report(args, SECTION, *blocks)


def run_case(c: Case, args, wanted, seeds, earlier: Dict, work: str,
             runner_args) -> Dict:
  """The references, the pipeline runs and the Keras baseline of one set
  (the baselines from ``earlier`` when it has both)."""
  r = {}
  train, evals = load_split(c, 'train'), load_split(c, 'eval')
  r['no_skill'] = no_skill(c, train, evals)
  if c.per_step:
    r['persistence'] = persistence(evals)
    r['ar'] = autoregressive(train, evals)
  log(f'{c.name}: no-skill {r["no_skill"]}' + (
      f', persistence {r["persistence"]}, AR({AR_ORDER}) {r["ar"]}'
      if c.per_step else ''))
  reused = all(m in earlier for m in (PLAIN, KERAS))
  if reused:
    r[PLAIN], r[KERAS] = earlier[PLAIN], earlier[KERAS]
    log(f'{c.name}: LSTM baselines (a) and (b) from --baselines-from')
  baseline_seeds = seeds[:max(1, args.baseline_seeds)]
  for model in (m for m in PIPELINE_MODELS if m in wanted):
    if model == PLAIN and reused:
      continue
    for seed in (seeds if model == OURS else baseline_seeds):
      log(f'{c.name}: pipeline, {model} model, seed {seed} ...')
      out = run_pipeline(c, model, seed, work, runner_args)
      if runner_args:
        out['runner_args'] = runner_args
      r.setdefault(model, []).append(out)
      log_run(log, f'{c.name}: {model}', seed, out, metric_names(c))
  if not reused and KERAS in wanted:
    for seed in baseline_seeds:
      out = timed_keras(c, train, evals, seed,
                        shuffle=not args.keras_fixed_order)
      if args.keras_fixed_order:
        out['shuffle'] = False
      r.setdefault(KERAS, []).append(out)
      log_run(log, f'{c.name}: Keras pad-to-max LSTM', seed, out,
              metric_names(c))
  return r


def main(argv=None) -> int:
  p = harness.parser(__doc__.split('\n')[0], 'seeds', 'data_dir', 'keep',
                     'runner_args', 'from_results')
  p.add_argument('--datasets', default=None,
                 help='comma-separated names, "Name:forecast" for next-value '
                 f'forecasting (default {",".join(DEFAULT_CASES)})')
  p.add_argument('--baseline-seeds', type=int, default=1,
                 help='runs of each LSTM baseline (the first N seeds)')
  p.add_argument('--models', default=','.join(DEFAULT_MODELS),
                 help=f'of {",".join(MODELS)}')
  p.add_argument('--keras-fixed-order', action='store_true',
                 help='Keras (b) fits with shuffle=False')
  p.add_argument('--baselines-from', nargs='+', default=None, metavar='JSON',
                 help='take (a) and (b) from these results.json files')
  args = p.parse_args(argv)
  wanted = [m for m in args.models.split(',') if m]
  unknown = sorted(set(wanted) - set(MODELS))
  if unknown or not wanted:
    print(f'error: --models {args.models!r}: unknown {unknown}; choose from '
          f'{",".join(MODELS)}', file=sys.stderr)
    return 2
  if args.baselines_from and args.from_results:
    print('error: --baselines-from runs the default model only: not with '
          '--from-results', file=sys.stderr)
    return 2
  try:
    cases = parse_cases(args.datasets or ','.join(
        QUICK_CASES if args.quick else DEFAULT_CASES))
    source = ucr.find_source(args.data_dir)
    seeds = list(range(harness.seed_count(args, SEEDS)))
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  run = harness.Run()
  work = tempfile.mkdtemp(prefix='tss-bench-real-')
  log(f'work folder {work}; data from the {source.describe()}')
  try:
    prepare(cases, source, work)
  except (ValueError, OSError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 1
  res: Dict[str, Dict] = {}
  if args.from_results:
    # Each entry (a model's runs, a reference) from the first file that
    # has it: a run of one model joins another of the rest.
    for path in args.from_results:
      for slug, r in harness.read_json(path).items():
        for key, value in r.items():
          res.setdefault(slug, {}).setdefault(key, value)
    missing = [c.name for c in cases if c.slug not in res]
    if missing:
      print(f'error: no results for {missing} in {args.from_results}',
            file=sys.stderr)
      return 2
    write(args, run, cases, res, seeds, source)
    return 0
  earlier: Dict[str, Dict] = {}
  for path in args.baselines_from or ():
    for slug, r in harness.read_json(path).items():
      earlier.setdefault(slug, r)
  for c in cases:
    res[c.slug] = run_case(c, args, wanted, seeds, earlier.get(c.slug, {}),
                           work, shlex.split(args.runner_args))
  write(args, run, cases, res, seeds, source)
  harness.write_json(os.path.join(work, 'results.json'),
                     {c.slug: res[c.slug] for c in cases}, indent=1)
  log(f'results: {os.path.join(work, "results.json")}')
  if not args.keep:
    shutil.rmtree(os.path.join(work, 'data'), ignore_errors=True)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
