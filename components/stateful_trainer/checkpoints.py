"""Where a run's checkpoints live and whether it resumes them.

``prepare_checkpoints`` chooses the folder (keyed by the run's fingerprint,
or the user's), decides between resuming and starting fresh (and logs why)
and marks it as this run's; ``Checkpoints`` removes them once the model is
exported. Used by ``run.run``. No TFX import.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import tensorflow as tf

from components.stateful_trainer import fingerprint as fingerprint_lib

_LOG = logging.getLogger('components.stateful_trainer.run')

CHECKPOINT_SUBDIR = 'checkpoints'
REFIT_SUBDIR = 'refit'  # Checkpoints of the refit, under the checkpoints.
RUN_FILE = 'run.json'  # In a checkpoint directory: whose, and how far.
TRAINING, EXPORTED = 'training', 'exported'


@dataclasses.dataclass(frozen=True)
class Checkpoints:
  """Where a run's checkpoints are, and whose they are.

  Attributes:
    path: the checkpoint directory (the refit's is ``path/refit``).
    owned: the directory is the trainer's alone (keyed by the fingerprint,
      or inside the ModelRun): removed as a whole after the export. A
      user's ``checkpoint_dir`` keeps everything but the checkpoints.
    fingerprint: the run's.
  """
  path: str
  owned: bool
  fingerprint: fingerprint_lib.Fingerprint

  @property
  def run_file(self) -> str:
    return f'{self.path}/{RUN_FILE}'

  def has_checkpoints(self) -> bool:
    return bool(tf.train.latest_checkpoint(self.path) or
                tf.train.latest_checkpoint(f'{self.path}/{REFIT_SUBDIR}'))

  def mark(self, status: str) -> None:
    tf.io.gfile.makedirs(self.path)
    fingerprint_lib.write(self.run_file, {
        **self.fingerprint.to_dict(), 'status': status,
        'updated': time.time()})

  def clear(self) -> None:
    """Removes the checkpoints (and the directory, when it is owned)."""
    if not tf.io.gfile.exists(self.path):
      return
    if self.owned:
      tf.io.gfile.rmtree(self.path)
      return
    for name in tf.io.gfile.listdir(self.path):
      name = name.rstrip('/')
      path = f'{self.path}/{name}'
      if name == REFIT_SUBDIR and tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      elif name in ('checkpoint', fingerprint_lib.FILE) or name.startswith(
          'ckpt-'):
        tf.io.gfile.remove(path)


def _earlier_runs(root: str, digest: str):
  """(updated, folder, run.json) of the unfinished runs under ``root``
  other than ``digest``, newest first."""
  found = []
  if not tf.io.gfile.isdir(root):
    return found
  for name in tf.io.gfile.listdir(root):
    name = name.rstrip('/')
    if name == digest:
      continue
    stamp = fingerprint_lib.read(f'{root}/{name}/{RUN_FILE}')
    if stamp and stamp.get('status') == TRAINING:
      found.append((float(stamp.get('updated') or 0), name, stamp))
  return sorted(found, key=lambda t: t[0], reverse=True)


def prepare_checkpoints(args,
                        fp: fingerprint_lib.Fingerprint,
                        chief: bool = True) -> Checkpoints:
  """Chooses the checkpoint directory, decides between resuming and
  starting fresh (and logs why), and marks the directory as this run's.

  Resumed: checkpoints of a run with the same fingerprint that has not
  exported its model. Anything else starts fresh: no such checkpoints,
  ``fresh``, or a run that finished (a finished run is never resumed into
  a new model). A user's ``checkpoint_dir`` holding checkpoints of another
  fingerprint is an error (``CheckpointMismatchError``).

  A worker that is not the chief (``chief`` False) only reads the chief's
  directory: the chief decides, removes and marks.
  """
  if args.checkpoint_dir:
    ckpts = Checkpoints(args.checkpoint_dir.rstrip('/'), False, fp)
  elif args.checkpoint_root:
    ckpts = Checkpoints(f'{args.checkpoint_root.rstrip("/")}/{fp.digest}',
                        True, fp)
  else:
    ckpts = Checkpoints(os.path.join(args.model_run_dir, CHECKPOINT_SUBDIR),
                        True, fp)
  if not chief:
    return ckpts
  stamp = fingerprint_lib.read(ckpts.run_file)
  has = ckpts.has_checkpoints()
  if args.fresh:
    if has or stamp:
      ckpts.clear()
    _LOG.info('starting fresh (fresh is set)%s; fingerprint %s',
              f': removed the checkpoints in {ckpts.path}' if has else '',
              fp.digest)
  elif stamp and stamp.get('digest') != fp.digest and has:
    why = fp.diff(fingerprint_lib.Fingerprint.from_dict(stamp))
    raise fingerprint_lib.CheckpointMismatchError(
        f'checkpoint_dir {ckpts.path} holds the checkpoints of another run '
        f'({"; ".join(why) or "another fingerprint"}): remove them, give '
        'another checkpoint_dir, or set fresh to discard them')
  elif stamp and stamp.get('digest') == fp.digest and stamp.get(
      'status') == EXPORTED:
    ckpts.clear()
    _LOG.info('starting fresh: the run with these inputs in %s finished and '
              'exported its model (a finished run is never resumed into a new '
              'model); fingerprint %s', ckpts.path, fp.digest)
  elif has:
    _LOG.info('resuming the unfinished run with these inputs from %s '
              '(fingerprint %s)', ckpts.path, fp.digest)
  elif args.checkpoint_root and not args.checkpoint_dir:
    earlier = _earlier_runs(args.checkpoint_root.rstrip('/'), fp.digest)
    if earlier:
      _, name, other = earlier[0]
      why = fp.diff(fingerprint_lib.Fingerprint.from_dict(other))
      _LOG.info('starting fresh: no checkpoints for these inputs under %s '
                '(fingerprint %s); the unfinished run there (%s) had other '
                'inputs: %s', args.checkpoint_root, fp.digest, name,
                '; '.join(why) or 'another fingerprint')
    else:
      _LOG.info('starting fresh: no checkpoints for these inputs under %s '
                '(fingerprint %s)', args.checkpoint_root, fp.digest)
  else:
    _LOG.info('starting fresh: no checkpoints in %s (fingerprint %s)',
              ckpts.path, fp.digest)
  ckpts.mark(TRAINING)
  return ckpts
