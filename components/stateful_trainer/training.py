"""The stateful training loop, as small functions. No TFX import.

Semantics (DESIGN.md, issue 3):

* Batches are read strictly in order (``read_batches``), never shuffled; in
  ``bucketed`` mode whole groups may be permuted per epoch (seeded).
* Before every step the state rows of lanes with ``reset == 1`` are zeroed in
  every stateful recurrent layer (``state.reset_lanes``); other lanes keep
  their state. The ablation ``reset_state_every_batch`` zeroes all lanes
  before every step instead (plain truncated BPTT without carried state).
* All state is zeroed at the start of every epoch and at every phase
  boundary; evaluation runs with its own (zeroed) state and the training
  state is snapshotted before and restored after it.
* Loss and metrics are weighted by ``label_weight`` [B, T]; gradients are
  clipped by global norm.
* ``fit`` checkpoints weights, optimizer, RNN state, metric accumulators and
  the data cursor (epoch, batch) with ``tf.train.Checkpoint``; a restarted
  run resumes mid-epoch and ends with the same weights as an uninterrupted
  one.

Shapes: B lanes, T steps per segment, F features, K outputs per step.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.sequence_batcher import layout as sb_layout
from components.sequence_batcher import reader as sb_reader
from components.stateful_trainer import model_spec as ms
from components.stateful_trainer import state

_LOG = logging.getLogger(__name__)

# Batch keys the training and evaluation steps consume.
STEP_KEYS = ('features', 'labels', 'mask', 'label_weight', 'reset')

Batch = Dict[str, tf.Tensor]


class LabelError(ValueError):
  """The batches' labels do not fit the task."""


class TrainingConfigError(ValueError):
  """An invalid training setting."""


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Loop settings (the model's own settings are in ``ModelSpec``).

  Attributes:
    epochs: passes over the train split (>= 1).
    max_steps: optional cap on the total number of training steps; training
      stops (with a checkpoint) when it is reached, even mid-epoch.
    eval_every_n_steps: also evaluate every N training steps (0: only at the
      end of each epoch).
    eval_each_epoch: evaluate at the end of every epoch (when there is an
      eval split).
    checkpoint_every_n_steps: also checkpoint every N steps (0: only at the
      end of each epoch and when stopping). Needs a checkpoint directory.
    log_every_n_steps: a progress line every N steps (0: epoch lines only).
    seed: seeds TensorFlow, the module (``spec.seed``) and the group order.
    shuffle_groups: ``bucketed`` batches only: read whole groups in a seeded
      random order, a new one every epoch.
    reset_state_every_batch: ablation: zero all state before every step (in
      training and evaluation), i.e. no state carried across segments.
  """
  epochs: int = 1
  max_steps: Optional[int] = None
  eval_every_n_steps: int = 0
  eval_each_epoch: bool = True
  checkpoint_every_n_steps: int = 0
  log_every_n_steps: int = 100
  seed: int = 0
  shuffle_groups: bool = False
  reset_state_every_batch: bool = False

  def __post_init__(self):
    for name in ('epochs',):
      if getattr(self, name) < 1:
        raise TrainingConfigError(f'{name} must be >= 1, got '
                                  f'{getattr(self, name)}')
    for name in ('eval_every_n_steps', 'checkpoint_every_n_steps',
                 'log_every_n_steps', 'seed'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TrainingConfigError(f'{name} must be an int >= 0, got {value!r}')
    if self.max_steps is not None and self.max_steps < 1:
      raise TrainingConfigError(f'max_steps must be >= 1 or None, got '
                                f'{self.max_steps}')


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimization hyperparameters (keys of ``spec.hyperparameters``).

  Attributes:
    optimizer: ``adam`` (default), ``sgd``, ``rmsprop`` or ``adagrad``.
    learning_rate: the learning rate (default 1e-3).
    clip_global_norm: clip the gradients to this global norm (default 1.0;
      0 or None: no clipping).
    momentum: for ``sgd`` and ``rmsprop`` (default 0).
  """
  optimizer: str = 'adam'
  learning_rate: float = 1e-3
  clip_global_norm: Optional[float] = 1.0
  momentum: float = 0.0

  OPTIMIZERS = ('adam', 'sgd', 'rmsprop', 'adagrad')

  def __post_init__(self):
    if self.optimizer not in self.OPTIMIZERS:
      raise TrainingConfigError(f'optimizer must be one of {self.OPTIMIZERS}, '
                                f'got {self.optimizer!r}')
    if not self.learning_rate > 0:
      raise TrainingConfigError(f'learning_rate must be > 0, got '
                                f'{self.learning_rate}')
    if self.clip_global_norm is not None and self.clip_global_norm < 0:
      raise TrainingConfigError(f'clip_global_norm must be >= 0, got '
                                f'{self.clip_global_norm}')

  @classmethod
  def from_hyperparameters(cls, hp: Mapping[str, Any]) -> 'OptimizerConfig':
    clip = hp.get('clip_global_norm', 1.0)
    return cls(optimizer=str(hp.get('optimizer', 'adam')).lower(),
               learning_rate=float(hp.get('learning_rate', 1e-3)),
               clip_global_norm=float(clip) if clip else None,
               momentum=float(hp.get('momentum', 0.0)))


def make_optimizer(config: OptimizerConfig) -> keras.optimizers.Optimizer:
  """A Keras 2 optimizer (not yet built; ``fit`` builds it)."""
  kwargs = dict(learning_rate=config.learning_rate, jit_compile=False)
  if config.optimizer == 'adam':
    return keras.optimizers.Adam(**kwargs)
  if config.optimizer == 'sgd':
    return keras.optimizers.SGD(momentum=config.momentum, **kwargs)
  if config.optimizer == 'rmsprop':
    return keras.optimizers.RMSprop(momentum=config.momentum, **kwargs)
  return keras.optimizers.Adagrad(**kwargs)


# --------------------------------------------------------------------------
# The objective: loss and metrics for the task
# --------------------------------------------------------------------------


def _default_loss(spec: ms.ModelSpec) -> Callable[[tf.Tensor, tf.Tensor],
                                                  tf.Tensor]:
  if spec.task == ms.CLASSIFICATION:

    def loss(labels, outputs):
      return tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=tf.cast(labels, tf.int32), logits=outputs)

    return loss

  def squared_error(labels, outputs):
    return tf.square(outputs[..., 0] - tf.cast(labels, outputs.dtype))

  return squared_error


