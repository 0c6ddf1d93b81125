"""The stateful training loop: settings, epochs, cursor, checkpoints, progress.

Semantics (docs/design.md, "The state protocol"):

* Batches are read strictly in order (``BatchSource``), never shuffled; in
  ``bucketed`` mode whole groups may be permuted per epoch (seeded).
* Before every step the state rows of lanes with ``reset == 1`` are zeroed in
  every stateful layer (``components.stateful.steps``; in ``dense`` batches
  at every step where a sequence starts); other lanes keep their state. The
  ablation ``reset_state_every_batch`` zeroes all lanes
  before every step instead (plain truncated BPTT without carried state).
* All state is zeroed at the start of every epoch and at every phase
  boundary; evaluation runs with its own (zeroed) state and the training
  state is snapshotted before and restored after it.
* Loss and metrics are weighted by ``label_weight`` [B, T]; gradients are
  clipped by global norm.
* ``fit`` checkpoints weights, optimizer, layer state, metric accumulators
  and the data cursor (epoch, batch) with ``tf.train.Checkpoint``; a
  restarted run resumes mid-epoch and ends with the same weights as an
  uninterrupted one.
* The validation carve is scored by a pass without updates over its own
  batches (``validation.CarveScorer``).

Shapes: B lanes, T steps per segment, F features, K outputs per step.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Dict, List, Optional, Tuple

import tensorflow as tf
import tf_keras as keras

from components.stateful import batches as batches_lib
from components.stateful_trainer import fingerprint as fingerprint_lib
from components.stateful_trainer import progress
from components.stateful_trainer.epoch_data import EpochBatches
from components.stateful_trainer.fit_result import Cursor
from components.stateful_trainer.fit_result import EpochStats
from components.stateful_trainer.fit_result import FitResult
from components.stateful_trainer.fit_result import stop_text
from components.stateful_trainer import selection
from components.stateful_trainer.settings import TrainConfig
from components.stateful_trainer.settings import TrainingConfigError
from components.stateful_trainer.validation import CarveScorer
from components.stateful.distribution import replicas
from components.stateful.batches import BatchSource
from components.stateful.objective import metric_results
from components.stateful.objective import Objective
from components.stateful.objective import reset_metrics
from components.stateful.steps import evaluate_preserving_state
from components.stateful.steps import StepFunctions
from components.stateful.steps import with_random_truncation

_LOG = logging.getLogger(__name__)


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


def fit(model: keras.Model,
        *,
        optimizer: keras.optimizers.Optimizer,
        objective: Objective,
        train: BatchSource,
        eval_source: Optional[BatchSource] = None,
        config: TrainConfig = TrainConfig(epochs=1),
        checkpoint_dir: Optional[str] = None,
        summary_dir: Optional[str] = None,
        clock: Callable[[], float] = time.monotonic,
        after_step: Optional[Callable[[int], Optional[bool]]] = None,
        max_checkpoints: int = 3,
        fingerprint: Optional[str] = None,
        lanes: Optional[replicas.ReplicaLanes] = None,
        save_dir: Optional[str] = None,
        score_carve: float = 0.0,
        plateau: Optional[selection.Plateau] = None,
        scorer: Optional[CarveScorer] = None) -> FitResult:
  """Trains ``model`` statefully; resumes from ``checkpoint_dir`` if it holds
  a checkpoint of the same run.

  The checkpoint directory holds ``fingerprint.json``: the run's
  ``fingerprint`` with this call's settings, the train split's shape and the
  model's weight shapes. A checkpoint there with another (or no) fingerprint
  is refused with ``fingerprint.CheckpointMismatchError``, never restored.

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
    fingerprint: the digest of the run's inputs (``fingerprint.py``), if
      known; part of the checkpoints' fingerprint.
    lanes: data-parallel training (``replicas.ReplicaLanes``): ``model``
      is the serving twin built in ``lanes.strategy.scope()`` (the
      optimizer too), each replica carries its own lanes' state as
      tensors; checkpoints hold the gathered global state.
    save_dir: where this process writes its checkpoints when it is not
      ``checkpoint_dir`` (a non-chief worker: it resumes from the chief's
      ``checkpoint_dir``, writes its own copy elsewhere).
    score_carve: above 0, after training the weights left in the model are
      scored on the validation carve of this fraction (``FitResult.carve``),
      also when ``config`` has no carve (the refit, which trained on it:
      ``run.py`` compares it with the chosen epoch's).
    plateau: the budget by convergence (``selection.Plateau``, the one the
      optimizer's ``PlateauRate`` reads): with a validation carve, it
      drops the rate and stops training when the carve stops improving,
      in place of ``early_stopping_patience``; ``config.epochs`` is the
      cap. Checkpointed with the run.
    scorer: the run's ``CarveScorer`` (its carve laid out and its step
      compiled once for all its ``fit`` calls); None: one for this call.

  Returns:
    A ``FitResult``.

  Raises:
    fingerprint.CheckpointMismatchError: ``checkpoint_dir`` holds another
      run's checkpoints.
    batches.BatchError: the train split's files hold fewer (or more)
      batches than its ``metadata.json`` says.
  """
  if config.epochs is None:
    raise TrainingConfigError('fit needs epochs set (run.run applies the '
                              'epochs rule when it is unset)')
  validating = config.validation_fraction > 0
  with (lanes.strategy.scope() if lanes else contextlib.nullcontext()):
    optimizer.build(model.trainable_variables)
    train_metrics = objective.new_metrics()
    eval_metrics = objective.new_metrics()
    valid_metrics = objective.new_metrics() if validating else None
  steps = replicas.compile_for(model, optimizer, objective, train_metrics,
                               eval_metrics,
                               reset_all=config.reset_state_every_batch,
                               valid_metrics=valid_metrics, lanes=lanes)
  if config.random_truncation > 0:
    steps.train = with_random_truncation(
        steps.train, lambda: int(optimizer.iterations), seed=config.seed,
        probability=config.random_truncation)
    _LOG.info('randomised truncation: a batch is cut at a random step into '
              'two truncated-BPTT windows with probability %g (state carried '
              'across the cut, the gradient not)', config.random_truncation)
  scoring = config.label_scoring or batches_lib.LAST_STEP
  # The carve is scored by a pass without updates after each epoch: the
  # figures streamed during the epoch come from the weights as they were at
  # each step, not from those the epoch ends with (which are the ones kept).
  if scorer is None and (validating or score_carve > 0):
    scorer = CarveScorer(train, objective)
  if scorer is not None and (scorer.objective is not objective or
                             scorer.train != train):
    raise ValueError('fit: the CarveScorer was made for another objective '
                     'or train split')
  cursor = Cursor()
  best = (selection.BestWeights(model, config.selection_tolerance,
                                config.select_by)
          if validating else None)
  summaries = progress.Summaries(summary_dir)
  manager = None
  resumed_from = None
  if checkpoint_dir:
    ckpt = tf.train.Checkpoint(
        model=model, optimizer=optimizer,
        rnn_states=steps.checkpointed, cursor=cursor,
        train_metrics=train_metrics,
        **({'best': best, 'valid_metrics': valid_metrics} if best else {}),
        **({'plateau': plateau} if plateau is not None else {}))
    manager = tf.train.CheckpointManager(ckpt, save_dir or checkpoint_dir,
                                         max_to_keep=max_checkpoints)
    mine = fingerprint_lib.fit_fingerprint(model, train, config, fingerprint)
    stamp = f'{save_dir or checkpoint_dir}/{fingerprint_lib.FILE}'
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if latest:
      fingerprint_lib.check_checkpoint_fingerprint(checkpoint_dir, mine)
      resumed_from = latest
      ckpt.restore(resumed_from).assert_existing_objects_matched()
      steps.after_restore()
      _LOG.info('resuming from epoch %d, step %d of %d (batch %d of %d; '
                'checkpoint %s)', int(cursor.epoch) + 1, int(cursor.step),
                min(config.epochs * train.num_batches, config.max_steps or
                    config.epochs * train.num_batches), int(cursor.batch),
                train.num_batches, resumed_from)
    else:
      fingerprint_lib.write(stamp, mine.to_dict())
  if resumed_from is None:
    steps.zero_all()

  def run_eval(where: str) -> Dict[str, float]:
    started = clock()
    results = evaluate_preserving_state(model, steps, eval_metrics,
                                        eval_source.dataset())
    step = int(cursor.step)
    evaluations.append((step, results))
    summaries.scalars('eval', results, step)
    _LOG.info('eval (%s, step %d): %s [%.1fs]', where, step, progress.fmt_metrics(results),
              clock() - started)
    return results

  def save():
    if manager is not None:
      steps.before_save()  # Every worker: the state is all-gathered.
      manager.save(checkpoint_number=int(cursor.step))

  epochs: List[EpochStats] = []
  evaluations: List[Tuple[int, Dict[str, float]]] = []
  num_batches = train.num_batches
  log = progress.ProgressLog(config, num_batches, clock)

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
    if after_step is not None and bool(after_step(step)):
      reason[0] = 'hook'
      return True
    return at_max_steps() or over_budget()

  def at_max_steps() -> bool:
    if (config.max_steps is not None and
        int(cursor.step) >= config.max_steps):
      reason[0] = 'max_steps'
      return True
    return False

  def over_budget() -> bool:
    if (config.max_seconds is not None and
        clock() - started >= config.max_seconds):
      reason[0] = 'max_seconds'
      return True
    return False

  epoch_batches = EpochBatches(
      train, shuffle_groups=config.shuffle_groups, seed=config.seed,
      label_scoring=scoring, validation_fraction=config.validation_fraction)
  started = clock()
  reason = ['epochs' if config.epochs else 'no_epochs']
  carve_seconds = [0.0]  # FitResult.validation_seconds (wall, not ``clock``).

  def validate_only(fraction: float) -> Dict[str, float]:
    """``scorer.score`` of ``model``, its seconds counted."""
    t0 = time.perf_counter()
    try:
      return scorer.score(model, fraction, lanes)
    finally:
      carve_seconds[0] += time.perf_counter() - t0

  # The carve's metrics of the weights ``best`` holds, when scored in this
  # process (the final carve score needs no pass of its own then).
  kept_metrics: List[Optional[Dict[str, float]]] = [None]
  if (best is not None and resumed_from is None and config.score_initial
      and config.epochs > 0):
    initial = validate_only(config.validation_fraction)
    best.offer(model, initial, selection.INITIAL)
    kept_metrics[0] = initial
    _LOG.info('validation before training (the initial weights, a '
              'candidate too): %s', progress.fmt_metrics(initial))
    if best.unbeatable(initial, best.by):
      # An epoch replaces the initial weights only with a strictly better
      # score: none can beat a perfect one, so none would be kept.
      _LOG.info('no epoch: the initial weights score %s on the validation '
                'carve, which no epoch can beat',
                progress.fmt_metrics(initial))
      best.stopped.assign(True)
      reason[0] = 'initial_unbeatable'
  # Checked before the loop too: a run resumed at max_steps trains no step.
  stop = (best is not None and bool(best.stopped)) or at_max_steps()
  while int(cursor.epoch) < config.epochs and not stop:
    epoch = int(cursor.epoch)
    if int(cursor.batch) == 0:
      steps.zero_all()  # Phase boundary: a new epoch.
      reset_metrics(train_metrics)
      if valid_metrics is not None:
        reset_metrics(valid_metrics)
    dataset = epoch_batches.epoch(epoch, start=int(cursor.batch))
    stats, stop = train_epoch(steps, dataset, cursor, train_metrics,
                              on_step=on_step, clock=clock)
    if (not stop and int(cursor.batch) != num_batches) or (
        int(cursor.batch) > num_batches):
      raise batches_lib.BatchError(
          batches_lib.count_mismatch(train, int(cursor.batch)))
    if int(cursor.batch) >= num_batches:  # The epoch is complete.
      rates = {'steps_per_sec': stats.steps_per_sec,
               'real_timesteps_per_sec': stats.real_steps_per_sec}
      summaries.scalars('train', {**stats.train, **rates}, int(cursor.step))
      log.epoch(stats)
      if best is not None:
        stats.valid_streamed = metric_results(valid_metrics)
        stats.valid = validate_only(config.validation_fraction)
        improved, why = selection.after_epoch(
            best, plateau, model, stats, config.early_stopping_patience,
            num_batches, int(cursor.step))
        if improved:
          kept_metrics[0] = stats.valid
        if why is not None:
          best.stopped.assign(True)
          reason[0] = why
          stop = True
      if eval_source is not None and config.eval_each_epoch:
        stats.eval = run_eval(f'end of epoch {epoch + 1}')
      epochs.append(stats)
      cursor.epoch.assign_add(1)
      cursor.batch.assign(0)
      steps.zero_all()  # Phase boundary: the epoch is over.
    save()
  if reason[0] == 'max_seconds':
    # The budget is spent: training is over (the best epoch so far is
    # kept); a resumed run does not start again.
    _LOG.info('time budget of %gs spent after %d steps (epoch %d)',
              config.max_seconds, int(cursor.step), int(cursor.epoch) + 1)
    if best is not None:
      best.stopped.assign(True)
    save()
  finished = int(cursor.epoch) >= config.epochs or (
      best is not None and bool(best.stopped)) or (
          reason[0] == 'max_seconds')
  if best is not None and finished and int(best.epoch) != selection.NONE:
    best.restore(model)
    _LOG.info('kept the weights of %s (validation score %.4f: minus '
              'the accuracy, or the loss)',
              'before training (no epoch improved on them)'
              if int(best.epoch) == selection.INITIAL else
              f'epoch {int(best.epoch) + 1}', float(best.score))
  best_epoch = (int(best.epoch) if best is not None and
                int(best.epoch) != selection.NONE else None)
  if best is not None and bool(best.stopped) and reason[0] == 'epochs':
    reason[0] = 'early_stopping'  # Resumed after an early stop.
  carve = None
  if (score_carve > 0 and finished and best_epoch is not None and
      kept_metrics[0] is not None and
      score_carve == config.validation_fraction):
    # The kept weights' score, from the pass that offered them.
    carve = dict(kept_metrics[0])
    _LOG.info('validation carve (%g of the keys) of the final weights: %s '
              '(scored when they were kept)', score_carve,
              progress.fmt_metrics(carve))
  elif score_carve > 0 and finished:
    carve = validate_only(score_carve)
    _LOG.info('validation carve (%g of the keys) of the final weights: %s',
              score_carve, progress.fmt_metrics(carve))
  _LOG.info('training stopped: %s', stop_text(
      reason[0], config, plateau is not None and validating))
  return FitResult(epochs=epochs, evaluations=evaluations,
                   steps=int(cursor.step), resumed_from=resumed_from,
                   finished=finished, best_epoch=best_epoch,
                   stop_reason=reason[0], carve=carve,
                   validation_seconds=carve_seconds[0])
