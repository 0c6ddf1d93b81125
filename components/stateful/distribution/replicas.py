"""Data-parallel stateful steps: lanes sharded per replica, state passed
through the step as explicit per-replica tensors.

Under ``tf.distribute`` a Keras RNN built with ``stateful=True`` raises
(tensorflow#39098), and no variable kind keeps a different value per
replica. So the model trained under a strategy is the non-stateful serving
twin (same architecture, same weights in the same order), and every
stateful layer's state travels as tensors: state in, state out of the
replicated step, fed back to the next step (``explicit_state.run_with_states``, the
form the exported ``step`` signature has). The state protocol is the same
as in one process (docs/design.md, "The state protocol"):

* per-lane resets: ``state.zero_rows`` before the step (the functional
  ``state.reset_lanes``); per-step resets (``dense``):
  ``resets.step_resets``; the ablation ``reset_all``: zero state.
* the states are ``explicit_state.serving_state_shapes`` of the twin, in the order
  of ``state.state_variables`` of the stateful model; checkpoints hold them
  gathered into the global float32[B, ...] layout, so a checkpoint of R
  replicas resumes on R' replicas (same B), or in one process.
* ``zero_all`` / ``snapshot`` / ``restore`` around epochs and evaluation,
  as ``steps.StepFunctions`` has them for the variable form.

The layout: R replicas, B lanes, ``b = B / R``; replica r owns lanes
``[r * b, (r + 1) * b)`` of every batch for the whole run (the lane rule,
``lanes.lanes_of``), so a lane's state never crosses a replica. Each worker reads the whole
global batch and hands each of its replicas its own rows
(``experimental_distribute_values_from_function``; ``tf.distribute``'s
input splitting, and file-based auto-sharding, are not used); every batch
carries its lane ids and the step asserts that replica r got lanes
``lanes_of(r)``.

Gradients are all-reduced (summed) before clipping and applied once; each
replica's loss is its labelled steps' weighted sum divided by the *global*
batch's label weight, so R replicas make the update one process makes on
the same B lanes.

Shapes: B lanes, b per replica, T steps per segment, F features, K outputs.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from components.stateful.distribution import lanes as lanes_lib
# The lane rule's error, where the trainer's run raises it too.
from components.stateful.distribution.lanes import LaneLayoutError  # pylint: disable=unused-import
from components.stateful.state import explicit as explicit_state
from components.stateful.state import resets
from components.stateful.state import protocol as state
from components.stateful.objective import Batch
from components.stateful.objective import Objective
from components.stateful.objective import update_metrics
from components.stateful.steps import compile_steps
from components.stateful.steps import exact
from components.stateful.steps import StepFunctions

LANE = 'lane'  # int32[B]: the lane (row) of the global batch.
# All-reduced tensors are packed into collectives of up to this many bytes.
PACK_BYTES = 64 << 20
_PACKED = tf.distribute.experimental.CommunicationOptions(
    bytes_per_pack=PACK_BYTES)


class ReplicaLanes:
  """Shares each global batch of B lanes out to the replicas of a strategy.

  Args:
    strategy: the ``tf.distribute.Strategy`` (R replicas in sync).
    batch_size: B, a multiple of R.
    lanes_of: ``(replica, R, B) -> (start, stop)``, the rows a replica is
      handed (the lane rule, ``lanes.lanes_of``; injected by the test that
      shows a wrong hand-out fails).

  Raises:
    LaneLayoutError: B is not a multiple of R.
  """

  def __init__(self, strategy: tf.distribute.Strategy, batch_size: int, *,
               lanes_of: Callable[[int, int, int], Tuple[int, int]] =
               lanes_lib.lanes_of):
    self.strategy = strategy
    self.num_replicas = int(strategy.num_replicas_in_sync)
    self.batch_size = int(batch_size)
    start, stop = lanes_lib.lanes_of(0, self.num_replicas, self.batch_size)
    self.per_replica = stop - start
    self._lanes_of = lanes_of

  def shard(self, batch: Batch):
    """``batch`` (global, [B, ...]) with ``lane`` ids, as per-replica
    values: replica r gets rows ``lanes_of(r)``."""
    batch = {**batch, LANE: tf.range(self.batch_size, dtype=tf.int32)}

    def rows(context):
      start, stop = self._lanes_of(context.replica_id_in_sync_group,
                                   self.num_replicas, self.batch_size)
      return {k: v[start:stop] for k, v in batch.items()}

    return self.strategy.experimental_distribute_values_from_function(rows)

  def distribute_states(self, values: Sequence[tf.Tensor]):
    """Global states (each float32[B, ...]) -> per-replica [b, ...] rows."""
    values = [tf.convert_to_tensor(v) for v in values]

    def rows(context):
      start, stop = lanes_lib.lanes_of(context.replica_id_in_sync_group,
                                       self.num_replicas, self.batch_size)
      return [v[start:stop] for v in values]

    return self.strategy.experimental_distribute_values_from_function(rows)

  def gather_states(self, states) -> List[tf.Tensor]:
    """Per-replica states -> global float32[B, ...] (lane order). Every
    worker must call it (an all-gather across workers)."""
    return [self.strategy.gather(s, axis=0) for s in states]


def check_own_lanes(lane: tf.Tensor, lanes: ReplicaLanes) -> tf.Operation:
  """Fails the step unless this replica got its lanes (``lanes.lanes_of``:
  [r*b, (r+1)*b))."""
  replica = tf.distribute.get_replica_context().replica_id_in_sync_group
  start, stop = lanes_lib.lanes_of(tf.cast(replica, tf.int32),
                                   lanes.num_replicas, lanes.batch_size)
  own = tf.range(start, stop, dtype=tf.int32)
  return tf.debugging.assert_equal(
      lane, own, message=f'a replica received lanes it does not own (each '
      f'replica owns {lanes.per_replica} consecutive lanes for the whole '
      'run; its state would be applied to another lane\'s sequence)')


def _forward(twin: keras.Model, batch: Batch, states: Sequence[tf.Tensor],
             training: bool, reset_all: bool
            ) -> Tuple[tf.Tensor, List[tf.Tensor]]:
  """Resets, then runs the twin from ``states``: ``(outputs [b, T, K], new
  states)``. The per-lane/per-step/ablation resets of ``steps.run_model``,
  on explicit states."""
  reset = batch['reset']
  if reset_all:
    states = [tf.zeros_like(s) for s in states]
  if reset.shape.rank == 2:
    with resets.step_resets(twin, reset):
      return explicit_state.run_with_states(twin, batch['features'], states, training)
  states = state.zero_rows(states, reset)
  return explicit_state.run_with_states(twin, batch['features'], states, training)


def compile_for(model: keras.Model,
                optimizer: Optional[keras.optimizers.Optimizer],
                objective: Optional[Objective],
                train_metrics: Optional[List[keras.metrics.Metric]] = None,
                eval_metrics: Optional[List[keras.metrics.Metric]] = None, *,
                lanes: Optional[ReplicaLanes] = None, reset_all: bool = False,
                valid_metrics: Optional[List[keras.metrics.Metric]] = None
               ) -> StepFunctions:
  """The step functions: state in the model's variables (one process,
  ``lanes`` None: ``steps.compile_steps``), or per replica under
  ``lanes.strategy`` (``compile_replicated_steps``)."""
  if lanes is None:
    return compile_steps(model, optimizer, objective, train_metrics,
                         eval_metrics, reset_all=reset_all,
                         valid_metrics=valid_metrics)
  return compile_replicated_steps(
      model, optimizer, objective, train_metrics, eval_metrics, lanes=lanes,
      reset_all=reset_all, valid_metrics=valid_metrics)


def compile_replicated_steps(
    twin: keras.Model, optimizer: Optional[keras.optimizers.Optimizer],
    objective: Optional[Objective],
    train_metrics: Optional[List[keras.metrics.Metric]] = None,
    eval_metrics: Optional[List[keras.metrics.Metric]] = None, *,
    lanes: ReplicaLanes, reset_all: bool = False,
    valid_metrics: Optional[List[keras.metrics.Metric]] = None
) -> StepFunctions:
  """The ``steps.compile_steps`` of a strategy: same calls, same results.

  Args:
    twin: the serving twin built in ``lanes.strategy.scope()`` (weights,
      optimizer and metrics are created there too).
    lanes: the lane hand-out.
    Others: as ``steps.compile_steps``.

  Call outside the strategy's scope: the checkpointed state variables
  (float32[B, ...]) are ordinary, per-worker variables.
  """
  strategy = lanes.strategy
  num_replicas = lanes.num_replicas
  shapes = explicit_state.serving_state_shapes(twin)
  checkpointed = [tf.Variable(tf.zeros([lanes.batch_size] + s.as_list()),
                              trainable=False, name=f'state_{i}')
                  for i, s in enumerate(shapes)]
  zeros = lambda: lanes.distribute_states(
      [tf.zeros([lanes.batch_size] + s.as_list()) for s in shapes])
  current = {'states': zeros()}

  def sum_all(values: List[tf.Tensor]) -> List[tf.Tensor]:
    # One call, packed into as few collectives as fit PACK_BYTES: each
    # collective is a round trip between workers (on loopback, the
    # unpacked gradients of an LSTM cost more than its step).
    return tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, list(values), options=_PACKED)

  def replica_step(batch, states, total_weight, apply):
    with tf.control_dependencies([check_own_lanes(batch[LANE], lanes)]):
      features = tf.identity(batch['features'])
    batch = {**batch, 'features': features}
    with tf.GradientTape() as tape:
      outputs, new_states = _forward(twin, batch, states, True, reset_all)
      per_step = objective.per_step_loss(batch['labels'], outputs)
      weighted = tf.reduce_sum(per_step * batch['label_weight'])
      loss = tf.math.divide_no_nan(weighted, total_weight)
      if twin.losses:  # Regularisers: once over the replicas' sum.
        loss += tf.add_n(twin.losses) / float(num_replicas)
    pairs = []
    if apply:
      pairs = [(g, v) for g, v in zip(
          tape.gradient(loss, twin.trainable_variables),
          twin.trainable_variables) if g is not None]
    *grads, total_loss, real_steps = sum_all(
        [g for g, _ in pairs] + [loss, tf.reduce_sum(batch['mask'])])
    out = {'loss': total_loss, 'real_steps': real_steps,
           'grad_norm': tf.constant(0.0)}
    if grads:
      if objective.clip_global_norm:
        grads, out['grad_norm'] = tf.clip_by_global_norm(
            grads, objective.clip_global_norm)
      else:
        out['grad_norm'] = tf.linalg.global_norm(grads)
      optimizer.apply_gradients(zip(grads, [v for _, v in pairs]),
                                skip_gradients_aggregation=True)
    update_metrics(train_metrics, objective, batch, outputs, per_step)
    if valid_metrics is not None and 'valid_weight' in batch:
      update_metrics(valid_metrics, objective,
                     {**batch, 'label_weight': batch['valid_weight']},
                     outputs, per_step)
    return out, new_states

  def replica_eval(batch, states, total_weight):
    with tf.control_dependencies([check_own_lanes(batch[LANE], lanes)]):
      features = tf.identity(batch['features'])
    batch = {**batch, 'features': features}
    outputs, new_states = _forward(twin, batch, states, False, reset_all)
    per_step = objective.per_step_loss(batch['labels'], outputs)
    update_metrics(eval_metrics, objective, batch, outputs, per_step)
    loss = tf.math.divide_no_nan(
        tf.reduce_sum(per_step * batch['label_weight']), total_weight)
    total_loss, real_steps = sum_all([loss, tf.reduce_sum(batch['mask'])])
    return {'loss': total_loss, 'real_steps': real_steps}, new_states

  def replica_predict(batch, states):
    return _forward(twin, batch, states, False, reset_all)

  def compiled(fn):
    return tf.function(
        lambda *args: strategy.run(fn, args=args), autograph=False,
        reduce_retracing=True)

  train_apply = compiled(lambda bt, st, w: replica_step(bt, st, w, True))
  train_forward = compiled(lambda bt, st, w: replica_step(bt, st, w, False))
  eval_fn = compiled(replica_eval)
  predict_fn = compiled(replica_predict)

  def first(per_replica_dict) -> Dict[str, tf.Tensor]:
    # Sums were all-reduced in the step: every replica holds them.
    return tf.nest.map_structure(
        lambda v: strategy.experimental_local_results(v)[0],
        per_replica_dict)

  def train(batch: Batch) -> Dict[str, tf.Tensor]:
    total = tf.reduce_sum(batch['label_weight'])
    # No labelled step: no update (as ``steps.train_step``), decided on
    # the global batch so every replica takes the same branch.
    fn = train_apply if float(total) > 0 else train_forward
    out, current['states'] = fn(lanes.shard(batch), current['states'],
                                total)
    return first(out)

  def evaluate_one(batch: Batch) -> Dict[str, tf.Tensor]:
    total = tf.reduce_sum(batch['label_weight'])
    out, current['states'] = eval_fn(lanes.shard(batch), current['states'],
                                     total)
    return first(out)

  def predict(features: tf.Tensor, reset: tf.Tensor) -> tf.Tensor:
    outputs, current['states'] = predict_fn(
        lanes.shard({'features': features, 'reset': reset}),
        current['states'])
    return strategy.gather(outputs, axis=0)

  def zero_all():
    current['states'] = zeros()

  def restore(snap):
    current['states'] = snap

  def before_save():
    for var, value in zip(checkpointed,
                          lanes.gather_states(current['states'])):
      var.assign(value)

  def after_restore():
    current['states'] = lanes.distribute_states(
        [v.read_value() for v in checkpointed])

  return StepFunctions(train=train, eval=evaluate_one,
                       predict=exact(predict),
                       zero_all=zero_all, snapshot=lambda: current['states'],
                       restore=restore, checkpointed=checkpointed,
                       before_save=before_save, after_restore=after_restore)
