"""UCR/UEA ``.ts`` time-series archive files -> the project's CSV rows.

Our own reader of the archive's ``.ts`` format (aeon is never imported: its
wheel only supplies the data files, ``requirements/bench.txt``)::

  python -m benchmarks.ucr --dataset ACSF1 --out DIR [--forecast]
      [--data-dir DIR | --aeon-wheel WHEEL]

writes ``DIR/train/<Name>.csv`` (from ``_TRAIN.ts``), ``DIR/eval/<Name>.csv``
(from ``_TEST.ts``), columns ``seq_id,t,x0[,x1...],label``, and
``DIR/labels.json`` (task, label kind, class mapping in ``@classLabel``
order, counts). ``--forecast``: label[t] = x0[t+1], the last step of each
series dropped. Missing values are an error except as trailing padding of a
variable-length series; bad input stops with ``path:line: message``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
import json
import math
import os
import sys
import zipfile
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

# Where the aeon wheel keeps its data sets (inside the package, and the zip).
AEON_DATA_SUBDIR = ('datasets', 'data')
AEON_WHEEL_PREFIX = 'aeon/datasets/data/'
# An aeon data folder, or an aeon wheel, used when none is given.
ENV_VAR = 'TSS_AEON_DATA'

SPLITS = (('train', 'TRAIN'), ('eval', 'TEST'))
MISSING_TOKENS = ('?', 'nan', 'NaN', 'NAN')

CLASSIFICATION = 'classification'
REGRESSION = 'regression'


class TsFormatError(ValueError):
  """Bad ``.ts`` input; the message is ``path:line: what``."""

  def __init__(self, path: str, line: Optional[int], message: str):
    self.path, self.line, self.message = path, line, message
    where = f'{path}:{line}' if line else path
    super().__init__(f'{where}: {message}')


@dataclasses.dataclass
class TsHeader:
  problem_name: Optional[str] = None
  timestamps: bool = False
  missing: Optional[bool] = None
  univariate: Optional[bool] = None
  dimensions: Optional[int] = None
  equal_length: Optional[bool] = None
  series_length: Optional[int] = None
  class_labels: Optional[List[str]] = None  # None: not a classification file
  target_label: bool = False

  @property
  def task(self) -> Optional[str]:
    if self.class_labels is not None:
      return CLASSIFICATION
    if self.target_label:
      return REGRESSION
    return None


@dataclasses.dataclass
class TsData:
  """One ``.ts`` file: ``series[i]`` is float64[L_i, D], ``labels[i]`` the
  label text as written (None for unlabelled files), ``lines[i]`` the case's
  line number."""
  path: str
  header: TsHeader
  series: List[np.ndarray]
  labels: List[Optional[str]]
  lines: List[int]

  @property
  def num_dimensions(self) -> int:
    return self.series[0].shape[1] if self.series else (
        self.header.dimensions or 1)

  def lengths(self) -> np.ndarray:
    return np.array([s.shape[0] for s in self.series], np.int64)


def _bool(path: str, lineno: int, key: str, value: str) -> bool:
  v = value.strip().lower()
  if v in ('true', 'false'):
    return v == 'true'
  raise TsFormatError(path, lineno, f'@{key} must be true or false, got '
                      f'{value.strip()!r}')


def _int(path: str, lineno: int, key: str, value: str) -> int:
  try:
    n = int(value.strip())
  except ValueError:
    raise TsFormatError(path, lineno, f'@{key} must be an integer, got '
                        f'{value.strip()!r}') from None
  if n < 1:
    raise TsFormatError(path, lineno, f'@{key} must be at least 1, got {n}')
  return n


def _header_line(path: str, lineno: int, line: str, h: TsHeader) -> None:
  parts = line[1:].split(None, 1)
  key = parts[0].lower() if parts else ''
  rest = parts[1] if len(parts) > 1 else ''
  words = rest.split()
  if key == 'problemname':
    h.problem_name = rest.strip() or None
  elif key == 'timestamps':
    h.timestamps = _bool(path, lineno, 'timeStamps', rest)
    if h.timestamps:
      raise TsFormatError(path, lineno, '@timeStamps true is not supported '
                          '(only plain value lists)')
  elif key == 'missing':
    h.missing = _bool(path, lineno, 'missing', rest)
  elif key == 'univariate':
    h.univariate = _bool(path, lineno, 'univariate', rest)
  elif key == 'dimensions':
    h.dimensions = _int(path, lineno, 'dimensions', rest)
  elif key == 'equallength':
    h.equal_length = _bool(path, lineno, 'equalLength', rest)
  elif key == 'serieslength':
    h.series_length = _int(path, lineno, 'seriesLength', rest)
  elif key == 'classlabel':
    if not words:
      raise TsFormatError(path, lineno, '@classLabel needs true or false')
    if _bool(path, lineno, 'classLabel', words[0]):
      labels = words[1:]
      if not labels:
        raise TsFormatError(path, lineno,
                            '@classLabel true lists no class labels')
      if len(set(labels)) != len(labels):
        raise TsFormatError(path, lineno,
                            f'@classLabel lists a label twice: {labels}')
      h.class_labels = labels
    elif len(words) > 1:
      raise TsFormatError(path, lineno, '@classLabel false takes no labels')
  elif key == 'targetlabel':
    h.target_label = _bool(path, lineno, 'targetLabel', rest)
  elif key == 'data':
    pass
  else:
    word = parts[0] if parts else ''
    raise TsFormatError(path, lineno, f'unknown header line @{word}')


def _values(path: str, lineno: int, text: str, dim: int,
            trim_missing: bool) -> np.ndarray:
  tokens = [t.strip() for t in text.split(',')]
  if trim_missing:
    while tokens and tokens[-1] in MISSING_TOKENS:
      tokens.pop()
  if not tokens or tokens == ['']:
    raise TsFormatError(path, lineno, f'dimension {dim} is empty')
  out = np.empty(len(tokens), np.float64)
  for i, tok in enumerate(tokens):
    if tok in MISSING_TOKENS:
      where = ('' if trim_missing else ' (missing values are only allowed as '
               'trailing padding of variable-length series)')
      raise TsFormatError(path, lineno, f'missing value {tok!r} at dimension '
                          f'{dim}, step {i}{where}')
    try:
      v = float(tok)
    except ValueError:
      raise TsFormatError(path, lineno, f'not a number: {tok!r} at dimension '
                          f'{dim}, step {i}') from None
    if not math.isfinite(v):
      raise TsFormatError(path, lineno, f'not a finite number: {tok!r} at '
                          f'dimension {dim}, step {i}')
    out[i] = v
  return out


def parse_ts(lines: Iterable[str], path: str = '<string>') -> TsData:
  """Parses the lines of a ``.ts`` file; ``path`` names it in errors."""
  h = TsHeader()
  in_data = False
  series, labels, linenos = [], [], []
  for lineno, raw in enumerate(lines, start=1):
    line = raw.strip()
    if not line or line[0] in '#%':
      continue
    if line[0] == '@':
      if in_data:
        raise TsFormatError(path, lineno, 'header line after @data')
      _header_line(path, lineno, line, h)
      if line[1:].split(None, 1)[0].lower() == 'data':
        in_data = True
        _check_header(path, lineno, h)
      continue
    if not in_data:
      raise TsFormatError(path, lineno, 'data before the @data line')
    labelled = h.task is not None
    parts = line.split(':')
    label = None
    if labelled:
      if len(parts) < 2:
        raise TsFormatError(path, lineno, 'no label (expected '
                            '"values:label")')
      label = parts.pop().strip()
      if not label:
        raise TsFormatError(path, lineno, 'empty label')
      if h.class_labels is not None and label not in h.class_labels:
        raise TsFormatError(path, lineno, f'class label {label!r} is not '
                            f'one of @classLabel {h.class_labels}')
      if h.task == REGRESSION:
        try:
          target = float(label)
        except ValueError:
          raise TsFormatError(path, lineno, f'target {label!r} is not a '
                              'number') from None
        if not math.isfinite(target):
          raise TsFormatError(path, lineno, f'target {label!r} is not '
                              'finite')
    want_dims = h.dimensions or (1 if h.univariate else None)
    if want_dims is not None and len(parts) != want_dims:
      raise TsFormatError(path, lineno, f'{len(parts)} dimensions, expected '
                          f'{want_dims}' + ('' if labelled else
                                            ' (unlabelled file)'))
    if series and len(parts) != series[0].shape[1]:
      raise TsFormatError(path, lineno, f'{len(parts)} dimensions, the first '
                          f'case has {series[0].shape[1]}')
    trim = h.equal_length is False
    dims = [_values(path, lineno, p, d, trim) for d, p in enumerate(parts)]
    lens = {d.size for d in dims}
    if len(lens) != 1:
      raise TsFormatError(path, lineno, 'dimensions of different lengths: '
                          f'{[d.size for d in dims]}')
    n = dims[0].size
    if h.equal_length and h.series_length and n != h.series_length:
      raise TsFormatError(path, lineno, f'series of length {n}, '
                          f'@seriesLength is {h.series_length}')
    if h.equal_length and series and n != series[0].shape[0]:
      raise TsFormatError(path, lineno, f'series of length {n}, the first '
                          f'case has {series[0].shape[0]} (@equalLength '
                          'true)')
    series.append(np.stack(dims, axis=1))
    labels.append(label)
    linenos.append(lineno)
  if not in_data:
    raise TsFormatError(path, None, 'no @data line')
  if not series:
    raise TsFormatError(path, None, 'no cases after @data')
  return TsData(path=path, header=h, series=series, labels=labels,
                lines=linenos)


def _check_header(path: str, lineno: int, h: TsHeader) -> None:
  if h.class_labels is not None and h.target_label:
    raise TsFormatError(path, lineno, 'both @classLabel true and '
                        '@targetLabel true')
  if h.univariate and h.dimensions not in (None, 1):
    raise TsFormatError(path, lineno, f'@univariate true with @dimensions '
                        f'{h.dimensions}')


def read_ts(path: str, text: Optional[str] = None) -> TsData:
  """Reads a ``.ts`` file (or ``text``, named ``path`` in errors)."""
  if text is None:
    with open(path, encoding='utf-8', errors='replace') as f:
      return parse_ts(f, path)
  return parse_ts(io.StringIO(text), path)


@dataclasses.dataclass(frozen=True)
class Source:
  """Where the archive files are: a folder of ``<Name>/<Name>_TRAIN.ts`` (or
  of ``<Name>_TRAIN.ts``), or an aeon wheel (a zip)."""
  path: str
  is_wheel: bool = False

  def describe(self) -> str:
    return f'{"wheel" if self.is_wheel else "folder"} {self.path}'

  def _candidates(self, name: str, split: str) -> List[str]:
    base = f'{name}_{split}.ts'
    return [f'{name}/{base}', base]

  def read(self, name: str, split: str) -> TsData:
    """``split`` is ``TRAIN`` or ``TEST``."""
    if self.is_wheel:
      with zipfile.ZipFile(self.path) as z:
        names = set(z.namelist())
        for c in self._candidates(name, split):
          member = AEON_WHEEL_PREFIX + c
          if member in names:
            text = z.read(member).decode('utf-8', errors='replace')
            return read_ts(f'{self.path}!{member}', text)
    else:
      for c in self._candidates(name, split):
        p = os.path.join(self.path, c)
        if os.path.isfile(p):
          return read_ts(p)
    raise FileNotFoundError(
        f'{name}_{split}.ts not found in the {self.describe()} (have: '
        f'{", ".join(self.datasets()) or "none"})')

  def datasets(self) -> List[str]:
    """Problem names with both a TRAIN and a TEST file."""
    if self.is_wheel:
      with zipfile.ZipFile(self.path) as z:
        files = [n[len(AEON_WHEEL_PREFIX):] for n in z.namelist()
                 if n.startswith(AEON_WHEEL_PREFIX)]
    else:
      files = []
      for dirpath, _, fs in os.walk(self.path):
        rel = os.path.relpath(dirpath, self.path)
        files += [f if rel == '.' else f'{rel}/{f}' for f in fs]
    found = set()
    for f in files:
      base = f.rsplit('/', 1)[-1]
      if base.endswith('_TRAIN.ts'):
        name = base[:-len('_TRAIN.ts')]
        found.add(name)
    tests = {f.rsplit('/', 1)[-1][:-len('_TEST.ts')] for f in files
             if f.endswith('_TEST.ts')}
    return sorted(found & tests)


def _as_source(path: str) -> Source:
  if os.path.isfile(path):
    if not zipfile.is_zipfile(path):
      raise ValueError(f'{path}: not a wheel (zip) file')
    return Source(os.path.abspath(path), is_wheel=True)
  if os.path.isdir(path):
    inner = os.path.join(path, *AEON_DATA_SUBDIR)
    # An installed aeon package folder, or a --target folder holding aeon/.
    for cand in (inner, os.path.join(path, 'aeon', *AEON_DATA_SUBDIR)):
      if os.path.isdir(cand):
        return Source(os.path.abspath(cand))
    return Source(os.path.abspath(path))
  raise ValueError(f'{path}: no such file or folder')


def installed_aeon_data() -> Optional[str]:
  """The data folder of an installed ``aeon`` package, found without
  importing it; None when aeon is not installed."""
  try:
    spec = importlib.util.find_spec('aeon')
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  for loc in spec.submodule_search_locations:
    cand = os.path.join(loc, *AEON_DATA_SUBDIR)
    if os.path.isdir(cand):
      return cand
  return None


def find_source(data_dir: Optional[str] = None,
                aeon_wheel: Optional[str] = None) -> Source:
  """The archive files: ``data_dir`` or ``aeon_wheel`` when given, else
  ``$TSS_AEON_DATA`` (a folder or a wheel), else the installed aeon package.
  """
  if data_dir and aeon_wheel:
    raise ValueError('give a data folder or an aeon wheel, not both')
  if aeon_wheel:
    if not os.path.isfile(aeon_wheel):
      raise ValueError(f'--aeon-wheel {aeon_wheel}: no such file')
    return _as_source(aeon_wheel)
  if data_dir:
    return _as_source(data_dir)
  env = os.environ.get(ENV_VAR)
  if env:
    return _as_source(env)
  found = installed_aeon_data()
  if found:
    return Source(found)
  raise ValueError(
      'no UCR/UEA data found: install aeon\'s data files with `pip install '
      '--no-deps -r requirements/bench.txt`, or give --data-dir / '
      f'--aeon-wheel, or set {ENV_VAR}')


def _fmt(v: float) -> str:
  """Shortest text that reads back as the same float64."""
  return repr(float(v))


def class_mapping(header: TsHeader) -> Dict[str, int]:
  return {label: i for i, label in enumerate(header.class_labels or ())}


def seq_ids(prefix: str, n: int) -> List[str]:
  width = max(5, len(str(max(n - 1, 0))))
  return [f'{prefix}_{i:0{width}d}' for i in range(n)]


def to_rows(data: TsData, prefix: str, *, forecast: bool = False,
            mapping: Optional[Dict[str, int]] = None
           ) -> Tuple[List[str], List[List[str]], Dict]:
  """(header, rows as text cells, stats) of one file.

  ``mapping`` maps class labels to integers (default: the file's own
  declared order). With ``forecast`` the label is ``x0[t+1]`` and the last
  step of each series is dropped.
  """
  dims = data.num_dimensions
  header = ['seq_id', 't'] + [f'x{d}' for d in range(dims)] + ['label']
  task = REGRESSION if forecast else data.header.task
  if task is None:
    raise TsFormatError(data.path, None, 'the file has no labels '
                        '(@classLabel false, no @targetLabel); use --forecast')
  if task == CLASSIFICATION:
    mapping = mapping if mapping is not None else class_mapping(data.header)
  rows: List[List[str]] = []
  ids = seq_ids(prefix, len(data.series))
  dropped = 0
  for sid, x, label, lineno in zip(ids, data.series, data.labels,
                                   data.lines):
    n = x.shape[0]
    if task == CLASSIFICATION and not forecast and label not in mapping:
      raise TsFormatError(data.path, lineno, f'class label {label!r} is not '
                          f'one of the train file\'s {list(mapping)}')
    if forecast:
      if n < 2:
        dropped += 1
        continue
      feats, targets = x[:-1], [_fmt(v) for v in x[1:, 0]]
    else:
      feats = x
      lab = (str(mapping[label]) if task == CLASSIFICATION else
             _fmt(float(label)))
      targets = [lab] * n
    for t in range(feats.shape[0]):
      rows.append([sid, str(t)] + [_fmt(v) for v in feats[t]] + [targets[t]])
  lengths = data.lengths()
  stats = {
      'file': data.path,
      'sequences': len(data.series) - dropped,
      'rows': len(rows),
      'length_min': int(lengths.min()), 'length_max': int(lengths.max()),
      'length_mean': round(float(lengths.mean()), 2),
  }
  if forecast:
    stats['dropped_length_1'] = dropped
  return header, rows, stats


def _write_csv(path: str, header: Sequence[str], rows: List[List[str]]
              ) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w', newline='') as f:
    f.write(','.join(header) + '\n')
    for r in rows:
      f.write(','.join(r) + '\n')
  os.replace(tmp, path)


def convert(name: str, out: str, source: Optional[Source] = None, *,
            forecast: bool = False) -> Dict:
  """Writes ``out/train/<name>.csv``, ``out/eval/<name>.csv`` (from TEST) and
  ``out/labels.json``; returns what labels.json holds."""
  source = source or find_source()
  files = {split: source.read(name, tag) for split, tag in SPLITS}
  train = files['train']
  task = REGRESSION if forecast else train.header.task
  mapping = None
  if task == CLASSIFICATION and not forecast:
    mapping = class_mapping(train.header)
  dims = {s: d.num_dimensions for s, d in files.items()}
  if dims['train'] != dims['eval']:
    raise TsFormatError(files['eval'].path, files['eval'].lines[0],
                        f'{dims["eval"]} dimensions, the train file has '
                        f'{dims["train"]}')
  if not forecast and files['eval'].header.task != train.header.task:
    raise TsFormatError(files['eval'].path, None, 'a different label kind '
                        'than the train file')
  meta = {
      'dataset': name,
      'problem_name': train.header.problem_name,
      'source': source.describe(),
      'task': task,
      'label_kind': 'per_step' if forecast else 'per_sequence',
      'forecast': forecast,
      'num_features': dims['train'],
      'feature_names': [f'x{d}' for d in range(dims['train'])],
      'equal_length': train.header.equal_length,
  }
  if forecast:
    meta['label'] = ('x0 at step t+1; the last step of each series is '
                     'dropped (L-1 rows per series)')
  if mapping is not None:
    meta['num_classes'] = len(mapping)
    meta['classes'] = list(mapping)
    meta['class_to_index'] = mapping
  for split, data in files.items():
    header, rows, stats = to_rows(data, split, forecast=forecast,
                                  mapping=mapping)
    path = os.path.join(out, split, f'{name}.csv')
    _write_csv(path, header, rows)
    stats['csv'] = os.path.abspath(path)
    meta[split] = stats
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'labels.json'), 'w') as f:
    json.dump(meta, f, indent=1)
    f.write('\n')
  return meta


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m benchmarks.ucr',
      description='Convert a UCR/UEA archive problem (.ts files, as shipped '
      'in the aeon wheel) to CSV rows: <out>/train/<name>.csv, '
      '<out>/eval/<name>.csv (from TEST) and <out>/labels.json.')
  p.add_argument('--dataset', help='problem name, e.g. ACSF1, GunPoint')
  p.add_argument('--out', help='output folder')
  p.add_argument('--forecast', action='store_true',
                 help='per-step next-value labels: label[t] = x0[t+1]; the '
                 'last step of each series is dropped (train with '
                 '--label-kind per_step --task regression)')
  src = p.add_mutually_exclusive_group()
  src.add_argument('--data-dir', default=None,
                   help='a folder of <Name>/<Name>_TRAIN.ts files (or an '
                   'installed aeon package, or a pip --target folder)')
  src.add_argument('--aeon-wheel', default=None,
                   help='read the files from an aeon wheel (.whl)')
  p.add_argument('--list', action='store_true',
                 help='list the problems found and exit')
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    source = find_source(args.data_dir, args.aeon_wheel)
    if args.list:
      print('\n'.join(source.datasets()))
      return 0
    if not args.dataset or not args.out:
      raise ValueError('--dataset and --out are required')
    meta = convert(args.dataset, args.out, source, forecast=args.forecast)
  except (ValueError, OSError, zipfile.BadZipFile) as e:
    msg = str(e).strip().splitlines()
    print(f'error: {msg[0] if msg else type(e).__name__}', file=sys.stderr)
    return 1
  print(f'{args.dataset}: {meta["task"]} ({meta["label_kind"]}), '
        f'{meta["num_features"]} feature(s); train {meta["train"]["sequences"]}'
        f' sequences / {meta["train"]["rows"]} rows, eval '
        f'{meta["eval"]["sequences"]} / {meta["eval"]["rows"]} rows -> '
        f'{args.out}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