def _default_metrics(spec: ms.ModelSpec) -> List[keras.metrics.Metric]:
  if spec.task == ms.CLASSIFICATION:
    return [keras.metrics.SparseCategoricalAccuracy(name='accuracy')]
  return [keras.metrics.MeanAbsoluteError(name='mae'),
          keras.metrics.RootMeanSquaredError(name='rmse')]


@dataclasses.dataclass
class Objective:
  """Per-step loss and metric factory of one task.

  Attributes:
    spec: the model spec (task, classes, output size).
    loss_fn: ``(labels [B, T], outputs [B, T, K]) -> float32[B, T]``
      unreduced per-step losses; the trainer weights them by
      ``label_weight``.
    metrics_fn: ``() -> [keras.metrics.Metric]``, fresh metric objects,
      updated with ``(labels, outputs [N, K], sample_weight [N])`` over the
      N = B * T steps of a batch; labels are int [N] for classification and
      float32 [N, 1] for regression.
    clip_global_norm: gradient clipping norm, or None.
  """
  spec: ms.ModelSpec
  loss_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
  metrics_fn: Callable[[], List[keras.metrics.Metric]]
  clip_global_norm: Optional[float]

  def per_step_loss(self, labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    values = self.loss_fn(labels, outputs)
    if values.shape.rank != 2:
      raise TrainingConfigError(
          'the loss must return unreduced per-step values [B, T]; got shape '
          f'{values.shape}. Return a Keras loss *function* or a Loss object '
          '(its unreduced .call is used).')
    return tf.cast(values, tf.float32)

  def new_metrics(self) -> List[keras.metrics.Metric]:
    """``[loss, *task metrics]``; the first is the weighted mean loss."""
    return [keras.metrics.Mean(name='loss')] + list(self.metrics_fn())


def make_objective(spec: ms.ModelSpec, module: Any = None) -> Objective:
  """The objective of ``spec``'s task, with the module's optional hooks.

  A module may define ``loss(spec)`` returning a Keras loss function or a
  ``keras.losses.Loss`` (applied unreduced, to [B, T] labels and [B, T, K]
  outputs), and ``metrics(spec)`` returning a list of Keras metrics.
  """
  loss_fn = _default_loss(spec)
  if module is not None and hasattr(module, 'loss'):
    user = module.loss(spec)
    loss_fn = user.call if isinstance(user, keras.losses.Loss) else user
  metrics_fn = lambda: _default_metrics(spec)
  if module is not None and hasattr(module, 'metrics'):
    metrics_fn = lambda: list(module.metrics(spec))
  opt = OptimizerConfig.from_hyperparameters(spec.hyperparameters)
  return Objective(spec=spec, loss_fn=loss_fn, metrics_fn=metrics_fn,
                   clip_global_norm=opt.clip_global_norm)


def weighted_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  """``sum(w * v) / sum(w)``; 0 when no step is weighted."""
  return tf.math.divide_no_nan(tf.reduce_sum(values * weights),
                               tf.reduce_sum(weights))


def update_metrics(metrics: List[keras.metrics.Metric],
                   objective: Objective, batch: Batch, outputs: tf.Tensor,
                   per_step_loss: tf.Tensor) -> None:
  """Updates ``[loss, *metrics]`` with one batch, weighted by label_weight."""
  weights = tf.reshape(batch['label_weight'], [-1])
  metrics[0].update_state(tf.reshape(per_step_loss, [-1]),
                          sample_weight=weights)
  labels = tf.reshape(batch['labels'], [-1])
  k = outputs.shape[-1]
  preds = tf.reshape(outputs, [-1, k])
  if objective.spec.task == ms.REGRESSION:
    labels = tf.cast(labels, tf.float32)[:, None]  # [N, 1] vs preds [N, K].
  for metric in metrics[1:]:
    metric.update_state(labels, preds, sample_weight=weights)


def metric_results(metrics: List[keras.metrics.Metric]) -> Dict[str, float]:
  return {m.name: float(m.result()) for m in metrics}


def reset_metrics(metrics: List[keras.metrics.Metric]) -> None:
  for m in metrics:
    m.reset_state()


# --------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------


def prepare_state(model: keras.Model, reset: tf.Tensor,
                  reset_all: bool = False) -> None:
  """Zeroes the lanes that start a sequence (or every lane, ablation)."""
  if reset_all:
    state.zero_all(model)
  else:
    state.reset_lanes(model, reset)


def train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer,
               objective: Objective, metrics: List[keras.metrics.Metric],
               batch: Batch, reset_all: bool = False) -> Dict[str, tf.Tensor]:
  """One truncated-BPTT step on one batch.

  Args:
    model: stateful model, features float32[B, T, F] -> float32[B, T, K].
    optimizer: built Keras optimizer.
    objective: loss and clipping.
    metrics: ``objective.new_metrics()`` to update.
    batch: ``features`` float32[B, T, F], ``labels`` [B, T], ``mask``
      float32[B, T], ``label_weight`` float32[B, T], ``reset`` int64[B].
    reset_all: ablation: zero every lane's state first.

  Returns:
    ``loss`` (weighted mean over the batch's labelled steps, scalar),
    ``grad_norm`` (before clipping) and ``real_steps`` (sum of the mask).
  """
  prepare_state(model, batch['reset'], reset_all)
  with tf.GradientTape() as tape:
    outputs = model(batch['features'], training=True)
    per_step = objective.per_step_loss(batch['labels'], outputs)
    loss = weighted_mean(per_step, batch['label_weight'])
    if model.losses:  # Regularisers.
      loss += tf.add_n(model.losses)
  pairs = [(g, v) for g, v in zip(
      tape.gradient(loss, model.trainable_variables),
      model.trainable_variables) if g is not None]  # None: not connected.
  grads = [g for g, _ in pairs]
  if objective.clip_global_norm and grads:
    grads, norm = tf.clip_by_global_norm(grads, objective.clip_global_norm)
  else:
    norm = tf.linalg.global_norm(grads) if grads else tf.constant(0.0)
  if grads:
    optimizer.apply_gradients(zip(grads, [v for _, v in pairs]))
  update_metrics(metrics, objective, batch, outputs, per_step)
  return {'loss': loss, 'grad_norm': norm,
          'real_steps': tf.reduce_sum(batch['mask'])}


