"""The report side of the harness: the command line every script shares,
the run's bookkeeping (date, machine, versions, load), BENCHMARKS.md's
sections and markdown tables and cells."""

from __future__ import annotations

import argparse
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
import time
from typing import Any, Dict, Iterable, Optional, Sequence

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


# Options more than one script takes, by name: (flag, add_argument keywords).
OPTIONS = {
    'seeds': ('--seeds', dict(type=int, default=None,
                              help='runs per model (1 with --quick)')),
    'data_dir': ('--data-dir', dict(default=None, help='the aeon data folder '
                                    '(default: $TSS_AEON_DATA)')),
    'keep': ('--keep', dict(action='store_true',
                            help='keep the work folder')),
    'runner_args': ('--runner-args', dict(
        default='', metavar='FLAGS',
        help='more local_runner flags for every pipeline run')),
    'from_results': ('--from-results', dict(
        nargs='+', default=None, metavar='JSON',
        help='write the section from earlier results files; run nothing')),
}


def parser(description: str, *options: str) -> argparse.ArgumentParser:
  """``--quick``, ``--output`` and the named ``OPTIONS``."""
  p = argparse.ArgumentParser(description=description)
  p.add_argument('--quick', action='store_true',
                 help=f'smaller sizes (a smoke run), written to {QUICK_MD}')
  p.add_argument('--output', default=None,
                 help='the markdown file to update (default: BENCHMARKS.md)')
  for name in options:
    flag, kwargs = OPTIONS[name]
    p.add_argument(flag, **kwargs)
  return p


def output_path(args) -> str:
  return args.output or (QUICK_MD if args.quick else BENCHMARKS_MD)


def command_line() -> str:
  """The command that is running, as a user would type it."""
  module = sys.modules['__main__'].__spec__
  if module is not None and module.name:
    head = ['python', '-m', module.name]
  else:
    head = ['python', os.path.relpath(sys.argv[0], ROOT)]
  return ('PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 ' +
          shlex.join(head + sys.argv[1:]))


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      model = next((line.split(':', 1)[1].strip() for line in f
                    if line.startswith('model name')), None)
  except OSError:
    model = None
  return model or platform.processor() or 'unknown CPU'


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

  def record(self) -> dict:
    """The run's date, seconds, load, machine and versions for a results
    JSON (``results['run']``); finishes the run if it is not yet."""
    if self.seconds is None:
      self.finish()
    return {'date': f'{self.started:%Y-%m-%d %H:%M} UTC',
            'seconds': round(self.seconds, 1),
            'load_before': self.load_before, 'load_after': self.load_after,
            'machine': machine(), 'versions': versions()}

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
    pos = next((i for i in (text.find(_markers(other)[0]) for other in
                            SECTIONS[SECTIONS.index(key) + 1:]) if i >= 0),
               None)
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


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def write_json(path: str, obj, **kwargs) -> None:
  """``obj`` as JSON at ``path`` (its folder made if needed)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(obj, f, **kwargs)


def write_report(args, key: str, *blocks) -> None:
  """Writes section ``key`` of the script's output file (``output_path``):
  the blocks (a title, the run's preamble, paragraphs, tables, bullet
  lists) one blank line apart; a list block is its lines, one a line;
  None and empty blocks are left out."""
  parts = ['\n'.join(b) if isinstance(b, (list, tuple)) else b
           for b in blocks]
  write_section(output_path(args), key, '\n\n'.join(p for p in parts if p))


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
  return f'{a / b:.{digits}f}x' if b else 'n/a'


def verdict(ok: bool) -> str:
  return '**met**' if ok else '**missed**'
