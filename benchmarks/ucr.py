"""UCR/UEA ``.ts`` archive files -> the project's CSV rows (our own reader;
aeon is never imported, its wheel only supplies the files)::

  python -m benchmarks.ucr --dataset ACSF1 --out DIR [--forecast]
      [--data-dir DIR | --aeon-wheel WHEEL]

writes ``DIR/{train,eval}/<Name>.csv`` (from ``_TRAIN.ts`` / ``_TEST.ts``;
columns ``seq_id,t,x0[,x1...],label``) and ``DIR/labels.json``.
``--forecast``: label[t] = x0[t+1], each series' last step dropped. Bad
input stops with ``path:line: message`` (data/README.md)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
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
    return REGRESSION if self.target_label else None


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


# Header keys (lower case) -> TsHeader fields, by the kind of value.
_BOOLS = {'timestamps': 'timestamps', 'missing': 'missing',
          'univariate': 'univariate', 'equallength': 'equal_length',
          'targetlabel': 'target_label'}
_INTS = {'dimensions': 'dimensions', 'serieslength': 'series_length'}


def _bool(err, word: str, text: str) -> bool:
  if text.lower() not in ('true', 'false'):
    raise err(f'@{word} must be true or false, got {text!r}')
  return text.lower() == 'true'


def _header_line(err, line: str, h: TsHeader) -> None:
  """One ``@key value`` line into ``h``; ``err(message)`` makes the error."""
  parts = line[1:].split(None, 1)
  word = parts[0] if parts else ''
  key, rest = word.lower(), (parts[1] if len(parts) > 1 else '').strip()
  if key == 'problemname':
    h.problem_name = rest or None
  elif key in _BOOLS:
    setattr(h, _BOOLS[key], _bool(err, word, rest))
    if h.timestamps:
      raise err(f'@{word} true is not supported (only plain value lists)')
  elif key in _INTS:
    if not rest.isdecimal() or int(rest) < 1:
      raise err(f'@{word} must be an integer of at least 1, got {rest!r}')
    setattr(h, _INTS[key], int(rest))
  elif key == 'classlabel':
    flag, *labels = rest.split() or ['']
    if not _bool(err, word, flag):
      if labels:
        raise err(f'@{word} false takes no labels')
    elif not labels:
      raise err(f'@{word} true lists no class labels')
    elif len(set(labels)) != len(labels):
      raise err(f'@{word} lists a label twice: {labels}')
    else:
      h.class_labels = labels
  elif key != 'data':
    raise err(f'unknown header line @{word}')


def _values(err, text: str, dim: int, trim_missing: bool) -> List[float]:
  """One dimension's comma-separated values (trailing missing ones dropped
  when ``trim_missing``)."""
  tokens = [t.strip() for t in text.split(',')]
  while trim_missing and tokens and tokens[-1] in MISSING_TOKENS:
    tokens.pop()
  if tokens in ([], ['']):
    raise err(f'dimension {dim} is empty')
  out = []
  for i, tok in enumerate(tokens):
    where = f' at dimension {dim}, step {i}'
    if tok in MISSING_TOKENS:
      raise err(f'missing value {tok!r}{where}' + (
          '' if trim_missing else ' (missing values are only allowed as '
          'trailing padding of variable-length series)'))
    try:
      out.append(float(tok))
    except ValueError:
      raise err(f'not a number: {tok!r}{where}') from None
    if not math.isfinite(out[-1]):
      raise err(f'not a finite number: {tok!r}{where}')
  return out


def _label(err, parts: List[str], h: TsHeader) -> str:
  """Pops and checks the case's label (the last ``:`` field)."""
  if len(parts) < 2:
    raise err('no label (expected "values:label")')
  label = parts.pop().strip()
  if not label:
    raise err('empty label')
  if h.class_labels is not None and label not in h.class_labels:
    raise err(f'class label {label!r} is not one of @classLabel '
              f'{h.class_labels}')
  if h.task == REGRESSION:
    try:
      target = float(label)
    except ValueError:
      raise err(f'target {label!r} is not a number') from None
    if not math.isfinite(target):
      raise err(f'target {label!r} is not finite')
  return label