def eval_step(model: keras.Model, objective: Objective,
              metrics: List[keras.metrics.Metric], batch: Batch,
              reset_all: bool = False) -> Dict[str, tf.Tensor]:
  """Forward pass on one batch (state carried), updating ``metrics``."""
  prepare_state(model, batch['reset'], reset_all)
  outputs = model(batch['features'], training=False)
  per_step = objective.per_step_loss(batch['labels'], outputs)
  update_metrics(metrics, objective, batch, outputs, per_step)
  return {'loss': weighted_mean(per_step, batch['label_weight']),
          'real_steps': tf.reduce_sum(batch['mask'])}


def predict_step(model: keras.Model, features: tf.Tensor, reset: tf.Tensor,
                 reset_all: bool = False) -> tf.Tensor:
  """Resets the starting lanes, then returns outputs float32[B, T, K]."""
  prepare_state(model, reset, reset_all)
  return model(features, training=False)


@dataclasses.dataclass
class StepFunctions:
  """``train_step``/``eval_step``/``predict_step`` bound and compiled."""
  train: Callable[[Batch], Dict[str, tf.Tensor]]
  eval: Callable[[Batch], Dict[str, tf.Tensor]]
  predict: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def compile_steps(model: keras.Model,
                  optimizer: Optional[keras.optimizers.Optimizer],
                  objective: Optional[Objective],
                  train_metrics: Optional[List[keras.metrics.Metric]] = None,
                  eval_metrics: Optional[List[keras.metrics.Metric]] = None,
                  *, reset_all: bool = False) -> StepFunctions:
  """Binds the steps to their objects and wraps them in ``tf.function``."""

  def train(batch):
    return train_step(model, optimizer, objective, train_metrics, batch,
                      reset_all)

  def evaluate_one(batch):
    return eval_step(model, objective, eval_metrics, batch, reset_all)

  def predict(features, reset):
    return predict_step(model, features, reset, reset_all)

  # autograph=False: the steps have no tensor-dependent Python control flow,
  # and converting Keras' RNN code costs ~10 s per trace.
  return StepFunctions(train=tf.function(train, autograph=False),
                       eval=tf.function(evaluate_one, autograph=False),
                       predict=tf.function(predict, autograph=False))


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def group_order(seed: int, epoch: int, num_groups: int) -> np.ndarray:
  """The seeded permutation of bucketed groups for one epoch."""
  return np.random.default_rng([int(seed), int(epoch)]).permutation(
      int(num_groups))


