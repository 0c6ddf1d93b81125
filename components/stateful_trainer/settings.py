"""Trainer settings: each declared once, with its default, check and help.

Plain Python (no TensorFlow, no TFX). ``TrainConfig`` is the one
declaration of the training loop's settings: every field carries its help
text (``field.metadata['help']``; ``components/declared.py``), and from it
come the StatefulTrainer's component parameters (``component.py``), the
executor's decoding
(``executor.py``), the pipeline's ``PipelineConfig.trainer`` and the flags of
``python -m pipeline.local_runner`` and the Kubeflow compiler
(``flag_specs``). ``OptimizerConfig`` holds the optimisation settings, read
from the model's hyperparameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional

from components import declared
from components.stateful import module_contract

# Where a per-sequence label is scored in training (see
# ``components.stateful.batches``; repeated here to keep this module free of
# TensorFlow).
LABEL_SCORINGS = ('last_step', 'every_step', 'weighted')
# ``batches.WEIGHTED_MIN_SEGMENTS``, for the help text.
WEIGHTED_MIN_SEGMENTS = 4

# The epochs rule (``epochs`` unset): RULE_EPOCHS passes over the train
# split, whatever its number of sequences; early stopping on the validation
# carve ends it sooner. (Fewer epochs for more sequences did worse:
# BENCHMARKS.md section 13.)
RULE_EPOCHS = 40

# The budget by convergence (``budget='convergence'``, in place of the
# epochs rule): train while the validation carve improves (a better score or
# a lower loss) at a constant rate; after PATIENCE_STEPS optimizer steps (and
# at least PATIENCE_MIN_EPOCHS epochs) without, the rate drops by
# RATE_FACTOR, at most RATE_REDUCTIONS times (to 1% of the peak, the
# cosine's floor); the next plateau stops training. Nothing drops or stops
# before the epochs rule's count (a floor: a plain recurrent model can sit
# on the class prior for 10 or more epochs before it learns, BENCHMARKS.md
# section 13), and CAP_FACTOR times that count is the cap.
PATIENCE_STEPS = 100
PATIENCE_MIN_EPOCHS = 10
RATE_FACTOR = 0.1
RATE_REDUCTIONS = 2
CAP_FACTOR = 4
BUDGETS = ('epochs', 'convergence')
SELECT_BY = ('score', 'loss')


class TrainingConfigError(ValueError):
  """An invalid training setting."""


def _setting(default: Any, help_text: str, *, choices=None, flag=True,
             fingerprint=True):
  return declared.setting(default, help_text, choices=choices, flag=flag,
                          fingerprint=fingerprint)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Training loop settings (the model's own settings are in ``ModelSpec``).

  Each field's help text is in its metadata; see the module docstring.
  """
  epochs: Optional[int] = _setting(
      None, 'passes over the train split (at most, with early stopping; 0: '
      'no gradient step, the weights the model module\'s adapt fitted); '
      'unset: the model module\'s default_epochs(spec) if it has one (5 '
      'for the default conv model: fine-tuning of the ridge head adapt '
      'fits, kept only if the validation carve prefers it), else the '
      f'epochs rule\'s {RULE_EPOCHS}; printed')
  max_steps: Optional[int] = _setting(
      None, 'stop after this many training steps in total (with a '
      'checkpoint), even mid-epoch')
  max_seconds: Optional[float] = _setting(
      None, 'the time budget: stop training once this many seconds of '
      'training have passed (checked after each step), keeping the best '
      'epoch so far when there is a validation carve (the refit then trains '
      'that many epochs, under the same budget); unlike max_steps, where it '
      'stops depends on the machine')
  eval_every_n_steps: int = _setting(
      0, 'also evaluate on the eval split every N training steps (0: only '
      'at epoch ends)')
  eval_each_epoch: bool = _setting(
      False, 'also evaluate on the eval split at the end of every epoch (for '
      'the log and TensorBoard only: model selection uses the validation '
      'carve; the StatefulEvaluator scores the exported model)')
  checkpoint_every_n_steps: int = _setting(
      0, 'also checkpoint every N steps (0: at epoch ends and when stopping)')
  log_every_n_steps: int = _setting(
      100, 'a progress line every N steps (0: epoch lines only)')
  seed: int = _setting(
      0, 'seeds initialisation, random kernels, dropout and group order')
  shuffle_groups: bool = _setting(
      False, 'bucketed batches only: read whole groups in a seeded random '
      'order, a new one every epoch')
  reset_state_every_batch: bool = _setting(
      False, 'ablation: zero all state before every step (no state carried '
      'across segments)')
  label_scoring: Optional[str] = _setting(
      None, 'where a per_sequence label is scored in training: last_step, '
      'every_step (target replication) or weighted ((t/L)^2); unset: the '
      "model module's label_scoring hook (default model: last_step for its "
      'conv model; for LSTM/GRU/LRU the rule below), or without one, from '
      "the model's structure: when trainable weights shape a carried state "
      '(a stateful layer with trainable weights, or a trainable layer before '
      'one), weighted if the typical training sequence spans '
      f'{WEIGHTED_MIN_SEGMENTS} segments or more, else last_step; last_step when nothing trained shapes the '
      'state; the log says which and why. Evaluation always scores the last '
      'step',
      choices=LABEL_SCORINGS)
  validation_fraction: float = _setting(
      0.2, 'share of the train split\'s sequences (by a hash of the key) '
      'held out of the loss and scored as validation each epoch; the best '
      'epoch\'s weights are kept (by validation accuracy for '
      'classification, loss otherwise; ties go to the later epoch) (0: no '
      'validation carve)')
  refit: bool = _setting(
      True, 'after the validation carve has chosen the best epoch E, train '
      'again from the same initial weights on every training sequence '
      '(the carve included) for E epochs and export that model, unless it '
      'scores strictly worse on the carve than the best epoch\'s weights '
      '(then those are exported; logged); off: export the best epoch\'s '
      'weights, which never saw the carve\'s sequences (measured: '
      'BENCHMARKS.md section 13)')
  standardize_labels: bool = _setting(
      True, 'regression: train on labels standardised with the train '
      "split's mean and standard deviation (the model's outputs are mapped "
      'back to label units by a fixed layer after it, so the exported '
      'signatures and the evaluator see label units); skipped for a model '
      "module whose scales_labels(spec) hook says it scales them itself (the "
      "default conv model)")
  score_initial: bool = _setting(
      True, 'with a validation carve, score the initial weights (after the '
      "model module's adapt, when it fitted something) before the first "
      "epoch as a candidate: "
      'training is kept only where the carve says an epoch improved on '
      'them (the default model\'s closed-form fit is never made worse)')
  early_stopping_patience: int = _setting(
      10, 'stop after this many epochs without a better validation score '
      'and without a lower validation loss (the loss counts too: a small '
      "carve's accuracy can peak by luck while its loss still falls) (0: "
      'never stop early)')
  min_carve_sequences: int = _setting(
      0, 'for a model trained from random weights (no adapt fit): when the '
      'validation carve would hold fewer than this many sequences, train on '
      'every sequence for the epoch budget and keep the last weights, with '
      'no carve, selection or refit (a handful of held-out sequences cannot '
      'choose an epoch) (0: always carve)')
  budget: str = _setting(
      'epochs', 'how long to train when epochs is unset and the model module '
      'has no default_epochs: epochs (the epochs rule, a cosine schedule '
      'over it) or convergence (with a validation carve: a constant rate '
      'while the carve improves, a better score or a lower loss; after '
      f'{PATIENCE_STEPS} optimizer steps (at least {PATIENCE_MIN_EPOCHS} '
      f'epochs) without, the rate drops {1 / RATE_FACTOR:g}x, at most '
      f'{RATE_REDUCTIONS} times, and the next such plateau stops training; '
      'nothing drops or stops before the epochs rule\'s count, and '
      f'{CAP_FACTOR}x that count is the cap; the refit replays the '
      'rate drops by step); history.json says why training stopped',
      choices=BUDGETS)
  select_by: str = _setting(
      'score', 'what the validation carve chooses the kept epoch by: score '
      '(the accuracy for classification, the loss otherwise) or loss (the '
      'carve\'s loss also for classification: smoother than the accuracy of '
      'a small carve, where one sequence moves it by more than an epoch\'s '
      'gain)', choices=SELECT_BY)
  selection_tolerance: float = _setting(
      0.0, 'with a validation carve, keep the latest epoch whose carve score '
      '(accuracy, or the loss) is within this of the best so far, not only '
      'an equal one; early stopping counts its patience from that epoch '
      '(e.g. 0.1: one sequence of a 10-sequence carve, whose accuracy can '
      'peak by one lucky sequence on an early epoch) (0: the best score, '
      'ties to the later epoch; the initial weights must still be beaten '
      'outright)')
  random_truncation: float = _setting(
      0.0, 'randomised truncation (AWD-LSTM\'s variable BPTT length, within '
      'the batches\' T): the probability that a training batch is cut at a '
      'uniformly drawn step into two truncated-BPTT windows, trained as two '
      'consecutive steps with the state carried across the cut and the '
      'gradient not, so that where gradients stop moves from step to step '
      '(0: they stop only at segment boundaries, every T steps of a '
      'sequence)')
  replicas: int = _setting(
      1, 'data-parallel training on this many local devices '
      '(tf.distribute MirroredStrategy over the GPUs, or over as many '
      'logical CPU devices when there is no GPU): replica r owns lanes '
      '[r*b, (r+1)*b) of every batch (b = batch_size / replicas, which must '
      'divide) and carries their state for the whole run. Several workers '
      'are set by TF_CONFIG instead (MultiWorkerMirroredStrategy, one '
      'replica per worker; docs/stateful_trainer.md, "Training on several '
      'replicas and workers", runs two on one machine). The same update as one process '
      'on the same lanes; not part of the checkpoints\' fingerprint, so a '
      'run resumes on another replica count', fingerprint=False)

  def __post_init__(self):
    if self.epochs is not None and (not _is_int(self.epochs) or
                                    self.epochs < 0):
      raise TrainingConfigError(f'epochs must be >= 0 (or unset), got '
                                f'{self.epochs!r}')
    if isinstance(self.random_truncation, bool) or not (
        0.0 <= float(self.random_truncation) <= 1.0):
      raise TrainingConfigError(f'random_truncation must be in [0, 1], got '
                                f'{self.random_truncation!r}')
    if isinstance(self.selection_tolerance, bool) or not (
        float(self.selection_tolerance) >= 0.0):
      raise TrainingConfigError(f'selection_tolerance must be >= 0, got '
                                f'{self.selection_tolerance!r}')
    if not _is_int(self.replicas) or self.replicas < 1:
      raise TrainingConfigError(f'replicas must be an int >= 1, got '
                                f'{self.replicas!r}')
    for name in ('eval_every_n_steps', 'checkpoint_every_n_steps',
                 'log_every_n_steps', 'seed', 'early_stopping_patience'):
      value = getattr(self, name)
      if not _is_int(value) or value < 0:
        raise TrainingConfigError(f'{name} must be an int >= 0, got {value!r}')
    if self.max_seconds is not None and (
        isinstance(self.max_seconds, bool) or
        not isinstance(self.max_seconds, (int, float)) or
        not self.max_seconds > 0):
      raise TrainingConfigError(f'max_seconds must be > 0 or None, got '
                                f'{self.max_seconds!r}')
    if self.max_steps is not None and (not _is_int(self.max_steps) or
                                       self.max_steps < 1):
      raise TrainingConfigError(f'max_steps must be >= 1 or None, got '
                                f'{self.max_steps}')
    if self.label_scoring is not None and (
        self.label_scoring not in LABEL_SCORINGS):
      raise TrainingConfigError(
          f'label_scoring must be one of {LABEL_SCORINGS} or None, got '
          f'{self.label_scoring!r}')
    if self.budget not in BUDGETS:
      raise TrainingConfigError(f'budget must be one of {BUDGETS}, got '
                                f'{self.budget!r}')
    if self.select_by not in SELECT_BY:
      raise TrainingConfigError(f'select_by must be one of {SELECT_BY}, got '
                                f'{self.select_by!r}')
    if isinstance(self.validation_fraction, bool) or not (
        0.0 <= float(self.validation_fraction) < 1.0):
      raise TrainingConfigError(f'validation_fraction must be in [0, 1), got '
                                f'{self.validation_fraction!r}')

  def replace(self, **changes) -> 'TrainConfig':
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def fingerprinted(self) -> Dict[str, Any]:
    """The settings that can change the model (the checkpoints'
    fingerprint): every field but those that only say where it trains
    (``replicas``)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.metadata.get('fingerprint', True)}

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> 'TrainConfig':
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
      raise TrainingConfigError(f'unknown trainer settings {unknown}; known: '
                                f'{sorted(names)}')
    return cls(**values)


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


# What Keras ``fit`` does, as trainer settings (issue 47, item 4): every
# training sequence (no validation carve, so no selection and no refit: the
# last weights), the order reshuffled every epoch (whole groups of bucketed
# batches, ``shuffle_groups``), the loss at each sequence's last step; with
# ``keras_layout`` (whole sequences, one segment each) and
# ``KERAS_OPTIMIZER`` (a constant rate without warm-up), the trainer's run
# is Keras' full back-propagation fit on the same lanes. The local runner's
# ``--recipe keras`` applies all three; the epochs stay the user's (the
# epochs rule when unset). tests/components/stateful_trainer/
# test_keras_parity.py holds it to Keras' accuracy.
KERAS_RECIPE = {'validation_fraction': 0.0, 'refit': False,
                'shuffle_groups': True, 'label_scoring': 'last_step'}
KERAS_OPTIMIZER = {'lr_schedule': 'constant', 'warmup_fraction': 0.0}


def keras_layout(batch_size: int, lengths) -> Dict[str, Any]:
  """The lane layout of the Keras recipe: bucketed groups of ``batch_size``
  sequences, each whole in one segment (``num_unroll`` = the longest)."""
  return {'mode': 'bucketed', 'batch_size': int(batch_size),
          'num_unroll': int(max(lengths))}


def refits(config: 'TrainConfig') -> bool:
  """Whether a run refits: ``TrainConfig.refit``, with a validation carve."""
  return bool(config.refit) and config.validation_fraction > 0


# One command-line flag of a ``TrainConfig`` field.
FlagSpec = declared.FlagSpec


def flag_specs() -> List[FlagSpec]:
  """The flags of every ``TrainConfig`` field, in declaration order."""
  return declared.flag_specs(TrainConfig)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimisation hyperparameters (keys of ``spec.hyperparameters``).

  Each field's default is the trainer's default, declared here only: a
  run's optimizer is ``from_hyperparameters(optimizer_hyperparameters(
  module, spec))``, i.e. the run's hyperparameters over the model module's
  ``optimizer_defaults(spec)`` hook over these fields. In effect:

  * the default model's conv model with its ridge head (the default): its
    hook gives SGD at ``default_model.FINE_TUNE_LEARNING_RATE`` (1e-3), the
    rest from here (cosine, clip 1.0, warm-up 0.05);
  * the default model's other forms (``lstm``, ``gru``, ``lru``, conv
    ``head='sgd'``) and a module without the hook: these fields (Adam at
    3e-3, cosine, clip 1.0, warm-up 0.05).

  Attributes:
    optimizer: ``adam``, ``sgd``, ``rmsprop`` or ``adagrad``.
    learning_rate: the (peak) learning rate.
    clip_global_norm: clip the gradients to this global norm (0 or None:
      no clipping; the clipping itself is the objective's,
      ``objective.DEFAULT_CLIP_GLOBAL_NORM``, the same default).
    momentum: for ``sgd`` and ``rmsprop``.
    lr_schedule: ``constant`` or ``cosine`` (cosine decay to 1% of
      ``learning_rate`` over the run's training steps).
    warmup_fraction: the first this share of the run's training steps
      ramps the rate linearly from 0 up to the schedule's.
    weight_decay: decoupled weight decay (AdamW: each step shrinks a
      weight by ``learning_rate * weight_decay`` of itself), on the
      matrices only: biases, scales and offsets (names ``bias``, ``gamma``,
      ``beta``) and the linear recurrence's eigenvalue and skip weights
      (``nu_log``, ``theta_log``, ``D``) are exempt (0: none).
  """
  optimizer: str = 'adam'
  learning_rate: float = 3e-3
  clip_global_norm: Optional[float] = 1.0
  momentum: float = 0.0
  lr_schedule: str = 'cosine'
  warmup_fraction: float = 0.05
  weight_decay: float = 0.0

  OPTIMIZERS = ('adam', 'sgd', 'rmsprop', 'adagrad')
  SCHEDULES = ('constant', 'cosine')

  def __post_init__(self):
    if self.optimizer not in self.OPTIMIZERS:
      raise TrainingConfigError(f'optimizer must be one of {self.OPTIMIZERS}, '
                                f'got {self.optimizer!r}')
    if not self.learning_rate > 0:
      raise TrainingConfigError(f'learning_rate must be > 0, got '
                                f'{self.learning_rate}')
    if self.lr_schedule not in self.SCHEDULES:
      raise TrainingConfigError(f'lr_schedule must be one of '
                                f'{self.SCHEDULES}, got {self.lr_schedule!r}')
    if not 0.0 <= float(self.warmup_fraction) < 1.0:
      raise TrainingConfigError(f'warmup_fraction must be in [0, 1), got '
                                f'{self.warmup_fraction}')
    if not float(self.weight_decay) >= 0.0:
      raise TrainingConfigError(f'weight_decay must be >= 0, got '
                                f'{self.weight_decay}')
    if self.clip_global_norm is not None and self.clip_global_norm < 0:
      raise TrainingConfigError(f'clip_global_norm must be >= 0, got '
                                f'{self.clip_global_norm}')

  @classmethod
  def from_hyperparameters(cls, hp: Mapping[str, Any]) -> 'OptimizerConfig':
    """The fields set in ``hp``, the others at their defaults."""
    hp = {**OPTIMIZER_DEFAULTS, **hp}
    clip = hp['clip_global_norm']
    return cls(optimizer=str(hp['optimizer']).lower(),
               learning_rate=float(hp['learning_rate']),
               clip_global_norm=float(clip) if clip else None,
               momentum=float(hp['momentum']),
               lr_schedule=str(hp['lr_schedule']).lower(),
               warmup_fraction=float(hp['warmup_fraction']),
               weight_decay=float(hp['weight_decay']))


# The trainer's optimizer defaults by hyperparameter key: a view of the
# ``OptimizerConfig`` fields' defaults (declared there), for readers of a
# dict (``--help``, benchmarks).
OPTIMIZER_DEFAULTS: Dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(OptimizerConfig)}


def optimizer_hyperparameters(module, spec) -> Dict[str, Any]:
  """The hyperparameters a run's optimizer is made from: the run's
  hyperparameters over the model module's ``optimizer_defaults(spec)``
  hook over the trainer's defaults (``OptimizerConfig``; see there)."""
  hook = module_contract.hooks_of(module).optimizer_defaults
  return {**OPTIMIZER_DEFAULTS, **(dict(hook(spec)) if hook else {}),
          **dict(spec.hyperparameters)}
