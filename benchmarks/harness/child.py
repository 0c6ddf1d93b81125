"""Child processes: peak RSS of a process tree, one command run in a fresh
process (time limit, memory cap), and a measurement function called in a
child on any checkout's code with its JSON result read back."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence

import psutil

from benchmarks.harness.report import ROOT, mib


class PeakRSS:
  """Polls the RSS of a process and its descendants in a thread: maxima
  over the polls (bytes) of the whole tree (``tree``), the process itself
  (``root``) and its largest single descendant (``child_max``)."""

  def __init__(self, pid: int, interval: float = 0.05):
    self.pid = pid
    self.interval = interval
    self.tree = self.root = self.child_max = 0
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
    self.tree = max(self.tree, root + sum(sizes))

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


def child_env() -> Dict[str, str]:
  """Environment for subprocesses: the repository importable, TF quiet."""
  env = dict(os.environ)
  paths = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
  if ROOT not in paths:
    env['PYTHONPATH'] = os.pathsep.join([ROOT] + paths)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  return env


@dataclasses.dataclass
class ChildResult:
  """What ``run_child`` saw: exit status, wall time, peak RSS, output and
  ``killed`` (None, or why it was stopped)."""
  returncode: int
  seconds: float
  peak: PeakRSS
  stdout: str
  stderr: str
  killed: Optional[str]

  def json(self) -> Optional[dict]:
    """The last stdout line that parses as a JSON object, if any."""
    for line in reversed(self.stdout.splitlines()):
      if line.strip().startswith('{'):
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
        if killed:  # Ends the child we started and its process group.
          with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
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


def call(function: str, *args, code_root: str = ROOT, **run_kwargs):
  """``benchmarks.<module>.<name>(*args)`` (``function`` = 'module.name') in a
  fresh process on ``code_root``'s code (the product's; the benchmark
  scripts and this harness are always ours); its JSON-able result and the
  ``ChildResult`` (``run_child``'s keywords pass through). The result is
  None when the child failed."""
  fd, path = tempfile.mkstemp(suffix='.json', prefix='tss-child-')
  os.close(fd)
  try:
    env = child_env()
    env['PYTHONPATH'] = code_root  # The code under test only.
    cmd = [sys.executable, os.path.join(os.path.dirname(__file__),
                                        'in_child.py'), function, path,
           json.dumps(args)]
    res = run_child(cmd, cwd=code_root, env=env, **run_kwargs)
    with open(path) as f:
      text = f.read()
    return (json.loads(text) if res.returncode == 0 and text else None), res
  finally:
    os.remove(path)