@dataclasses.dataclass(frozen=True)
class BatchSource:
  """One split of a SequenceBatcher output.

  Attributes:
    path: the SequenceBatches URI.
    split: the split name.
    meta: the split's metadata (``load_metadata``).
  """
  path: str
  split: str
  meta: Mapping[str, Any]

  @classmethod
  def open(cls, path: str, split: str) -> 'BatchSource':
    _, meta = sb_reader.load_metadata(path, split)
    return cls(path=path, split=split, meta=meta)

  @property
  def num_batches(self) -> int:
    return int(self.meta['num_batches'])

  @property
  def num_groups(self) -> int:
    return len(self.meta.get('groups') or [])

  def dataset(self, *, epoch: int = 0, start: int = 0,
              shuffle_groups: bool = False, seed: int = 0,
              keys: Optional[Tuple[str, ...]] = STEP_KEYS) -> tf.data.Dataset:
    """Batches of one epoch, in order, from batch ``start`` on.

    With ``shuffle_groups`` (bucketed mode only) whole groups come in the
    order ``group_order(seed, epoch, num_groups)``.
    """
    order = None
    if shuffle_groups:
      if self.meta['mode'] != sb_layout.BUCKETED:
        raise TrainingConfigError(
            'shuffle_groups needs bucketed batches (whole groups start and '
            f'end together); split {self.split!r} is {self.meta["mode"]!r}')
      order = group_order(seed, epoch, self.num_groups).tolist()
    ds = sb_reader.read_batches(self.path, self.split, group_order=order)
    if keys is not None:
      ds = ds.map(lambda b: {k: b[k] for k in keys})
    if start:
      ds = ds.skip(start)
    return ds.prefetch(2)