def parse_ts(lines: Iterable[str], path: str = '<string>') -> TsData:
  """Parses the lines of a ``.ts`` file; ``path`` names it in errors."""
  h = TsHeader()
  in_data = False
  series, labels, linenos = [], [], []
  for lineno, raw in enumerate(lines, start=1):
    err = functools.partial(TsFormatError, path, lineno)
    line = raw.strip()
    if not line or line[0] in '#%':
      continue
    if line[0] == '@':
      if in_data:
        raise err('header line after @data')
      _header_line(err, line, h)
      if line[1:].split(None, 1)[0].lower() == 'data':
        in_data = True
        if h.class_labels is not None and h.target_label:
          raise err('both @classLabel true and @targetLabel true')
        if h.univariate and h.dimensions not in (None, 1):
          raise err(f'@univariate true with @dimensions {h.dimensions}')
      continue
    if not in_data:
      raise err('data before the @data line')
    parts = line.split(':')
    label = _label(err, parts, h) if h.task is not None else None
    want = h.dimensions or (1 if h.univariate else None)
    if want is not None and len(parts) != want:
      raise err(f'{len(parts)} dimensions, expected {want}' + (
          '' if h.task else ' (unlabelled file)'))
    if series and len(parts) != series[0].shape[1]:
      raise err(f'{len(parts)} dimensions, the first case has '
                f'{series[0].shape[1]}')
    dims = [_values(err, p, d, h.equal_length is False)
            for d, p in enumerate(parts)]
    n = len(dims[0])
    if any(len(d) != n for d in dims):
      raise err(f'dimensions of different lengths: {[len(d) for d in dims]}')
    if h.equal_length and h.series_length and n != h.series_length:
      raise err(f'series of length {n}, @seriesLength is {h.series_length}')
    if h.equal_length and series and n != series[0].shape[0]:
      raise err(f'series of length {n}, the first case has '
                f'{series[0].shape[0]} (@equalLength true)')
    series.append(np.ascontiguousarray(np.array(dims, np.float64).T))
    labels.append(label)
    linenos.append(lineno)
  if not in_data:
    raise TsFormatError(path, None, 'no @data line')
  if not series:
    raise TsFormatError(path, None, 'no cases after @data')
  return TsData(path=path, header=h, series=series, labels=labels,
                lines=linenos)


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

  def read(self, name: str, split: str) -> TsData:
    """``split`` is ``TRAIN`` or ``TEST``."""
    for rel in (f'{name}/{name}_{split}.ts', f'{name}_{split}.ts'):
      if self.is_wheel:
        with zipfile.ZipFile(self.path) as z:
          if AEON_WHEEL_PREFIX + rel in z.namelist():
            return read_ts(f'{self.path}!{AEON_WHEEL_PREFIX}{rel}', z.read(
                AEON_WHEEL_PREFIX + rel).decode('utf-8', errors='replace'))
      elif os.path.isfile(os.path.join(self.path, rel)):
        return read_ts(os.path.join(self.path, rel))
    raise FileNotFoundError(
        f'{name}_{split}.ts not found in the {self.describe()} (have: '
        f'{", ".join(self.datasets()) or "none"})')

  def datasets(self) -> List[str]:
    """Problem names with both a TRAIN and a TEST file."""
    if self.is_wheel:
      with zipfile.ZipFile(self.path) as z:
        files = [n for n in z.namelist() if n.startswith(AEON_WHEEL_PREFIX)]
    else:
      files = [f for _, _, fs in os.walk(self.path) for f in fs]
    names = {split: {f.rsplit('/', 1)[-1][:-len(f'_{split}.ts')]
                     for f in files if f.endswith(f'_{split}.ts')}
             for split in ('TRAIN', 'TEST')}
    return sorted(names['TRAIN'] & names['TEST'])


def _as_source(path: str) -> Source:
  if os.path.isfile(path):
    if not zipfile.is_zipfile(path):
      raise ValueError(f'{path}: not a wheel (zip) file')
    return Source(os.path.abspath(path), is_wheel=True)
  if os.path.isdir(path):
    # An installed aeon package folder, or a --target folder holding aeon/.
    for cand in (os.path.join(path, *AEON_DATA_SUBDIR),
                 os.path.join(path, 'aeon', *AEON_DATA_SUBDIR)):
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
  for loc in (spec.submodule_search_locations or []) if spec else []:
    if os.path.isdir(os.path.join(loc, *AEON_DATA_SUBDIR)):
      return os.path.join(loc, *AEON_DATA_SUBDIR)
  return None


