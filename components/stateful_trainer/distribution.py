"""Where a run trains: one process, local replicas, or several workers.

* ``replicas`` = 1 and no multi-task ``TF_CONFIG``: one process, no
  strategy (state in the stateful model's variables).
* ``replicas`` = R > 1: ``tf.distribute.MirroredStrategy`` over R local
  devices: the first R GPUs, or, with no GPU, R logical CPU devices (made
  by ``configure_local_devices``, which must run before TensorFlow
  initialises its devices: the local runner calls it at start-up).
* ``TF_CONFIG`` naming more than one task (the contract of Kubeflow's
  Training Operator, Vertex AI and ``tf.distribute``):
  ``MultiWorkerMirroredStrategy``, one replica per worker; the chief (the
  ``chief`` task, or ``worker`` 0 when there is none) exports, the others
  train and write nothing the pipeline reads.

``make_distribution`` must run before the process's first TensorFlow op
(collective ops are configured at start-up): ``run.run`` calls it first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Mapping, Optional

import tensorflow as tf

_LOG = logging.getLogger(__name__)

TF_CONFIG = 'TF_CONFIG'


class DistributionError(RuntimeError):
  """The run cannot train on the devices or workers it asks for."""


@dataclasses.dataclass(frozen=True)
class Distribution:
  """The strategy and this process's place in it.

  Attributes:
    strategy: None for one process without replicas.
    task_type: ``chief``/``worker`` under ``TF_CONFIG``, else None.
    task_id: the task's index.
    num_workers: processes training together (1 without ``TF_CONFIG``).
    has_chief_task: the cluster has a ``chief`` task (else worker 0 is
      the chief).
  """
  strategy: Optional[tf.distribute.Strategy] = None
  task_type: Optional[str] = None
  task_id: int = 0
  num_workers: int = 1
  has_chief_task: bool = False

  @property
  def num_replicas(self) -> int:
    return int(self.strategy.num_replicas_in_sync) if self.strategy else 1

  @property
  def is_chief(self) -> bool:
    """The process that exports (and writes the checkpoints resumed)."""
    return self.task_type in (None, 'chief') or (
        self.task_type == 'worker' and self.task_id == 0 and
        not self.has_chief_task)

  @property
  def name(self) -> str:
    return (f'{self.task_type}:{self.task_id}' if self.task_type
            else 'the only process')


def cluster_of(env: Mapping[str, str]) -> Optional[Mapping[str, Any]]:
  """``TF_CONFIG`` as a dict when it names more than one task, else None.

  Raises:
    DistributionError: ``TF_CONFIG`` is not JSON or has no ``task``.
  """
  text = env.get(TF_CONFIG)
  if not text:
    return None
  try:
    config = json.loads(text)
  except ValueError as e:
    raise DistributionError(f'{TF_CONFIG} is not JSON: {e}') from None
  cluster = config.get('cluster') or {}
  tasks = sum(len(v) for k, v in cluster.items() if k in ('chief', 'worker'))
  if tasks <= 1:
    return None
  task = config.get('task') or {}
  if 'type' not in task or 'index' not in task:
    raise DistributionError(
        f'{TF_CONFIG} names {tasks} tasks but not this process\'s task '
        '({"task": {"type": "worker", "index": i}})')
  return config


def configure_local_devices(replicas: int) -> None:
  """Makes ``replicas`` logical CPU devices when there is no GPU.

  Raises:
    DistributionError: TensorFlow already initialised its devices with
      fewer.
  """
  if replicas <= 1 or tf.config.list_physical_devices('GPU'):
    return
  cpu = tf.config.list_physical_devices('CPU')[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
  except RuntimeError:
    have = len(tf.config.list_logical_devices('CPU'))
    if have < replicas:
      raise DistributionError(
          f'replicas={replicas} needs {replicas} logical CPU devices, but '
          f'TensorFlow already started with {have}: call '
          'distribution.configure_local_devices(replicas) before the first '
          'TensorFlow op (python -m pipeline.local_runner --replicas does)'
      ) from None


def make_distribution(replicas: int = 1,
                      env: Optional[Mapping[str, str]] = None
                     ) -> Distribution:
  """The strategy of a run (see the module docstring); logs it."""
  env = os.environ if env is None else env
  cluster = cluster_of(env)
  if cluster is not None:
    if replicas > 1:
      raise DistributionError(
          f'replicas={replicas} with a multi-worker {TF_CONFIG}: each worker '
          'trains one replica (its GPUs, when it has them, are not yet '
          'shared); set replicas to 1')
    task = cluster['task']
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    names = cluster['cluster']
    dist = Distribution(strategy=strategy, task_type=str(task['type']),
                        task_id=int(task['index']),
                        num_workers=sum(len(names.get(k) or [])
                                        for k in ('chief', 'worker')),
                        has_chief_task=bool(names.get('chief')))
    _LOG.info('training on %d workers (MultiWorkerMirroredStrategy from %s, '
              '%d replicas in sync); this process is %s%s', dist.num_workers,
              TF_CONFIG, dist.num_replicas, dist.name,
              ' (the chief: it exports)' if dist.is_chief else '')
    return dist
  if replicas <= 1:
    return Distribution()
  configure_local_devices(replicas)
  gpus = tf.config.list_logical_devices('GPU')
  pool = gpus if gpus else tf.config.list_logical_devices('CPU')
  if len(pool) < replicas:
    raise DistributionError(
        f'replicas={replicas} but this machine has {len(pool)} '
        f'{"GPU" if gpus else "logical CPU"} devices')
  devices = [d.name for d in pool[:replicas]]
  strategy = tf.distribute.MirroredStrategy(
      devices, cross_device_ops=None if gpus else
      tf.distribute.ReductionToOneDevice())
  _LOG.info('training on %d local replicas (MirroredStrategy over %s)',
            replicas, ', '.join(devices))
  return Distribution(strategy=strategy)
