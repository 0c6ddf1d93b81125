"""Shared helpers of the benchmark scripts: machine and versions, the
BENCHMARKS.md section writer, markdown tables, and peak-RSS measurement of a
process tree. No TensorFlow import (scripts import it when they need it)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_MD = os.path.join(ROOT, 'BENCHMARKS.md')
QUICK_DIR = os.path.join(tempfile.gettempdir(), 'tss-bench')
QUICK_MD = os.path.join(QUICK_DIR, 'BENCHMARKS.quick.md')

# Sections in the order they appear in BENCHMARKS.md.
SECTIONS = ('padding', 'dense_step_rate', 'batcher_throughput',
            'training_speed', 'memory_vs_length', 'evaluation', 'real_data',
            'pipeline_overhead', 'streams', 'distributed', 'truncation',
            'step_profile', 'tagging_lag', 'main_job_profile', 'recipe',
            'feature_pass')

HEADER = """# Benchmarks

Measured by the scripts in `benchmarks/` (issue 6). `make bench` runs them all
and rewrites each section below between its markers; `make bench QUICK=1` is a
smaller smoke run that writes to `{quick}` instead. Run one alone with
`PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 python -m benchmarks.<name>`.

Every figure in one table was measured side by side in one run, and each table
gives ratios, which hold up better than absolute rates on a shared machine
(the load average before and after each run is recorded with it). Nothing
here is a timed test.
""".format(quick=QUICK_MD)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def progress_log(name: str):
  """A ``log(message)`` that prints ``[name h:mm:ss] message`` to stderr,
  the time counted from this call (a script's progress lines)."""
  started = time.perf_counter()

  def log(message: str) -> None:
    elapsed = int(time.perf_counter() - started)
    print(f'[{name} {elapsed // 3600:d}:{elapsed // 60 % 60:02d}:'
          f'{elapsed % 60:02d}] {message}', file=sys.stderr, flush=True)

  return log


def seed_count(args, default: int) -> int:
  """``--seeds`` (1 with ``--quick``, else ``default``); ValueError below 1."""
  n = args.seeds if args.seeds is not None else (1 if args.quick else default)
  if n < 1:
    raise ValueError('--seeds must be at least 1')
  return n


def parser(description: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=description)
  p.add_argument('--quick', action='store_true',
                 help='smaller sizes (a smoke run); writes to '
                 f'{QUICK_MD} unless --output is given')
  p.add_argument('--output', default=None,
                 help=f'the markdown file to update (default: {BENCHMARKS_MD};'
                 f' with --quick: {QUICK_MD})')
  return p


def output_path(args) -> str:
  if args.output:
    return args.output
  return QUICK_MD if args.quick else BENCHMARKS_MD


def command_line() -> str:
  """The command that is running, as a user would type it."""
  module = sys.modules['__main__'].__spec__
  if module is not None and module.name:
    head = ['python', '-m', module.name]
  else:
    head = ['python', os.path.relpath(sys.argv[0], ROOT)]
  return ('PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 ' +
          shlex.join(head + sys.argv[1:]))


# --------------------------------------------------------------------------
# Machine, versions, load
# --------------------------------------------------------------------------


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown CPU'


def machine() -> str:
  mem = psutil.virtual_memory().total / 2**30
  return (f'{os.cpu_count()} CPU cores ({_cpu_model()}), {mem:.0f} GiB RAM, '
          f'{platform.system()} {platform.release()}, no GPU used')


def _version(dist: str) -> str:
  try:
    return importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return 'n/a'


def versions() -> str:
  return (f'python {platform.python_version()}, '
          f'tensorflow {_version("tensorflow")}, '
          f'tf_keras {_version("tf-keras")}, '
          f'apache-beam {_version("apache-beam")}, tfx {_version("tfx")}, '
          f'numpy {_version("numpy")}, pandas {_version("pandas")}')


def load_average() -> str:
  return '{:.2f} / {:.2f} / {:.2f}'.format(*os.getloadavg())


def code_state(root: str) -> Dict[str, object]:
  """The commit of the checkout at ``root`` and its uncommitted files
  (other people's work in progress changes what is measured)."""
  def git(*args):
    return subprocess.run(['git', '-C', root] + list(args), check=False,
                          capture_output=True, text=True).stdout.rstrip()
  return {'root': root, 'commit': git('rev-parse', 'HEAD').strip(),
          'uncommitted': [line[3:] for line in
                          git('status', '--porcelain',
                              '--untracked-files=no').splitlines()]}


class Run:
  """Start/end bookkeeping of one benchmark run (date, load, wall time)."""

  def __init__(self):
    self.started = datetime.datetime.now(datetime.timezone.utc)
    self.load_before = load_average()
    self._t0 = time.perf_counter()
    self.load_after = None
    self.seconds = None

  def finish(self) -> None:
    self.load_after = load_average()
    self.seconds = time.perf_counter() - self._t0

  def preamble(self, quick: bool) -> str:
    if self.seconds is None:
      self.finish()
    mode = ' — **quick mode (smaller sizes; not the reference figures)**' if (
        quick) else ''
    return '\n'.join([
        f'* Command: `{command_line()}`{mode}',
        f'* Date: {self.started:%Y-%m-%d %H:%M} UTC; run took '
        f'{self.seconds:.0f} s',
        f'* Machine: {machine()}',
        f'* Load average (1/5/15 min) before: {self.load_before}; after: '
        f'{self.load_after}',
        f'* Versions: {versions()}',
    ])


# --------------------------------------------------------------------------
# BENCHMARKS.md
# --------------------------------------------------------------------------


def _markers(key: str):
  return f'<!-- BEGIN {key} -->', f'<!-- END {key} -->'


def write_section(path: str, key: str, body: str) -> None:
  """Replaces section ``key`` of ``path`` (between its markers) with
  ``body``, keeping every other section; creates the file if needed."""
  if key not in SECTIONS:
    raise ValueError(f'unknown section {key!r}')
  begin, end = _markers(key)
  block = f'{begin}\n{body.strip()}\n{end}'
  text = HEADER
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
  pattern = re.compile(re.escape(begin) + r'.*?' + re.escape(end), re.S)
  if pattern.search(text):
    text = pattern.sub(lambda _: block, text)
  else:
    # Insert before the first later section present, else at the end.
    later = SECTIONS[SECTIONS.index(key) + 1:]
    pos = None
    for other in later:
      i = text.find(_markers(other)[0])
      if i >= 0:
        pos = i
        break
    if pos is None:
      text = text.rstrip('\n') + '\n\n' + block + '\n'
    else:
      text = text[:pos] + block + '\n\n' + text[pos:]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)
  print(f'wrote section {key!r} of {path}', file=sys.stderr)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
          align: Optional[str] = None) -> str:
  """A markdown table; ``align`` is one letter per column (l/r/c)."""
  rows = [[str(c) for c in r] for r in rows]
  align = align or 'l' + 'r' * (len(headers) - 1)
  marks = {'l': ':---', 'r': '---:', 'c': ':---:'}
  lines = ['| ' + ' | '.join(headers) + ' |',
           '|' + '|'.join(marks[a] for a in align) + '|']
  lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
  return '\n'.join(lines)


