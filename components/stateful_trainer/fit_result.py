"""What the training loop keeps and reports: its data cursor (checkpointed
with the model), each epoch's figures and the outcome of ``fit``. Used by
``training.py`` (and importable from it)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf

from components.stateful_trainer.settings import TrainConfig


class Cursor(tf.Module):
  """Where training is: the data position, checkpointed with the model.

  Attributes:
    epoch: the current epoch (0-based).
    batch: the next batch of that epoch to train on.
    step: training steps done in total.
  """

  def __init__(self):
    super().__init__(name='cursor')
    self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name='epoch')
    self.batch = tf.Variable(0, dtype=tf.int64, trainable=False, name='batch')
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')


@dataclasses.dataclass
class EpochStats:
  """What one epoch (or its resumed remainder) did."""
  epoch: int
  steps: int
  real_steps: float
  seconds: float
  train: Dict[str, float]
  eval: Optional[Dict[str, float]] = None
  # The validation carve: ``valid`` scored after the epoch by a pass without
  # updates (what selection and early stopping read); ``valid_streamed``
  # accumulated during the epoch, each step by the weights of that step.
  valid: Optional[Dict[str, float]] = None
  valid_streamed: Optional[Dict[str, float]] = None

  @property
  def steps_per_sec(self) -> float:
    return self.steps / self.seconds if self.seconds > 0 else 0.0

  @property
  def real_steps_per_sec(self) -> float:
    return self.real_steps / self.seconds if self.seconds > 0 else 0.0

  def as_dict(self) -> Dict[str, Any]:
    return {'epoch': self.epoch, 'steps': self.steps,
            'real_timesteps': self.real_steps, 'seconds': self.seconds,
            'steps_per_sec': self.steps_per_sec,
            'real_timesteps_per_sec': self.real_steps_per_sec,
            'train': dict(self.train),
            'valid': dict(self.valid) if self.valid is not None else None,
            'valid_streamed': (dict(self.valid_streamed)
                               if self.valid_streamed is not None else None),
            'eval': dict(self.eval) if self.eval is not None else None}


@dataclasses.dataclass
class FitResult:
  """Outcome of ``fit``.

  Attributes:
    epochs: per-epoch statistics (epochs finished in this call).
    evaluations: every evaluation as ``(global_step, metrics)``.
    steps: total training steps done (including before a resume).
    resumed_from: the checkpoint restored at the start, if any.
    finished: True when all epochs ran or early stopping ended training
      (False when ``max_steps`` or a hook stopped it first).
    best_epoch: with a validation carve, the 0-based epoch whose weights
      were kept (the model holds them; -1: the initial weights); else None.
    stop_reason: why training stopped: ``epochs`` (all ran; the cap of
      the budget by convergence), ``early_stopping`` (patience),
      ``converged`` (the budget by convergence: no improvement after the
      last rate drop), ``no_gain`` (the first epoch neither
      beat the initial weights on the carve nor lowered its loss),
      ``initial_unbeatable`` (the initial weights score perfectly on the
      carve: no epoch ran), ``max_seconds`` (the time budget),
      ``max_steps`` or ``hook`` (``after_step``); ``no_epochs`` when none
      was planned.
    carve: with ``fit(score_carve=...)``, the validation carve's metrics of
      the weights ``fit`` left in the model, scored by one pass without
      updates (the same pass for any weights, so two runs' figures
      compare): the pass that scored the kept epoch (or initial weights)
      when it ran in this process on the same carve, else one after
      training; else None.
    validation_seconds: wall seconds of this call's passes over the
      validation carve (before training, after each epoch, the final
      score) and of laying its batches out (``carve.carve_batches``);
      the run's ``phases`` count them apart from training.
  """
  epochs: List[EpochStats]
  evaluations: List[Tuple[int, Dict[str, float]]]
  steps: int
  resumed_from: Optional[str]
  finished: bool
  best_epoch: Optional[int] = None
  stop_reason: str = 'epochs'
  carve: Optional[Dict[str, float]] = None
  validation_seconds: float = 0.0

  @property
  def final_eval(self) -> Optional[Dict[str, float]]:
    return self.evaluations[-1][1] if self.evaluations else None


def stop_text(reason: str, config: TrainConfig, converging: bool) -> str:
  """Why training stopped (``FitResult.stop_reason``), in words for the
  log; ``converging``: the budget by convergence ran (the epochs are its
  cap)."""
  return {
      'epochs': f'all {config.epochs} epochs ran' + (
          ' (the cap of the budget by convergence; the carve still '
          'improved)' if converging else ''),
      'converged': 'the validation carve stopped improving after the last '
                   'rate drop (the budget by convergence)',
      'no_epochs': 'no epoch planned',
      'early_stopping': f'no better validation score and no lower '
                        f'validation loss for '
                        f'{config.early_stopping_patience} epochs',
      'initial_unbeatable': 'the initial weights score perfectly on the '
                            'validation carve',
      'no_gain': 'the first epoch after the initial weights neither scored '
                 'better nor lowered the validation loss',
      'max_seconds': f'the time budget ({config.max_seconds:g}s) was spent'
                     if config.max_seconds else 'time budget',
      'max_steps': f'max_steps ({config.max_steps}) reached',
      'hook': 'the after_step hook asked to stop'}[reason]