def scan_labels(source: BatchSource) -> Dict[str, Any]:
  """Statistics of the labelled steps (``label_weight > 0``) of a split.

  Returns:
    ``count``, ``min``, ``max`` and ``integral`` (all labelled values are
    whole numbers).
  """
  ds = source.dataset(keys=('labels', 'label_weight'))
  count, lo, hi, integral = 0, np.inf, -np.inf, True
  for batch in ds.as_numpy_iterator():
    values = batch['labels'][batch['label_weight'] > 0]
    if values.size == 0:
      continue
    count += values.size
    lo = min(lo, float(values.min()))
    hi = max(hi, float(values.max()))
    if integral and values.dtype.kind == 'f':
      integral = bool(np.all(np.isfinite(values)) and
                      np.all(values == np.round(values)))
  return {'count': count, 'min': lo, 'max': hi, 'integral': integral}


def check_labels(spec: ms.ModelSpec, label_dtype: str,
                 stats: Mapping[str, Any]) -> None:
  """Raises ``LabelError`` when the labels do not fit ``spec``'s task."""
  if stats['count'] == 0:
    raise LabelError('the split has no labelled step (label_weight is 0 '
                     'everywhere)')
  if spec.task == ms.CLASSIFICATION:
    if label_dtype != 'int64':
      raise LabelError(
          f'classification needs integer class labels; the batches have '
          f'{label_dtype} labels (min {stats["min"]}, max {stats["max"]}). '
          "Use task='regression' or write integer labels.")
    if stats['min'] < 0 or stats['max'] >= spec.num_classes:
      raise LabelError(
          f'class labels must be in [0, {spec.num_classes}); the batches have '
          f'labels in [{stats["min"]:g}, {stats["max"]:g}]')
  else:
    if spec.output_size != 1:
      raise LabelError(
          f'regression with output_size={spec.output_size} needs vector '
          'labels, but the batches carry one scalar label per step: use '
          'output_size=1')
    if not (np.isfinite(stats['min']) and np.isfinite(stats['max'])):
      raise LabelError('regression labels contain NaN or infinity')


def infer_num_classes(stats: Mapping[str, Any]) -> int:
  """``max(label) + 1`` (at least 2) of integer labels."""
  return max(2, int(stats['max']) + 1)


# --------------------------------------------------------------------------
# Loops
# --------------------------------------------------------------------------


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


def evaluate(model: keras.Model, steps: StepFunctions,
             metrics: List[keras.metrics.Metric],
             dataset: tf.data.Dataset,
             max_batches: Optional[int] = None) -> Dict[str, float]:
  """Runs ``steps.eval`` over ``dataset`` from zero state.

  The state is zeroed before and after (phase boundaries); callers that
  must keep a training state use ``evaluate_preserving_state``.

  Returns:
    ``{'loss': ..., <metric>: ...}`` over all labelled steps.
  """
  reset_metrics(metrics)
  state.zero_all(model)
  for i, batch in enumerate(dataset):
    if max_batches is not None and i >= max_batches:
      break
    steps.eval(batch)
  state.zero_all(model)
  return metric_results(metrics)


def evaluate_preserving_state(model: keras.Model, steps: StepFunctions,
                              metrics: List[keras.metrics.Metric],
                              dataset: tf.data.Dataset) -> Dict[str, float]:
  """``evaluate`` between a snapshot and a restore of the training state."""
  saved = state.snapshot(model)
  try:
    return evaluate(model, steps, metrics, dataset)
  finally:
    state.restore(model, saved)


def predict_batches(model: keras.Model, dataset: tf.data.Dataset, *,
                    reset_all: bool = False,
                    steps: Optional[StepFunctions] = None
                   ) -> Iterator[Tuple[Dict[str, np.ndarray], np.ndarray]]:
  """Yields ``(batch, outputs float32[B, T, K])`` in order, state carried.

  ``dataset`` yields batches with at least ``features`` and ``reset`` (e.g.
  ``BatchSource.dataset(keys=None)``). The state is zeroed first.
  """
  steps = steps or compile_steps(model, None, None, reset_all=reset_all)
  state.zero_all(model)
  for batch in dataset:
    outputs = steps.predict(batch['features'], batch['reset'])
    yield ({k: v.numpy() for k, v in batch.items()}, outputs.numpy())