# --------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------


def si(value: float, digits: int = 3) -> str:
  """1234567 -> '1.23M'."""
  value = float(value)
  for limit, suffix in ((1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(value) >= limit:
      return f'{value / limit:.{digits}g}{suffix}'
  return f'{value:.{digits}g}'


def mib(nbytes: float) -> str:
  return f'{nbytes / 2**20:,.0f} MiB'


def ratio(a: float, b: float, digits: int = 2) -> str:
  if not b:
    return 'n/a'
  return f'{a / b:.{digits}f}x'


def verdict(ok: bool) -> str:
  return '**met**' if ok else '**missed**'


# --------------------------------------------------------------------------
# Peak memory of a process tree
# --------------------------------------------------------------------------


class PeakRSS:
  """Polls the RSS of a process and all its descendants in a thread.

  Attributes (bytes, maxima over the polls):
    tree: the sum over the whole tree (the process and its descendants).
    root: the process itself.
    child_max: the largest single descendant.
    children_sum: the sum over the descendants.
  """

  def __init__(self, pid: int, interval: float = 0.05):
    self.pid = pid
    self.interval = interval
    self.tree = self.root = self.child_max = self.children_sum = 0
    self.polls = 0
    self.max_children = 0
    # (epoch seconds, root RSS, largest descendant RSS) of every poll.
    self.series: List[tuple] = []
    # pid -> user + system CPU seconds when last seen.
    self.cpu: Dict[int, float] = {}
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, daemon=True)

  def _poll(self) -> None:
    try:
      proc = psutil.Process(self.pid)
      root = proc.memory_info().rss
      self.cpu[self.pid] = sum(proc.cpu_times()[:2])
      kids = proc.children(recursive=True)
    except psutil.Error:
      return
    sizes = []
    for k in kids:
      try:
        sizes.append(k.memory_info().rss)
        self.cpu[k.pid] = sum(k.cpu_times()[:2])
      except psutil.Error:
        pass
    self.series.append((time.time(), root, max(sizes, default=0)))
    self.root = max(self.root, root)
    self.child_max = max(self.child_max, max(sizes, default=0))
    self.children_sum = max(self.children_sum, sum(sizes))
    self.tree = max(self.tree, root + sum(sizes))
    self.max_children = max(self.max_children, len(sizes))
    self.polls += 1

  @property
  def cpu_root(self) -> float:
    """CPU seconds of the process itself (as last polled)."""
    return self.cpu.get(self.pid, 0.0)

  @property
  def cpu_children(self) -> float:
    """CPU seconds of all its descendants (as last polled)."""
    return sum(v for k, v in self.cpu.items() if k != self.pid)

  def peak_between(self, start: float, end: float) -> tuple:
    """(root, largest descendant) peak RSS of the polls in [start, end)."""
    inside = [(r, c) for t, r, c in self.series if start <= t < end]
    return (max((r for r, _ in inside), default=0),
            max((c for _, c in inside), default=0))

  def _loop(self) -> None:
    while not self._stop.is_set():
      self._poll()
      self._stop.wait(self.interval)

  def __enter__(self) -> 'PeakRSS':
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()


@contextlib.contextmanager
def peak_rss_of_self(interval: float = 0.05):
  """``PeakRSS`` of this process (and any children it starts)."""
  with PeakRSS(os.getpid(), interval) as peak:
    yield peak


def child_env() -> Dict[str, str]:
  """Environment for subprocesses: the repository importable, TF quiet."""
  env = dict(os.environ)
  paths = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
  if ROOT not in paths:
    env['PYTHONPATH'] = os.pathsep.join([ROOT] + paths)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  return env


class ChildResult:
  """What ``run_child`` saw: exit status, wall time, peak RSS, output."""

  def __init__(self, returncode, seconds, peak, stdout, stderr, killed):
    self.returncode = returncode
    self.seconds = seconds
    self.peak = peak
    self.stdout = stdout
    self.stderr = stderr
    self.killed = killed  # None, or why it was stopped.

  def json(self) -> Optional[dict]:
    """The last stdout line that parses as a JSON object, if any."""
    for line in reversed(self.stdout.splitlines()):
      line = line.strip()
      if line.startswith('{'):
        try:
          return json.loads(line)
        except ValueError:
          continue
    return None


def run_child(cmd: Sequence[str], *, timeout: Optional[float] = None,
              rss_cap: Optional[int] = None, interval: float = 0.05,
              cwd: str = ROOT, env: Optional[Dict[str, str]] = None,
              echo: bool = True) -> ChildResult:
  """Runs ``cmd`` in a fresh process, polling its tree's RSS.

  Stops the child (and its process group) when it runs past ``timeout``
  seconds or its tree's RSS passes ``rss_cap`` bytes.
  """
  if echo:
    print('$ ' + shlex.join(cmd), file=sys.stderr, flush=True)
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile(
      'w+') as err:
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env or child_env(),
                            stdout=out, stderr=err, start_new_session=True)
    killed = None
    with PeakRSS(proc.pid, interval) as peak:
      while proc.poll() is None:
        elapsed = time.perf_counter() - t0
        if timeout is not None and elapsed > timeout:
          killed = f'stopped after {timeout:.0f} s (time limit)'
        elif rss_cap is not None and peak.tree > rss_cap:
          killed = f'stopped at {mib(peak.tree)} RSS (cap {mib(rss_cap)})'
        if killed:
          _kill_group(proc)
          break
        time.sleep(interval)
      proc.wait()
    seconds = time.perf_counter() - t0
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read(), err.read()
  if echo and proc.returncode != 0 and not killed:
    print(stderr[-4000:], file=sys.stderr)
  return ChildResult(proc.returncode, seconds, peak, stdout, stderr, killed)


