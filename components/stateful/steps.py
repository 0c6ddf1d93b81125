"""Step functions of a stateful model, with per-lane resets.

Owns one step of training, evaluation and prediction on a batch of lanes,
and the loops that only read (``evaluate``, ``predict_batches``). Before
every step the state rows of lanes with ``reset == 1`` are zeroed through
the state protocol (``state.reset_lanes``; in ``dense`` batches, per step,
``resets.step_resets``); evaluation starts and ends with
all state zero, and ``evaluate_preserving_state`` puts a training state
back afterwards. Prediction runs with grappler's arithmetic rewrite off
(``exact_arithmetic``), so a chunked pass gives the bits the model gives
eagerly or whole. The training loop (epochs, cursor, checkpoints) is the
trainer's; these are its building blocks and the evaluator's.

Shapes: B lanes, T steps per segment, F features, K outputs per step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful.state import resets
from components.stateful.state import protocol as state
from components.stateful.objective import Batch
from components.stateful.objective import metric_results
from components.stateful.objective import Objective
from components.stateful.objective import reset_metrics
from components.stateful.objective import update_metrics
from components.stateful.objective import weighted_mean


def prepare_state(model: keras.Model, reset: tf.Tensor,
                  reset_all: bool = False) -> None:
  """Zeroes the lanes that start a sequence (or every lane, ablation)."""
  if reset_all:
    state.zero_all(model)
  else:
    state.reset_lanes(model, reset)


def run_model(model: keras.Model, features: tf.Tensor, reset: tf.Tensor,
              training: bool, reset_all: bool = False) -> tf.Tensor:
  """Resets where sequences start, then runs the model on one batch.

  Args:
    model: stateful model, features float32[B, T, F] -> float32[B, T, K].
    features: float32[B, T, F].
    reset: int64[B] (``packed``/``bucketed``: the lanes zeroed before the
      step) or int64[B, T] (``dense``: the steps where a sequence starts,
      honoured by every stateful layer through ``resets.step_resets``).
    training: passed to the model.
    reset_all: ablation: zero every lane's state first.

  Returns:
    float32[B, T, K].
  """
  if reset.shape.rank == 2:
    if reset_all:
      state.zero_all(model)
    with resets.step_resets(model, reset):
      return model(features, training=training)
  prepare_state(model, reset, reset_all)
  return model(features, training=training)


def train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer,
               objective: Objective, metrics: List[keras.metrics.Metric],
               batch: Batch, reset_all: bool = False,
               valid_metrics: Optional[List[keras.metrics.Metric]] = None
              ) -> Dict[str, tf.Tensor]:
  """One truncated-BPTT step on one batch.

  Args:
    model: stateful model, features float32[B, T, F] -> float32[B, T, K].
    optimizer: built Keras optimizer.
    objective: loss and clipping.
    metrics: ``objective.new_metrics()`` to update.
    batch: ``features`` float32[B, T, F], ``labels`` [B, T], ``mask``
      float32[B, T], ``label_weight`` float32[B, T], ``reset`` int64[B]
      (``dense``: int64[B, T], see ``run_model``);
      optionally ``valid_weight`` float32[B, T]: steps of validation
      sequences, scored into ``valid_metrics`` and never into the loss.
    reset_all: ablation: zero every lane's state first.
    valid_metrics: metrics of the validation steps (with ``valid_weight``).

  A batch with no weighted step applies no update (an optimizer with
  momentum would otherwise move on zero gradients).

  Returns:
    ``loss`` (weighted mean over the batch's labelled steps, scalar),
    ``grad_norm`` (before clipping) and ``real_steps`` (sum of the mask).
  """
  with tf.GradientTape() as tape:
    outputs = run_model(model, batch['features'], batch['reset'], True,
                        reset_all)
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

    def apply():
      optimizer.apply_gradients(zip(grads, [v for _, v in pairs]))
      return tf.constant(True)

    tf.cond(tf.reduce_sum(batch['label_weight']) > 0, apply,
            lambda: tf.constant(False))
  update_metrics(metrics, objective, batch, outputs, per_step)
  if valid_metrics is not None and 'valid_weight' in batch:
    update_metrics(valid_metrics, objective,
                   {**batch, 'label_weight': batch['valid_weight']}, outputs,
                   per_step)
  return {'loss': loss, 'grad_norm': norm,
          'real_steps': tf.reduce_sum(batch['mask'])}


def eval_step(model: keras.Model, objective: Objective,
              metrics: List[keras.metrics.Metric], batch: Batch,
              reset_all: bool = False) -> Dict[str, tf.Tensor]:
  """Forward pass on one batch (state carried), updating ``metrics``."""
  outputs = run_model(model, batch['features'], batch['reset'], False,
                      reset_all)
  per_step = objective.per_step_loss(batch['labels'], outputs)
  update_metrics(metrics, objective, batch, outputs, per_step)
  return {'loss': weighted_mean(per_step, batch['label_weight']),
          'real_steps': tf.reduce_sum(batch['mask'])}


def predict_step(model: keras.Model, features: tf.Tensor, reset: tf.Tensor,
                 reset_all: bool = False) -> tf.Tensor:
  """Resets the starting lanes, then returns outputs float32[B, T, K]."""
  return run_model(model, features, reset, False, reset_all)


_EXACT_LOCK = threading.Lock()
_EXACT = {'depth': 0, 'before': True}


@contextlib.contextmanager
def exact_arithmetic():
  """Grappler's arithmetic optimizer off for the graphs run inside.

  It rewrites the graph of the default model's concatenated convolutions
  with a float rounding of its own: a compiled step then gives outputs
  some 4e-6 from the eager (or whole-sequence, or other lane count) ones,
  enough to flip a PPV feature at its threshold, which moves a logit by a
  whole count's weight (4.7e-4 on the bundled sample: beyond the chunking
  equivalence check's tolerance). Without it the convolutions are the same
  bit for bit on every path, so R workers' ``adapt`` fits what one process
  fits and a chunked prediction is the whole-sequence one. The option is
  process-wide and read when a graph is first run with it: set on the first
  entry and restored on the last exit (threads may nest).
  """
  with _EXACT_LOCK:
    if not _EXACT['depth']:
      _EXACT['before'] = tf.config.optimizer.get_experimental_options().get(
          'arithmetic_optimization', True)
      tf.config.optimizer.set_experimental_options(
          {'arithmetic_optimization': False})
    _EXACT['depth'] += 1
  try:
    yield
  finally:
    with _EXACT_LOCK:
      _EXACT['depth'] -= 1
      if not _EXACT['depth']:
        tf.config.optimizer.set_experimental_options(
            {'arithmetic_optimization': _EXACT['before']})


def exact(fn: Callable[..., Any]) -> Callable[..., Any]:
  """``fn`` run under ``exact_arithmetic``."""

  def run(*args, **kwargs):
    with exact_arithmetic():
      return fn(*args, **kwargs)

  return run


@dataclasses.dataclass
class StepFunctions:
  """``train_step``/``eval_step``/``predict_step`` bound and compiled, and
  where the state they carry lives.

  Each takes a whole batch of B lanes. The state is in the stateful model's
  variables (``compile_steps``) or, under ``tf.distribute``, in explicit
  per-replica tensors (``replicas.compile_replicated_steps``); the training
  loop and ``evaluate`` touch it only through ``zero_all``, ``snapshot`` /
  ``restore`` and, for checkpoints, ``checkpointed`` (variables
  float32[B, ...] in ``state.state_variables`` order), filled by
  ``before_save`` and read back by ``after_restore``.
  """
  train: Callable[[Batch], Dict[str, tf.Tensor]]
  eval: Callable[[Batch], Dict[str, tf.Tensor]]
  predict: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
  zero_all: Callable[[], None]
  snapshot: Callable[[], Any]
  restore: Callable[[Any], None]
  checkpointed: List[tf.Variable]
  before_save: Callable[[], None] = lambda: None
  after_restore: Callable[[], None] = lambda: None


def compile_steps(model: keras.Model,
                  optimizer: Optional[keras.optimizers.Optimizer],
                  objective: Optional[Objective],
                  train_metrics: Optional[List[keras.metrics.Metric]] = None,
                  eval_metrics: Optional[List[keras.metrics.Metric]] = None,
                  *, reset_all: bool = False,
                  valid_metrics: Optional[List[keras.metrics.Metric]] = None
                 ) -> StepFunctions:
  """Binds the steps to their objects and wraps them in ``tf.function``."""

  def train(batch):
    return train_step(model, optimizer, objective, train_metrics, batch,
                      reset_all, valid_metrics)

  def evaluate_one(batch):
    return eval_step(model, objective, eval_metrics, batch, reset_all)

  def predict(features, reset):
    return predict_step(model, features, reset, reset_all)

  # autograph=False: the steps have no tensor-dependent Python control flow,
  # and converting Keras' RNN code costs ~10 s per trace.
  # reduce_retracing: randomised truncation feeds parts of any length.
  return StepFunctions(train=tf.function(train, autograph=False,
                                         reduce_retracing=True),
                       eval=tf.function(evaluate_one, autograph=False),
                       predict=exact(tf.function(predict, autograph=False)),
                       zero_all=lambda: state.zero_all(model),
                       snapshot=lambda: state.snapshot(model),
                       restore=lambda snap: state.restore(model, snap),
                       checkpointed=state.state_variables(model))


def cut_point(seed: int, step: int, num_unroll: int,
              probability: float) -> Optional[int]:
  """Randomised truncation: where training step ``step`` cuts its batch.

  With ``probability``, a step ``c`` drawn uniformly from ``[1, T - 1]``;
  else None (no cut). Drawn from ``(seed, step)`` alone, so a resumed run
  cuts where the uninterrupted one did.
  """
  if probability <= 0 or num_unroll < 2:
    return None
  rng = np.random.default_rng([int(seed), int(step)])
  if rng.random() >= probability:
    return None
  return int(rng.integers(1, num_unroll))


def split_batch(batch: Batch, cut: int) -> Tuple[Batch, Batch]:
  """A batch's steps ``[0, cut)`` and ``[cut, T)``, in that order: the
  per-step tensors [B, T, ...] are sliced; a per-lane ``reset`` [B] stays
  with the first part (the second continues the same sequences), a per-step
  one [B, T] is sliced."""
  first, second = {}, {}
  for key, value in batch.items():
    if key == 'reset' and value.shape.rank == 1:
      first[key], second[key] = value, tf.zeros_like(value)
    else:
      first[key], second[key] = value[:, :cut], value[:, cut:]
  return first, second


def with_random_truncation(train: Callable[[Batch], Dict[str, tf.Tensor]],
                           step: Callable[[], int], *, seed: int,
                           probability: float
                          ) -> Callable[[Batch], Dict[str, tf.Tensor]]:
  """``train`` with randomised truncation points (AWD-LSTM's variable
  BPTT length, within the batcher's T): a batch that ``cut_point`` cuts
  runs as two consecutive training steps, the state carried across the cut
  (through whatever holds it: the same calls as two batches) and the
  gradient not. Every stateful layer is cut alike, being called twice.
  ``step()``: the optimizer's step count (what the draw is keyed on).

  Returns the batch's figures: ``loss`` the two parts' mean weighted by
  their label weight, ``grad_norm`` the larger, ``real_steps`` the sum.
  """

  def run(batch: Batch) -> Dict[str, tf.Tensor]:
    cut = cut_point(seed, step(), int(batch['features'].shape[1]),
                    probability)
    if cut is None:
      return train(batch)
    parts = split_batch(batch, cut)
    outs = [train(part) for part in parts]
    weights = [tf.reduce_sum(p['label_weight']) for p in parts]
    total = tf.add_n(weights)
    loss = tf.math.divide_no_nan(
        outs[0]['loss'] * weights[0] + outs[1]['loss'] * weights[1], total)
    return {'loss': loss,
            'grad_norm': tf.maximum(outs[0]['grad_norm'],
                                    outs[1]['grad_norm']),
            'real_steps': outs[0]['real_steps'] + outs[1]['real_steps']}

  return run


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
  steps.zero_all()
  for i, batch in enumerate(dataset):
    if max_batches is not None and i >= max_batches:
      break
    steps.eval(batch)
  steps.zero_all()
  return metric_results(metrics)


def evaluate_preserving_state(model: keras.Model, steps: StepFunctions,
                              metrics: List[keras.metrics.Metric],
                              dataset: tf.data.Dataset) -> Dict[str, float]:
  """``evaluate`` between a snapshot and a restore of the training state."""
  saved = steps.snapshot()
  try:
    return evaluate(model, steps, metrics, dataset)
  finally:
    steps.restore(saved)


def predict_batches(model: keras.Model, dataset: tf.data.Dataset, *,
                    reset_all: bool = False,
                    steps: Optional[StepFunctions] = None
                   ) -> Iterator[Tuple[Dict[str, np.ndarray], np.ndarray]]:
  """Yields ``(batch, outputs float32[B, T, K])`` in order, state carried.

  ``dataset`` yields batches with at least ``features`` and ``reset`` (e.g.
  ``BatchSource.dataset(keys=None)``). The state is zeroed first.
  """
  steps = steps or compile_steps(model, None, None, reset_all=reset_all)
  steps.zero_all()
  for batch in dataset:
    outputs = steps.predict(batch['features'], batch['reset'])
    yield ({k: v.numpy() for k, v in batch.items()}, outputs.numpy())