@dataclasses.dataclass
class EpochStats:
  """What one epoch (or its resumed remainder) did."""
  epoch: int
  steps: int
  real_steps: float
  seconds: float
  train: Dict[str, float]
  eval: Optional[Dict[str, float]] = None

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
            'eval': dict(self.eval) if self.eval is not None else None}


@dataclasses.dataclass
class FitResult:
  """Outcome of ``fit``.

  Attributes:
    epochs: per-epoch statistics (epochs finished in this call).
    evaluations: every evaluation as ``(global_step, metrics)``.
    steps: total training steps done (including before a resume).
    resumed_from: the checkpoint restored at the start, if any.
    finished: True when all epochs ran (False when ``max_steps`` or a
      hook stopped training first).
  """
  epochs: List[EpochStats]
  evaluations: List[Tuple[int, Dict[str, float]]]
  steps: int
  resumed_from: Optional[str]
  finished: bool

  @property
  def final_eval(self) -> Optional[Dict[str, float]]:
    return self.evaluations[-1][1] if self.evaluations else None


class _Summaries:
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


def _fmt(metrics: Mapping[str, float]) -> str:
  return ' '.join(f'{k} {v:.4f}' for k, v in metrics.items())


def train_epoch(steps: StepFunctions, dataset: tf.data.Dataset,
                cursor: Cursor, metrics: List[keras.metrics.Metric], *,
                on_step: Callable[[Dict[str, tf.Tensor]], bool],
                clock: Callable[[], float] = time.monotonic
               ) -> Tuple[EpochStats, bool]:
  """Trains on ``dataset`` (the rest of one epoch) in order.

  Advances ``cursor`` (batch, step) after every step, then calls
  ``on_step(step outputs)``; a True return stops the epoch early.

  Returns:
    ``(stats of the batches run, stopped early)``. ``stats.seconds`` is the
    time spent reading and training, without the time in ``on_step``
    (evaluations, checkpoints).
  """
  started = clock()
  in_hooks = 0.0
  n_steps, real_steps, stopped = 0, 0.0, False
  for batch in dataset:
    out = steps.train(batch)
    n_steps += 1
    real_steps += float(out['real_steps'])
    cursor.batch.assign_add(1)
    cursor.step.assign_add(1)
    hook_start = clock()
    stop = on_step(out)
    in_hooks += clock() - hook_start
    if stop:
      stopped = True
      break
  stats = EpochStats(epoch=int(cursor.epoch), steps=n_steps,
                     real_steps=real_steps,
                     seconds=clock() - started - in_hooks,
                     train=metric_results(metrics))
  return stats, stopped


class _ProgressLog:
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
        _fmt(metric_results(metrics)), self._steps / dt, self._real / dt)
    self._last, self._steps, self._real = now, 0, 0.0

  def epoch(self, stats: EpochStats) -> None:
    _LOG.info(
        'epoch %d/%d done: %s | %d steps in %.1fs, %.1f steps/s, '
        '%.0f real timesteps/s', stats.epoch + 1, self._config.epochs,
        _fmt(stats.train), stats.steps, stats.seconds, stats.steps_per_sec,
        stats.real_steps_per_sec)
    self._last, self._steps, self._real = self._clock(), 0, 0.0