def find_source(data_dir: Optional[str] = None,
                aeon_wheel: Optional[str] = None) -> Source:
  """``data_dir`` or ``aeon_wheel`` when given, else ``$TSS_AEON_DATA`` (a
  folder or a wheel), else the installed aeon package."""
  if data_dir and aeon_wheel:
    raise ValueError('give a data folder or an aeon wheel, not both')
  if aeon_wheel and not os.path.isfile(aeon_wheel):
    raise ValueError(f'--aeon-wheel {aeon_wheel}: no such file')
  given = aeon_wheel or data_dir or os.environ.get(ENV_VAR)
  if given:
    return _as_source(given)
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
  """(header, rows as text cells, stats) of one file. ``mapping``: class
  label -> integer (default: the file's declared order); ``forecast``:
  label x0[t+1], each series' last step dropped."""
  header = (['seq_id', 't'] + [f'x{d}' for d in range(data.num_dimensions)]
            + ['label'])
  task = REGRESSION if forecast else data.header.task
  if task is None:
    raise TsFormatError(data.path, None, 'the file has no labels '
                        '(@classLabel false, no @targetLabel); use --forecast')
  if mapping is None:
    mapping = class_mapping(data.header)
  rows: List[List[str]] = []
  dropped = 0
  for sid, x, label, lineno in zip(seq_ids(prefix, len(data.series)),
                                   data.series, data.labels, data.lines):
    if forecast:
      dropped += x.shape[0] < 2
      feats, targets = x[:-1], [_fmt(v) for v in x[1:, 0]]
    elif task == CLASSIFICATION:
      if label not in mapping:
        raise TsFormatError(data.path, lineno, f'class label {label!r} is '
                            f'not one of the train file\'s {list(mapping)}')
      feats, targets = x, [str(mapping[label])] * x.shape[0]
    else:
      feats, targets = x, [_fmt(float(label))] * x.shape[0]
    rows += [[sid, str(t)] + [_fmt(v) for v in feats[t]] + [targets[t]]
             for t in range(feats.shape[0])]
  lengths = data.lengths()
  stats = {'file': data.path, 'sequences': len(data.series) - dropped,
           'rows': len(rows), 'length_min': int(lengths.min()),
           'length_max': int(lengths.max()),
           'length_mean': round(float(lengths.mean()), 2)}
  if forecast:
    stats['dropped_length_1'] = dropped
  return header, rows, stats


def _write_csv(path: str, header: Sequence[str], rows: List[List[str]]
              ) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w', newline='') as f:
    f.writelines(','.join(r) + '\n' for r in [header] + rows)
  os.replace(path + '.tmp', path)


def convert(name: str, out: str, source: Optional[Source] = None, *,
            forecast: bool = False) -> Dict:
  """Writes ``out/train/<name>.csv``, ``out/eval/<name>.csv`` (from TEST) and
  ``out/labels.json``; returns what labels.json holds."""
  source = source or find_source()
  files = {split: source.read(name, tag) for split, tag in SPLITS}
  train, evals = files['train'], files['eval']
  task = REGRESSION if forecast else train.header.task
  dims = train.num_dimensions
  if evals.num_dimensions != dims:
    raise TsFormatError(evals.path, evals.lines[0], f'{evals.num_dimensions}'
                        f' dimensions, the train file has {dims}')
  if not forecast and evals.header.task != train.header.task:
    raise TsFormatError(evals.path, None, 'a different label kind than the '
                        'train file')
  meta = {'dataset': name, 'problem_name': train.header.problem_name,
          'source': source.describe(), 'task': task,
          'label_kind': 'per_step' if forecast else 'per_sequence',
          'forecast': forecast, 'num_features': dims,
          'feature_names': [f'x{d}' for d in range(dims)],
          'equal_length': train.header.equal_length}
  mapping = None
  if forecast:
    meta['label'] = ('x0 at step t+1; the last step of each series is '
                     'dropped (L-1 rows per series)')
  elif task == CLASSIFICATION:
    mapping = class_mapping(train.header)
    meta.update(num_classes=len(mapping), classes=list(mapping),
                class_to_index=mapping)
  for split, data in files.items():
    header, rows, stats = to_rows(data, split, forecast=forecast,
                                  mapping=mapping)
    path = os.path.join(out, split, f'{name}.csv')
    _write_csv(path, header, rows)
    meta[split] = dict(stats, csv=os.path.abspath(path))
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'labels.json'), 'w') as f:
    json.dump(meta, f, indent=1)
    f.write('\n')
  return meta


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(prog='python -m benchmarks.ucr',
                              description=__doc__.split('\n')[0])
  p.add_argument('--dataset', help='problem name, e.g. ACSF1, GunPoint')
  p.add_argument('--out', help='output folder')
  p.add_argument('--forecast', action='store_true',
                 help='per-step labels label[t] = x0[t+1] (train with '
                 '--label-kind per_step --task regression)')
  src = p.add_mutually_exclusive_group()
  src.add_argument('--data-dir', default=None, help='a folder of '
                   '<Name>/<Name>_TRAIN.ts files (or an installed aeon '
                   'package, or a pip --target folder)')
  src.add_argument('--aeon-wheel', default=None,
                   help='read the files from an aeon wheel (.whl)')
  p.add_argument('--list', action='store_true',
                 help='list the problems found and exit')
  args = p.parse_args(argv)
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
