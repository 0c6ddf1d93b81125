"""One data-parallel training case, run in its own process by
``test_replicas.py``.

Logical CPU devices and multi-worker collectives are configured when
TensorFlow starts, so each case is a fresh process: plain ``subprocess``
(``multi_process_runner`` does not run under pytest). Every worker of a
multi-worker case runs this with its own ``TF_CONFIG``.

  python -m tests.components.stateful_trainer.replica_case fit \
      --batches DIR --out DIR --replicas 2 --module lstm --steps 5
  python -m tests.components.stateful_trainer.replica_case run ...
  python -m tests.components.stateful_trainer.replica_case swap ...

``fit``: ``run.fit_model`` for ``--steps`` steps (``max_steps``, a
checkpoint at the stop), then writes ``<out>/fit-<task>.npz``: the weights
(``w<i>``), the checkpointed state gathered to the global [B, ...] layout
(``s<i>``), and the outputs of the stateful model on the next batch from
that state (``next``: per-lane outputs float32[B, T, K]).
``run``: ``run.run`` end to end (export by the chief); ``--crash-at N``
ends every worker's process at step N (a kill: no cleanup).
``swap``: two replicas handed each other's lanes; prints ``RAISED`` and the
error when the step fails, as it must.
``carve``: the validation carve (``--validation-fraction``) of the built
model scored on its own batches (``carve.carve_batches``) and by the
whole-batch pass (every train batch, weighted by ``valid_weight``), both on
``--replicas`` replicas; prints them as JSON (``carve``, ``whole``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def _hyperparameters(name: str) -> dict:
  if name == 'lstm':
    return {'model': 'lstm', 'units': [4], 'learning_rate': 0.01}
  if name == 'conv':  # The default model (its conv core, few kernels).
    return {'kernels': 24}
  raise ValueError(name)


def _args(flags, runner, settings):
  train = dict(epochs=flags.epochs, log_every_n_steps=0, seed=0,
               validation_fraction=flags.validation_fraction, refit=False,
               replicas=flags.replicas, checkpoint_every_n_steps=2,
               max_steps=flags.steps)
  out = flags.out
  return runner.TrainerArgs(
      batches_uri=flags.batches, model_uri=f'{out}/model',
      serving_model_dir=f'{out}/model/serving', model_run_dir=f'{out}/run',
      checkpoint_dir=f'{out}/checkpoints',
      hyperparameters=_hyperparameters(flags.module),
      train=settings.TrainConfig(**train))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument('case', choices=('fit', 'run', 'swap', 'carve'))
  parser.add_argument('--batches', required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--replicas', type=int, default=1)
  parser.add_argument('--module', default='lstm')
  parser.add_argument('--steps', type=int, default=None)
  parser.add_argument('--epochs', type=int, default=2)
  parser.add_argument('--validation-fraction', type=float, default=0.0)
  parser.add_argument('--crash-at', type=int, default=None)
  parser.add_argument('--adapt-rows', type=int, default=None,
                      help='caps the default model\'s adapt samples '
                      '(ADAPT_MAX_ROWS, HEAD_MAX_ROWS) so they sample')
  flags = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO)

  from components.stateful_trainer import distribution
  dist = distribution.make_distribution(flags.replicas)

  import numpy as np
  import tensorflow as tf
  from components.stateful import batches as batches_lib
  from components.stateful import model_io
  from components.stateful import objective as objective_lib
  from components.stateful.distribution import lanes as lanes_lib
  from components.stateful.distribution import replicas
  from components.stateful.distribution import shards
  from components.stateful.state import protocol as state
  from components.stateful import steps as steps_lib
  from components.stateful_trainer import model_setup
  from components.stateful_trainer import optimizers
  from components.stateful_trainer import run as runner
  from components.stateful_trainer import settings

  if flags.adapt_rows is not None:
    from components.stateful.models import conv_adapt
    from components.stateful.models import head_rows
    conv_adapt.ADAPT_MAX_ROWS = head_rows.HEAD_MAX_ROWS = flags.adapt_rows
  args = _args(flags, runner, settings)
  task = f'{dist.task_type or "local"}{dist.task_id}'
  os.makedirs(flags.out, exist_ok=True)
  if flags.case == 'run':
    after = None
    if flags.crash_at is not None:
      def after(step):
        if step == flags.crash_at:
          os._exit(3)  # A kill: no checkpoint, no cleanup.
    result = runner.run(args, after_step=after)
    if dist.is_chief:
      np.savez(f'{flags.out}/run.npz', *result.model.get_weights())
    print(json.dumps({'steps': result.fit.steps,
                      'resumed_from': result.fit.resumed_from}))
    return 0

  train = batches_lib.BatchSource.open(flags.batches, 'train')
  spec = runner.make_spec(args, train.meta, batches_lib.label_statistics(train))
  module = model_io.resolve_module(None)
  model, _ = model_setup.build(
      module, spec, train, 0,
      shard=shards.of(dist.strategy, dist.num_workers, spec.batch_size))
  objective = objective_lib.make_objective(spec, module)
  optimizer = lambda: optimizers.make_optimizer(
      settings.OptimizerConfig.from_hyperparameters(
          settings.optimizer_hyperparameters(module, spec)), 100)

  if flags.case == 'swap':
    def swapped(replica, count, batch_size):
      return lanes_lib.lanes_of(1 - replica, count, batch_size)
    with dist.strategy.scope():
      made = optimizer()
      twin = model_io.build_serving(module, spec, weights_from=model)
      metrics = objective.new_metrics()
      made.build(twin.trainable_variables)
    lanes = replicas.ReplicaLanes(dist.strategy, spec.batch_size,
                                  lanes_of=swapped)
    steps = replicas.compile_replicated_steps(twin, made, objective, metrics,
                                              lanes=lanes)
    try:
      for batch in train.dataset():
        steps.train(batch)
    except tf.errors.InvalidArgumentError as e:
      print('RAISED', ' '.join(line for line in e.message.splitlines()
                               if 'does not own' in line)[:300])
      return 0
    print('NOT RAISED')
    return 1

  if flags.case == 'carve':
    import contextlib
    from components.stateful import carve as carve_lib
    from components.stateful_trainer import validation
    fraction = flags.validation_fraction
    scored, lanes = model, None
    scope = (dist.strategy.scope() if dist.strategy is not None else
             contextlib.nullcontext())
    with scope:
      if dist.strategy is not None:
        scored = model_io.build_serving(module, spec, weights_from=model)
      whole_metrics, carve_metrics = (objective.new_metrics(),
                                      objective.new_metrics())
    if dist.strategy is not None:
      lanes = replicas.ReplicaLanes(dist.strategy, spec.batch_size)
    steps = replicas.compile_for(scored, None, objective,
                                 eval_metrics=whole_metrics, lanes=lanes)
    steps.zero_all()
    for batch in train.dataset(validation_fraction=fraction):
      steps.eval({**batch, 'label_weight': batch['valid_weight']})
    carve = carve_lib.carve_batches(train, fraction)
    print(json.dumps({
        'whole': objective_lib.metric_results(whole_metrics),
        'carve': validation._validate_only(scored, objective, carve,
                                           carve_metrics, lanes),
        'batches': [len(carve.batches), train.num_batches],
        'replicas': dist.num_replicas}))
    return 0

  ckpt_dir = f'{flags.out}/checkpoints'
  own_dir = ckpt_dir if dist.is_chief else f'{flags.out}/worker-checkpoints'
  result = runner.fit_model(
      model, module=module, spec=spec, dist=dist, optimizer=optimizer,
      objective=objective, train=train, config=args.train,
      checkpoint_dir=ckpt_dir, save_dir=None if dist.is_chief else own_dir)
  # Each process reads the checkpoint it wrote itself (the chief's may not
  # be on disk yet when another worker gets here).
  reader = tf.train.load_checkpoint(own_dir)
  n_states = len(state.state_variables(model))
  states = [reader.get_tensor(f'rnn_states/{i}/.ATTRIBUTES/VARIABLE_VALUE')
            for i in range(n_states)]
  state.restore(model, [tf.constant(s) for s in states])
  batch = next(iter(train.dataset(start=result.steps % train.num_batches)))
  outputs = steps_lib.compile_steps(model, None, None).predict(
      batch['features'], batch['reset'])
  arrays = {f'w{i}': w for i, w in enumerate(model.get_weights())}
  arrays.update({f's{i}': s for i, s in enumerate(states)})
  np.savez(f'{flags.out}/fit-{task}.npz', next=outputs.numpy(), **arrays)
  print(json.dumps({'steps': result.steps, 'replicas': dist.num_replicas}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