def fit(model: keras.Model,
        *,
        optimizer: keras.optimizers.Optimizer,
        objective: Objective,
        train: BatchSource,
        eval_source: Optional[BatchSource] = None,
        config: TrainConfig = TrainConfig(),
        checkpoint_dir: Optional[str] = None,
        summary_dir: Optional[str] = None,
        clock: Callable[[], float] = time.monotonic,
        after_step: Optional[Callable[[int], Optional[bool]]] = None,
        max_checkpoints: int = 3) -> FitResult:
  """Trains ``model`` statefully; resumes from ``checkpoint_dir`` if it holds
  a checkpoint.

  Args:
    model: a model that passed ``state.check_stateful_model``.
    optimizer: a Keras optimizer (built here).
    objective: loss, metrics and clipping.
    train: the train split.
    eval_source: the eval split, or None (no evaluation).
    config: loop settings.
    checkpoint_dir: where ``tf.train.Checkpoint``s go (None: none).
    summary_dir: TensorBoard log directory (None: none).
    clock: seconds, monotonic (injected for tests).
    after_step: called with the global step after every training step (and
      its periodic evaluation/checkpoint); returning True stops training.
    max_checkpoints: checkpoints kept.

  Returns:
    A ``FitResult``.
  """
  optimizer.build(model.trainable_variables)
  train_metrics = objective.new_metrics()
  eval_metrics = objective.new_metrics()
  steps = compile_steps(model, optimizer, objective, train_metrics,
                        eval_metrics, reset_all=config.reset_state_every_batch)
  cursor = Cursor()
  summaries = _Summaries(summary_dir)
  manager = None
  resumed_from = None
  if checkpoint_dir:
    ckpt = tf.train.Checkpoint(
        model=model, optimizer=optimizer,
        rnn_states=state.state_variables(model), cursor=cursor,
        train_metrics=train_metrics)
    manager = tf.train.CheckpointManager(ckpt, checkpoint_dir,
                                         max_to_keep=max_checkpoints)
    if manager.latest_checkpoint:
      resumed_from = manager.latest_checkpoint
      ckpt.restore(resumed_from).assert_existing_objects_matched()
      _LOG.info('resumed from %s at epoch %d, batch %d (step %d)',
                resumed_from, int(cursor.epoch), int(cursor.batch),
                int(cursor.step))
  if resumed_from is None:
    state.zero_all(model)

  def run_eval(where: str) -> Dict[str, float]:
    started = clock()
    results = evaluate_preserving_state(model, steps, eval_metrics,
                                        eval_source.dataset())
    step = int(cursor.step)
    evaluations.append((step, results))
    summaries.scalars('eval', results, step)
    _LOG.info('eval (%s, step %d): %s [%.1fs]', where, step, _fmt(results),
              clock() - started)
    return results

  def save():
    if manager is not None:
      manager.save(checkpoint_number=int(cursor.step))

  epochs: List[EpochStats] = []
  evaluations: List[Tuple[int, Dict[str, float]]] = []
  num_batches = train.num_batches
  log = _ProgressLog(config, num_batches, clock)

  def on_step(out: Dict[str, tf.Tensor]) -> bool:
    """Logging, periodic evaluation/checkpoint, hooks; True: stop."""
    step = int(cursor.step)
    log.step(int(cursor.epoch), int(cursor.batch), step, out, train_metrics)
    if (eval_source is not None and config.eval_every_n_steps and
        step % config.eval_every_n_steps == 0 and
        int(cursor.batch) < num_batches):  # Epoch ends evaluate anyway.
      run_eval(f'every {config.eval_every_n_steps} steps')
    if (config.checkpoint_every_n_steps and
        step % config.checkpoint_every_n_steps == 0):
      save()
    stop = bool(after_step(step)) if after_step is not None else False
    return stop or (config.max_steps is not None and step >= config.max_steps)

  stop = False
  while int(cursor.epoch) < config.epochs and not stop:
    epoch = int(cursor.epoch)
    if int(cursor.batch) == 0:
      state.zero_all(model)  # Phase boundary: a new epoch.
      reset_metrics(train_metrics)
    dataset = train.dataset(epoch=epoch, start=int(cursor.batch),
                            shuffle_groups=config.shuffle_groups,
                            seed=config.seed)
    stats, stop = train_epoch(steps, dataset, cursor, train_metrics,
                              on_step=on_step, clock=clock)
    if int(cursor.batch) >= num_batches:  # The epoch is complete.
      rates = {'steps_per_sec': stats.steps_per_sec,
               'real_timesteps_per_sec': stats.real_steps_per_sec}
      summaries.scalars('train', {**stats.train, **rates}, int(cursor.step))
      log.epoch(stats)
      if eval_source is not None and config.eval_each_epoch:
        stats.eval = run_eval(f'end of epoch {epoch + 1}')
      epochs.append(stats)
      cursor.epoch.assign_add(1)
      cursor.batch.assign(0)
      state.zero_all(model)  # Phase boundary: the epoch is over.
    save()
  finished = int(cursor.epoch) >= config.epochs
  return FitResult(epochs=epochs, evaluations=evaluations,
                   steps=int(cursor.step), resumed_from=resumed_from,
                   finished=finished)
