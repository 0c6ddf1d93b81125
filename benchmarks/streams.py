"""8. Streams: per-step forecasting and tagging with the default model.

Long streams from the aeon wheel's data, one key each, through
``pipeline.local_runner --label-kind per_step``: forecasting against
persistence, the training mean and AR(16)/AR(64); tagging (recordings end to
end) against the majority class, window classifiers and the per-recording
ceiling. BENCHMARKS.md section 8."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import io
import os
import shlex
import shutil
import sys
import tempfile
import time
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks import harness
from benchmarks import real_data
from benchmarks import ucr

SECTION = 'streams'
TITLE = '## 8. Streams: per-step forecasting and tagging'

FORECAST, TAGGING = 'forecast', 'tagging'
DEFAULT_CASES = ('ACSF1:forecast', 'ItalyPowerDemand:forecast',
                 'Daphnet_S06R02E0:forecast', 'KDD-TSAD_135:forecast',
                 'ACSF1:tagging', 'ArrowHead:tagging', 'BasicMotions:tagging',
                 'JapaneseVowels:tagging')
QUICK_CASES = ('BasicMotions:tagging',)
SEEDS = 3
CEILING_SEEDS = 1

# Long recordings (CSV files): how each split is made and cut.
RECORDINGS = {
    # name: (train fraction of the one file, or None for TRAIN/TEST files;
    #        streams in train, streams in eval)
    'Daphnet_S06R02E0': (0.7, 4, 2),
    'KDD-TSAD_135': (None, 4, 6),
}
MAX_STREAM = 20_000
PER_STREAM = 8          # recordings per tagging stream
SHUFFLE_SEED = 0        # the tagging streams' RNG (not the model's seed)
AR_ORDERS = (16, 64)
WINDOWS = (64, 256)
WINDOW_SAMPLE = 20_000  # steps per split for the window classifier
RIDGE_ALPHA = 1.0
TAGGING_TARGET = 0.85   # x ceiling
MEMORYLESS_MARGIN = 0.10  # "far above": this much above the best window

RESULTS_DIR = os.path.join(harness.ROOT, 'benchmarks', 'results')

log = harness.progress_log('streams')


@dataclasses.dataclass
class Stream:
  """One sequence key: features float64[L, F], labels [L]; ``parts`` are the
  source recordings (tagging) or the first step in the recording
  (forecasting), for the record."""
  key: str
  x: np.ndarray
  y: np.ndarray
  parts: Tuple = ()

  @property
  def length(self) -> int:
    return int(self.x.shape[0])


def tagging_streams(series: Sequence[np.ndarray], classes: Sequence[int],
                    prefix: str, *, per_stream: int = PER_STREAM,
                    seed: int = SHUFFLE_SEED) -> List[Stream]:
  """Recordings shuffled (seeded) and laid end to end, ``per_stream`` to a
  stream (the last one takes the remainder); label = the recording's class
  at each of its steps."""
  if len(series) != len(classes):
    raise ValueError(f'{len(series)} recordings, {len(classes)} classes')
  order = np.random.default_rng(seed).permutation(len(series))
  groups = [order[i:i + per_stream] for i in range(0, len(order), per_stream)]
  ids = ucr.seq_ids(prefix, len(groups))
  out = []
  for key, group in zip(ids, groups):
    x = np.concatenate([np.asarray(series[i], np.float64) for i in group])
    y = np.concatenate([np.full(len(series[i]), int(classes[i]), np.int64)
                        for i in group])
    out.append(Stream(key, x, y, tuple(int(i) for i in group)))
  return out


def time_split(x: np.ndarray, train_fraction: float
              ) -> Tuple[np.ndarray, np.ndarray]:
  """The first ``train_fraction`` of the steps, and the rest."""
  if not 0 < train_fraction < 1:
    raise ValueError(f'train fraction {train_fraction} not in (0, 1)')
  cut = int(round(len(x) * train_fraction))
  return x[:cut], x[cut:]


def forecast_streams(x: np.ndarray, parts: int, prefix: str
                    ) -> List[Stream]:
  """One contiguous segment [L, F] -> ``parts`` streams of equal length with
  label[t] = x0[t+1] (the segment's last step has no next value and is
  dropped, as is a remainder of fewer than ``parts`` steps at the end)."""
  x = np.asarray(x, np.float64)
  feats, labels = x[:-1], x[1:, 0]
  size = len(feats) // parts
  if size < 2:
    raise ValueError(f'{len(x)} steps are too few for {parts} streams')
  ids = ucr.seq_ids(prefix, parts)
  return [Stream(ids[i], feats[i * size:(i + 1) * size],
                 labels[i * size:(i + 1) * size], (i * size,))
          for i in range(parts)]


def cut_long(streams: Sequence[Stream], limit: int = MAX_STREAM
            ) -> List[Stream]:
  """Streams longer than ``limit`` steps cut into ceil(L / limit) pieces of
  near-equal length (keys ``<key>p<i>``)."""
  out = []
  for s in streams:
    if s.length <= limit:
      out.append(s)
      continue
    n = -(-s.length // limit)
    bounds = np.linspace(0, s.length, n + 1).round().astype(int)
    out += [Stream(f'{s.key}p{i}', s.x[a:b], s.y[a:b], s.parts)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
  return out



def read_recording(path: str, text: Optional[str] = None
                  ) -> Tuple[List[str], np.ndarray]:
  """``timestamp,<channel>...,is_anomaly`` -> (channel names, float64[L, C])
  (``timestamp`` and ``is_anomaly`` are not features); bad input stops with
  ``ucr.TsFormatError`` (``path:line: message``)."""
  if text is None:
    try:
      with open(path, newline='') as f:
        text = f.read()
    except OSError as e:
      raise ucr.TsFormatError(path, None, f'cannot read: {e.strerror}') from e
  rows = csv.reader(io.StringIO(text))
  header = [h.strip() for h in next(rows, None) or []]
  keep = [i for i, h in enumerate(header)
          if h.lower() not in ('timestamp', 'is_anomaly')]
  if not keep:
    raise ucr.TsFormatError(path, 1, f'no channel columns in {header} '
                            '(expected a header line)')
  values = []
  for lineno, row in enumerate(rows, start=2):
    err = functools.partial(ucr.TsFormatError, path, lineno)
    if not any(c.strip() for c in row):
      continue
    if len(row) != len(header):
      raise err(f'{len(row)} fields, the header has {len(header)}')
    values.append([])
    for cell in (row[i] for i in keep):
      try:
        values[-1].append(float(cell))
      except ValueError:
        raise err(f'not a number: {cell!r}') from None
    if not all(np.isfinite(values[-1])):
      raise err('missing or infinite value')
  if len(values) < 2:
    raise ucr.TsFormatError(path, None, f'{len(values)} data rows (need 2+)')
  return [header[i] for i in keep], np.asarray(values, np.float64)


def recording_files(source: ucr.Source, name: str) -> Dict[str, Tuple[str,
                                                                      str]]:
  """``{file name: (path, text)}`` of the CSV files of ``<name>/``."""
  out = {}
  if source.is_wheel:
    prefix = f'{ucr.AEON_WHEEL_PREFIX}{name}/'
    with zipfile.ZipFile(source.path) as z:
      for member in z.namelist():
        if member.startswith(prefix) and member.endswith('.csv'):
          out[member[len(prefix):]] = (f'{source.path}!{member}', z.read(
              member).decode('utf-8', errors='replace'))
  elif os.path.isdir(os.path.join(source.path, name)):
    for f in sorted(os.listdir(os.path.join(source.path, name))):
      if f.endswith('.csv'):
        with open(os.path.join(source.path, name, f), newline='') as fh:
          out[f] = (os.path.join(source.path, name, f), fh.read())
  if not out:
    raise ValueError(f'{name}: no CSV files in the {source.describe()}')
  return out


def recording_splits(source: ucr.Source, name: str
                    ) -> Tuple[List[str], np.ndarray, np.ndarray, str]:
  """(channel names, train steps, eval steps, how they were split)."""
  frac = RECORDINGS[name][0]
  files = recording_files(source, name)
  if frac is not None:
    if len(files) != 1:
      raise ValueError(f'{name}: expected one CSV file, found {sorted(files)}')
    (path, text), = files.values()
    names, x = read_recording(path, text)
    train, evals = time_split(x, frac)
    how = (f'one file ({len(x):,} steps) split by time: the first '
           f'{frac:.0%} train, the rest eval')
    return names, train, evals, how
  tr = [f for f in files if f.endswith('_TRAIN.csv')]
  te = [f for f in files if f.endswith('_TEST.csv')]
  if len(tr) != 1 or len(te) != 1:
    raise ValueError(f'{name}: expected one *_TRAIN.csv and one *_TEST.csv, '
                     f'found {sorted(files)}')
  names, train = read_recording(*files[tr[0]])
  enames, test = read_recording(*files[te[0]])
  if enames != names:
    raise ucr.TsFormatError(files[te[0]][0], 1, f'channels {enames}, the '
                            f'train file has {names}')
  n = len(train)
  if len(test) > n and np.array_equal(test[:n], train):
    evals = test[n:]
    how = (f'TRAIN file ({n:,} steps) train; the {len(evals):,} steps of the '
           f'TEST file after its first {n:,} (which repeat TRAIN) eval')
  else:
    evals = test
    how = f'TRAIN file ({n:,} steps) train, TEST file ({len(test):,}) eval'
  return names, train, evals, how


@dataclasses.dataclass
class StreamCase(real_data.Case):
  kind: str = FORECAST
  how: str = ''
  ceiling: Optional[real_data.Case] = None

  @property
  def name(self) -> str:
    return f'{self.dataset} ({self.kind})'

  @property
  def slug(self) -> str:
    return f'{self.dataset}-{self.kind}'



def parse_cases(text: str) -> List[StreamCase]:
  return [StreamCase(name, kind=kind) for name, kind in real_data.parse_items(
      text, '--cases', (FORECAST, TAGGING))]


def _stats(streams: Sequence[Stream], csv_path: str) -> Dict:
  lengths = [s.length for s in streams]
  return {'csv': os.path.abspath(csv_path), 'sequences': len(streams),
          'rows': int(sum(lengths)), 'length_min': int(min(lengths)),
          'length_max': int(max(lengths)),
          'length_mean': round(float(np.mean(lengths)), 2)}


def write_streams(case: StreamCase, splits: Dict[str, List[Stream]],
                  meta: Dict) -> None:
  """``<data_dir>/{train,eval}/<slug>.csv`` and labels.json; fills
  ``case.meta``."""
  nfeat = splits['train'][0].x.shape[1]
  header = (['seq_id', 't'] + [f'x{d}' for d in range(nfeat)] + ['label'])
  classify = meta['task'] == ucr.CLASSIFICATION
  meta = dict(meta, num_features=nfeat,
              feature_names=[f'x{d}' for d in range(nfeat)],
              label_kind='per_step')
  for split, streams in splits.items():
    rows = []
    for s in streams:
      if s.x.shape[1] != nfeat:
        raise ValueError(f'{case.name}: {s.key} has {s.x.shape[1]} channels,'
                         f' not {nfeat}')
      for t in range(s.length):
        rows.append([s.key, str(t)] + [ucr._fmt(v) for v in s.x[t]] + [  # pylint: disable=protected-access
            str(int(s.y[t])) if classify else ucr._fmt(s.y[t])])  # pylint: disable=protected-access
    path = os.path.join(case.data_dir, split, f'{case.slug}.csv')
    ucr._write_csv(path, header, rows)  # pylint: disable=protected-access
    meta[split] = _stats(streams, path)
  harness.write_json(os.path.join(case.data_dir, 'labels.json'), meta,
                     indent=1)
  case.meta = meta


def prepare(case: StreamCase, source: ucr.Source, work: str) -> None:
  case.data_dir = os.path.join(work, 'data', case.slug)
  t0 = time.perf_counter()
  if case.kind == FORECAST and case.dataset in RECORDINGS:
    _, train, evals, how = recording_splits(source, case.dataset)
    _, ntrain, neval = RECORDINGS[case.dataset]
    splits = {'train': cut_long(forecast_streams(train, ntrain, 'train')),
              'eval': cut_long(forecast_streams(evals, neval, 'eval'))}
    case.how = (f'{how}; train cut into {ntrain} streams, eval into {neval}, '
                'of equal length')
    write_streams(case, splits, {
        'dataset': case.dataset, 'task': ucr.REGRESSION, 'forecast': True,
        'label': 'x0 at step t+1'})
  elif case.kind == FORECAST:
    case.meta = ucr.convert(case.dataset, case.data_dir, source,
                            forecast=True)
    longest = max(case.meta[s]['length_max'] for s in ('train', 'eval'))
    if longest > MAX_STREAM:
      raise ValueError(f'{case.name}: series of {longest} steps; cut them '
                       f'(more than {MAX_STREAM})')
    case.how = ('`benchmarks/ucr.py --forecast`: one sequence per series (its '
                'last step dropped)')
  else:
    files = {s: source.read(case.dataset, tag) for s, tag in ucr.SPLITS}
    header = files['train'].header
    if header.task != ucr.CLASSIFICATION:
      raise ValueError(f'{case.name}: not a classification set')
    mapping = ucr.class_mapping(header)
    splits = {}
    for split, data in files.items():
      unknown = sorted({l for l in data.labels if l not in mapping})
      if unknown:
        raise ucr.TsFormatError(data.path, None, f'class labels {unknown} '
                                'are not in the train file')
      splits[split] = cut_long(tagging_streams(
          data.series, [mapping[l] for l in data.labels], split))
    case.how = (f'{len(files["train"].series)} / {len(files["eval"].series)}'
                f' recordings shuffled (seed {SHUFFLE_SEED}), {PER_STREAM} '
                'to a stream')
    write_streams(case, splits, {
        'dataset': case.dataset, 'task': ucr.CLASSIFICATION,
        'num_classes': len(mapping), 'classes': list(mapping)})
    ceiling = real_data.Case(case.dataset)
    ceiling.data_dir = os.path.join(work, 'data', ceiling.slug)
    ceiling.meta = ucr.convert(case.dataset, ceiling.data_dir, source)
    case.ceiling = ceiling
  m = case.meta
  log(f'{case.name}: built ({m["num_features"]} feature(s); train '
      f'{m["train"]["sequences"]} streams / {m["train"]["rows"]:,} steps, '
      f'eval {m["eval"]["sequences"]} / {m["eval"]["rows"]:,}) in '
      f'{time.perf_counter() - t0:.1f} s')


def _mse(errors: Dict[str, float]) -> Dict[str, float]:
  return {'mae': errors['mae'], 'mse': errors['rmse'] ** 2}


def forecast_references(case, train, evals) -> Dict[str, Dict]:
  out = {'mean': _mse(real_data.no_skill(case, train, evals)),
         'persistence': _mse(real_data.persistence(evals))}
  for order in AR_ORDERS:
    out[f'ar{order}'] = _mse(real_data.autoregressive(train, evals, order))
  return out


def window_features(x: np.ndarray, steps: np.ndarray, window: int
                   ) -> np.ndarray:
  """[len(steps), 5F]: mean, std, min, max and last value per channel of
  x[max(0, t - window + 1) : t + 1] for each t in ``steps``."""
  x = np.asarray(x, np.float64)
  nfeat = x.shape[1]
  padded = np.concatenate([np.full((window - 1, nfeat), np.nan), x])
  view = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)
  out = np.empty((len(steps), 5 * nfeat))
  for a in range(0, len(steps), 1024):
    w = view[steps[a:a + 1024]]  # [n, F, window]
    out[a:a + 1024] = np.concatenate(
        [np.nanmean(w, -1), np.nanstd(w, -1), np.nanmin(w, -1),
         np.nanmax(w, -1), x[steps[a:a + 1024]]], axis=1)
  return out


def _sample(seqs, n: int, seed: int):
  """Features of up to ``n`` steps drawn uniformly from all steps."""
  lengths = np.array([len(y) for _, y in seqs])
  total = int(lengths.sum())
  pick = np.sort(np.random.default_rng(seed).choice(
      total, size=min(n, total), replace=False))
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  which = np.searchsorted(starts, pick, side='right') - 1
  return which, pick - starts[which]


def window_classifier(train, evals, window: int, num_classes: int,
                      sample: int = WINDOW_SAMPLE) -> Dict[str, float]:
  """Ridge classifier (one-vs-all targets +-1, standardized features) on
  ``window_features``, fitted on a sample of train steps; accuracy on a
  sample of eval steps."""
  def feats(seqs, seed):
    which, steps = _sample(seqs, sample, seed)
    xs, ys = [], []
    for i in np.unique(which):
      st = steps[which == i]
      xs.append(window_features(seqs[i][0], st, window))
      ys.append(seqs[i][1][st])
    return np.concatenate(xs), np.concatenate(ys)

  xt, yt = feats(train, 1)
  xe, ye = feats(evals, 2)
  mu, sd = xt.mean(0), xt.std(0)
  sd[sd == 0] = 1.0
  a = np.hstack([(xt - mu) / sd, np.ones((len(xt), 1))])
  b = 2.0 * np.eye(num_classes)[yt] - 1.0
  coef = np.linalg.solve(a.T @ a + RIDGE_ALPHA * np.eye(a.shape[1]), a.T @ b)
  pred = np.hstack([(xe - mu) / sd, np.ones((len(xe), 1))]) @ coef
  return {'accuracy': float(np.mean(np.argmax(pred, 1) == ye)),
          'train_steps': int(len(yt)), 'eval_steps': int(len(ye))}


def tagging_references(case, train, evals) -> Dict[str, Dict]:
  ytrain = np.concatenate([y for _, y in train])
  yeval = np.concatenate([y for _, y in evals])
  majority = int(np.argmax(np.bincount(ytrain)))
  out = {'majority': {'accuracy': float(np.mean(yeval == majority))}}
  for w in WINDOWS:
    out[f'window{w}'] = window_classifier(train, evals, w,
                                          case.meta['num_classes'])
  return out



def _g(v: Optional[float]) -> str:
  return '-' if v is None else f'{v:.4g}'


def _secs(results) -> str:
  secs = [r['seconds'] for r in results or ()]
  return ' / '.join(f'{s:.0f}' for s in secs) if secs else '-'


def _stage_secs(results) -> str:
  """Trainer / evaluator seconds of each run (the evaluator's share of the
  trainer's in brackets)."""
  out = [f'{t:.0f} / {e:.0f} ({e / t:.2f})' for t, e in (
      (r.get('trainer_seconds'), r.get('evaluator_seconds'))
      for r in results or ()) if t and e is not None]
  return '; '.join(out) if out else '-'


def _size(meta: Dict) -> str:
  """'streams x mean steps' of train / eval (steps = labelled rows)."""
  return ' / '.join(f'{meta[s]["sequences"]} x '
                    f'{meta[s]["rows"] / meta[s]["sequences"]:.0f}'
                    for s in ('train', 'eval'))


def forecast_rows(entries) -> List[List[str]]:
  rows = []
  for e in (e for e in entries if e['kind'] == FORECAST):
    ref, ours = e['references'], e.get('ours')
    mse = real_data.mean_of(ours, 'mse')
    rows.append([
        e['name'], e['meta']['num_features'], _size(e['meta']),
        real_data.cell(ours, 'mse', '.4g', '.2g')] + [
            _g(ref[k]['mse']) for k in ('persistence', 'mean', 'ar16', 'ar64')
        ] + [real_data.cell(ours, 'mae'), _g(ref['ar16']['mae']), _secs(ours),
             _stage_secs(ours), 'MSE <= AR(16) ' + real_data.judge(
                 None if mse is None else mse <= ref['ar16']['mse'])])
  return rows


def tagging_rows(entries) -> List[List[str]]:
  rows = []
  for e in (e for e in entries if e['kind'] == TAGGING):
    ref, ours = e['references'], e.get('ours')
    acc = real_data.mean_of(ours, 'accuracy')
    ceiling = real_data.mean_of(e.get('ceiling'), 'accuracy')
    memoryless = max(ref[f'window{w}']['accuracy'] for w in WINDOWS)
    checks = ['>= 0.85 x ceiling ' + real_data.judge(
        None if acc is None or ceiling is None else
        acc >= TAGGING_TARGET * ceiling - 1e-9),
              f'>= best window + {MEMORYLESS_MARGIN:g} ' + real_data.judge(
                  None if acc is None else
                  acc >= memoryless + MEMORYLESS_MARGIN - 1e-9) + (
                      '' if acc is None else f' ({acc - memoryless:+.3f})')]
    m = e['meta']
    rows.append([
        e['name'], m['num_classes'], m['num_features'], _size(m),
        real_data.cell(ours, 'accuracy'),
        real_data.cell(e.get('ceiling'), 'accuracy'),
        '-' if acc is None or not ceiling else f'{acc / ceiling:.2f}'] + [
            f'{ref[k]["accuracy"]:.3f}'
            for k in ['majority'] + [f'window{w}' for w in WINDOWS]] + [
                _secs(ours), _stage_secs(ours), _secs(e.get('ceiling')),
                '; '.join(checks)])
  return rows


def render(args, run, entries, seeds, source_text,
           rendered_from: Optional[Tuple[str, str]] = None) -> list:
  if run.seconds is None:
    run.finish()
  blocks = [
      TITLE,
      '**Targets**: per-step forecasting MSE at or below the least-squares '
      'AR(16) on every stream set; tagging accuracy at least '
      f'{TAGGING_TARGET:g} x the ceiling (the default model on the same '
      'recordings with their boundaries known) and far above (at least '
      f'{MEMORYLESS_MARGIN:g} above) the better memoryless window '
      'classifier.',
      [run.preamble(args.quick)] + (
          [f'* Written from {rendered_from[0]} (`--from-results`; date and '
           'load of the first, wall time summed); the runs were made by '
           f'`{rendered_from[1]}`'] if rendered_from else []) + [
          f'* Data: {source_text} (aeon wheel data)',
          f'* Runs: the default model with seeds '
          f'{", ".join(map(str, seeds))} (`--seed`); the tagging ceilings '
          f'with seed(s) {", ".join(map(str, seeds[:CEILING_SEEDS]))}',
          '* Streams:'] + [f'  * {e["name"]}: {e["how"]}' for e in entries],
      'Each stream is one sequence key; `pipeline.local_runner --label-kind '
      'per_step [--task regression] --seed S` with '
      + (f'`{args.runner_args}` added' if args.runner_args
         else 'no other flags') + ', scored at every eval step. AR(p): '
      'least squares on the last p values of x0; tagging: recordings '
      f'shuffled (seed {SHUFFLE_SEED}), {PER_STREAM} to a stream; window w: '
      'a ridge classifier on per-channel statistics of the last w steps; '
      'ceiling: the per-sequence set (section 6). Cells: mean over seeds '
      '(max - min).',
  ]
  frows, trows = forecast_rows(entries), tagging_rows(entries)
  if frows:
    blocks += ['**Forecasting** (MSE, lower is better):',
               harness.table(['stream set', 'channels',
                              'train / eval streams x steps', 'ours MSE',
                              'persistence', 'training mean', 'AR(16)',
                              'AR(64)', 'ours MAE', 'AR(16) MAE', 's/run',
                              'trainer / evaluator s (share)', 'target'],
                             frows, align='lrrrrrrrrrrrl')]
  if trows:
    blocks += ['**Tagging** (per-step accuracy, higher is better):',
               harness.table(['stream set', 'classes', 'channels',
                              'train / eval streams x steps', 'ours',
                              'ceiling (per recording)', 'ours / ceiling',
                              'majority class'] +
                             [f'window {w}' for w in WINDOWS] +
                             ['s/run', 'trainer / evaluator s (share)',
                              's/run (ceiling)', 'target'], trows,
                             align='lrrrrrrrrrrrrl')]
  runs = {}
  for e in entries:
    runs[e['name']] = e.get('ours') or []
    if e.get('ceiling'):
      runs[f'{e["name"]} ceiling'] = e['ceiling']
  note = real_data.settings_note(runs)
  if note:
    blocks.append('* Settings the pipeline chose (from its summary or log; '
                  f'epochs = the limit): {note}.')
  blocks.append(real_data.failed_runs(
      [f'{e["name"]} {k}: {x["error"]}' for e in entries
       for k in ('ours', 'ceiling') for x in e.get(k) or () if 'error' in x]))
  return blocks


def _run(case, seed, work, what, extra=()) -> Dict:
  log(f'{what}: pipeline, seed {seed} ...')
  out = real_data.run_pipeline(case, real_data.OURS, seed, work, extra)
  if 'rmse' in out:
    out['mse'] = out['rmse'] ** 2
  real_data.log_run(log, what, seed, out, ('accuracy', 'mse', 'mae'))
  return out


def from_results(args, run) -> None:
  """The section from earlier results files (each case from the first that
  has it; date and load of the first, wall time summed)."""
  loaded = [harness.read_json(path) for path in args.from_results]
  first = loaded[0]
  by_slug = {}
  for saved in loaded:
    for e in saved['entries']:
      by_slug.setdefault(e['slug'], e)
  run.started = datetime.datetime.fromisoformat(first['started'])
  secs = [x.get('seconds') for x in loaded]
  run.seconds = sum(secs) if None not in secs else None
  run.load_before = first.get('load_before', run.load_before)
  run.load_after = loaded[-1].get('load_after')
  args.runner_args = first.get('runner_args', '')
  harness.write_report(args, SECTION, *render(
      args, run, list(by_slug.values()), first['seeds'], first['source'],
      (', '.join(args.from_results),
       '`; `'.join(x['command'] for x in loaded))))


def main(argv=None) -> int:
  p = harness.parser(__doc__.split('\n')[0], 'seeds', 'data_dir', 'keep',
                     'runner_args', 'from_results')
  p.add_argument('--cases', default=None,
                 help='comma-separated Name:forecast / Name:tagging (default:'
                 f' {",".join(DEFAULT_CASES)}; with --quick: '
                 f'{",".join(QUICK_CASES)})')
  p.add_argument('--results', default=None,
                 help='the JSON results file (default: '
                 'benchmarks/results/streams.json; with --quick: '
                 f'{harness.QUICK_DIR}/streams.json)')
  args = p.parse_args(argv)
  run = harness.Run()
  if args.from_results:
    from_results(args, run)
    return 0
  results_path = args.results or (
      os.path.join(harness.QUICK_DIR, 'streams.json') if args.quick else
      os.path.join(RESULTS_DIR, 'streams.json'))
  try:
    cases = parse_cases(args.cases or ','.join(
        QUICK_CASES if args.quick else DEFAULT_CASES))
    source = ucr.find_source(args.data_dir)
    seeds = list(range(harness.seed_count(args, SEEDS)))
    extra = shlex.split(args.runner_args)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  work = tempfile.mkdtemp(prefix='tss-bench-streams-')
  log(f'work folder {work}; data from the {source.describe()}; '
      f'{len(cases)} case(s), seeds {seeds}')
  try:
    for c in cases:
      prepare(c, source, work)
  except (ValueError, OSError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 1
  entries = []
  for c in cases:
    train = real_data.load_split(c, 'train')
    evals = real_data.load_split(c, 'eval')
    t0 = time.perf_counter()
    refs = (forecast_references(c, train, evals) if c.kind == FORECAST else
            tagging_references(c, train, evals))
    log(f'{c.name}: references in {time.perf_counter() - t0:.1f} s: ' +
        ', '.join(f'{k} {v.get("mse", v.get("accuracy")):.4g}'
                  for k, v in refs.items()))
    entries.append({'name': c.name, 'slug': c.slug, 'kind': c.kind,
                    'how': c.how, 'meta': c.meta, 'references': refs,
                    'ours': [_run(c, seed, work, c.name, extra)
                             for seed in seeds]})
    if c.ceiling is not None:
      entries[-1]['ceiling'] = [
          _run(c.ceiling, seed, work, f'{c.name} ceiling', extra)
          for seed in seeds[:CEILING_SEEDS]]
  blocks = render(args, run, entries, seeds, source.describe())
  saved = {'started': run.started.isoformat(), 'command': harness.command_line(),
           'seconds': run.seconds, 'load_before': run.load_before,
           'load_after': run.load_after, 'machine': harness.machine(),
           'versions': harness.versions(), 'seeds': seeds,
           'ceiling_seeds': CEILING_SEEDS,
           'runner_args': args.runner_args,
           'source': f'{source.describe()}', 'entries': entries}
  harness.write_report(args, SECTION, *blocks)
  harness.write_json(results_path, saved, indent=1)
  log(f'results: {results_path}; run took {run.seconds:.0f} s')
  if not args.keep:
    shutil.rmtree(work, ignore_errors=True)
  else:
    log(f'kept {work}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
