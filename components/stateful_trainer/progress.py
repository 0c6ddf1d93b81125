"""What a run shows while it trains: progress lines with counts and rates
(every N steps and at every epoch end) and TensorBoard scalars."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

import tensorflow as tf
import tf_keras as keras

from components.stateful.objective import metric_results
from components.stateful_trainer.settings import TrainConfig

# The loop's logger: the progress lines are the training loop's.
_LOG = logging.getLogger('components.stateful_trainer.training')
# The run's: its phases are the run's.
_RUN_LOG = logging.getLogger('components.stateful_trainer.run')

# A run's phases, in order (``Phases``): reading the data's metadata and
# labels, building and adapting the model, the training epochs, the passes
# over the validation carve, the refit (its model, its epochs) and the export.
PHASES = ('setup', 'adapt', 'training', 'validation', 'refit', 'export')


def fmt_metrics(metrics: Mapping[str, float]) -> str:
  return ' '.join(f'{k} {v:.4f}' for k, v in metrics.items())


class Summaries:
  """TensorBoard scalars (no-op without a directory)."""

  def __init__(self, logdir: Optional[str]):
    self._writers = {}
    self._logdir = logdir

  def scalars(self, phase: str, values: Mapping[str, float], step: int):
    if not self._logdir:
      return
    if phase not in self._writers:
      self._writers[phase] = tf.summary.create_file_writer(
          f'{self._logdir}/{phase}')
    with self._writers[phase].as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, value)
    self._writers[phase].flush()


class ProgressLog:
  """Progress lines with rates: every N steps, and at every epoch end."""

  def __init__(self, config: TrainConfig, num_batches: int,
               clock: Callable[[], float]):
    self._config = config
    self._num_batches = num_batches
    self._clock = clock
    self._last = clock()
    self._steps = 0
    self._real = 0.0

  def step(self, epoch: int, batch: int, step: int,
           out: Dict[str, tf.Tensor],
           metrics: List[keras.metrics.Metric]) -> None:
    self._steps += 1
    self._real += float(out['real_steps'])
    every = self._config.log_every_n_steps
    if not every or step % every:
      return
    now = self._clock()
    dt = max(now - self._last, 1e-9)
    _LOG.info(
        'epoch %d/%d batch %d/%d step %d: loss %.4f (epoch %s) | '
        '%.1f steps/s, %.0f real timesteps/s', epoch + 1, self._config.epochs,
        batch, self._num_batches, step, float(out['loss']),
        fmt_metrics(metric_results(metrics)), self._steps / dt, self._real / dt)
    self._last, self._steps, self._real = now, 0, 0.0

  def epoch(self, stats: Any) -> None:
    """``stats``: the finished epoch's ``training.EpochStats``."""
    _LOG.info(
        'epoch %d/%d done: %s | %d steps in %.1fs, %.1f steps/s, '
        '%.0f real timesteps/s', stats.epoch + 1, self._config.epochs,
        fmt_metrics(stats.train), stats.steps, stats.seconds, stats.steps_per_sec,
        stats.real_steps_per_sec)
    self._last, self._steps, self._real = self._clock(), 0, 0.0


class Phases:
  """Wall seconds per phase of a run (``history.json``'s ``phases``), one
  log line as each ends; ``total`` is the run's from this object's start.
  Timing only: nothing here changes what the run does."""

  def __init__(self, clock: Callable[[], float] = time.perf_counter):
    self._clock = clock
    self._started = clock()
    self._mark = self._started
    self.seconds: Dict[str, float] = {}

  def add(self, name: str, seconds: float, note: str = '',
          quiet: bool = False) -> None:
    """Adds ``seconds`` to phase ``name`` and logs it (``quiet``: later,
    by ``log``)."""
    self.seconds[name] = self.seconds.get(name, 0.0) + max(0.0, seconds)
    if not quiet:
      self.log(name, note)

  def log(self, name: str, note: str = '') -> None:
    _RUN_LOG.info('phase %s: %.2fs%s', name, self.seconds.get(name, 0.0),
                  f' ({note})' if note else '')

  def end(self, name: str, less: float = 0.0, note: str = '') -> None:
    """Ends phase ``name``: the seconds since the last end (or the start),
    less ``less`` (counted in another phase)."""
    now = self._clock()
    self.add(name, now - self._mark - less, note)
    self._mark = now

  def as_dict(self) -> Dict[str, float]:
    """Every phase in ``PHASES`` order (0 where it did not run), then
    ``total``."""
    out = {name: round(self.seconds.get(name, 0.0), 3) for name in PHASES}
    out.update({k: round(v, 3) for k, v in self.seconds.items()
                if k not in out})
    out['total'] = round(self._clock() - self._started, 3)
    return out