def _kill_group(proc: subprocess.Popen) -> None:
  """Ends the child we started and its process group (only ours)."""
  import signal  # pylint: disable=g-import-not-at-top
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass


# --------------------------------------------------------------------------
# Sequence data for the training benchmarks (NumPy; TF imported lazily)
# --------------------------------------------------------------------------


def sample_sequences():
  """``data/sample`` (300 ``cue`` sequences) as ``SequenceArrays`` in key
  order, and the feature names."""
  import glob as glob_lib  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top
  paths = sorted(glob_lib.glob(os.path.join(ROOT, 'data', 'sample', '*.csv')))
  df = pd.concat([pd.read_csv(p, dtype={'seq_id': str}) for p in paths],
                 ignore_index=True)
  return _frame_sequences(df)


def generated_sequences(num_sequences: int, *, seed: int, target: str = 'cue',
                        **kwargs):
  """``data.generate.generate(...)`` as ``SequenceArrays`` and names."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from data import generate as datagen  # pylint: disable=g-import-not-at-top
  return _frame_sequences(pd.DataFrame(datagen.generate(
      num_sequences, seed=seed, target=target, **kwargs)))


def _frame_sequences(df):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import layout  # pylint: disable=g-import-not-at-top
  names = sorted(c for c in df.columns if c not in ('seq_id', 't', 'label'))
  df = df.sort_values(['seq_id', 't'], kind='stable')
  keys = df['seq_id'].to_numpy()
  feats = df[names].to_numpy(np.float32)
  labels = df['label'].to_numpy()
  labels = labels.astype(np.int64 if labels.dtype.kind in 'iu' else
                         np.float32)
  bounds = np.flatnonzero(keys[1:] != keys[:-1]) + 1
  starts = np.concatenate([[0], bounds])
  ends = np.concatenate([bounds, [keys.size]])
  return [layout.SequenceArrays(key=str(keys[s]), features=feats[s:e],
                                labels=labels[s:e])
          for s, e in zip(starts, ends)], names


def split_train_eval(seqs, every: int = 5):
  """Every ``every``-th sequence (in key order) to eval, the rest to train."""
  train = [s for i, s in enumerate(seqs) if i % every != every - 1]
  evals = [s for i, s in enumerate(seqs) if i % every == every - 1]
  return train, evals


def write_batches(root: str, splits, *, batch_size: int, num_unroll: int,
                  label_kind: str, feature_names, mode: str = 'packed') -> str:
  """A SequenceBatcher output (the NumPy reference writer: the same bytes
  as the Beam transform) with the given splits; returns ``root``."""
  from components.sequence_batcher import in_memory  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import layout  # pylint: disable=g-import-not-at-top
  return in_memory.write_splits(
      root, splits, feature_names=feature_names,
      config=layout.LayoutConfig(batch_size=batch_size, num_unroll=num_unroll,
                                 mode=mode, label_kind=label_kind))


def padded(seqs, length: Optional[int] = None):
  """Whole sequences zero-padded to ``length`` (default: the longest):
  ``(features float32[N, L, F], labels [N, L], mask float32[N, L])``."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  length = length or max(s.length for s in seqs)
  nfeat = seqs[0].features.shape[1]
  feats = np.zeros((len(seqs), length, nfeat), np.float32)
  labels = np.zeros((len(seqs), length), seqs[0].labels.dtype)
  mask = np.zeros((len(seqs), length), np.float32)
  for i, s in enumerate(seqs):
    feats[i, :s.length] = s.features
    labels[i, :s.length] = s.labels
    mask[i, :s.length] = 1.0
  return feats, labels, mask
