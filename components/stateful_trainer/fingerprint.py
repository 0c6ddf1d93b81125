"""The fingerprint of a training run: what its result depends on, hashed once.

A run's model is a function of its inputs: the batches (every file of the
SequenceBatches artifact, by content), the transform graph (by content), the
model module's source, the trainer's own code, and every setting (each
``TrainConfig`` field, the seed among them, the hyperparameters, the task,
the class count, the splits). ``run_fingerprint`` hashes them into one
``Fingerprint``; two runs with equal digests train the same model.

Uses:

* checkpoints: the pipeline keeps them in ``<checkpoint root>/<digest>/``,
  so a later execution with the same inputs finds and resumes them, and any
  change of inputs starts fresh (``run.py``); ``diff`` says why;
* the trained model: the digest is recorded with it (``fingerprint.json``
  next to its weights, and the ``training_fingerprint`` property of the
  ``Model`` artifact), so later stages can tell whether two models were
  trained on the same inputs.

Plain Python plus ``tf.io.gfile`` (local paths and buckets alike).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional

import tensorflow as tf

VERSION = 1
FILE = 'fingerprint.json'
_CHUNK = 1 << 20

# The trainer's own code: a change of it may change the model.
_CODE_PACKAGES = ('components/stateful', 'components/stateful_trainer')
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class CheckpointMismatchError(ValueError):
  """Checkpoints that belong to another run (other inputs or settings)."""


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def canonical(value: Any) -> str:
  """JSON with sorted keys: the text that is hashed."""
  return json.dumps(value, sort_keys=True, separators=(',', ':'),
                    default=str)


def file_digest(path: str) -> str:
  """sha256 of one file's bytes."""
  h = hashlib.sha256()
  with tf.io.gfile.GFile(path, 'rb') as f:
    while True:
      chunk = f.read(_CHUNK)
      if not chunk:
        break
      h.update(chunk)
  return h.hexdigest()


def tree_digest(root: str) -> str:
  """sha256 over every file under ``root``: relative paths and contents, in
  sorted order (so it does not depend on where the tree is)."""
  root = root.rstrip('/')
  entries = []
  for dirpath, _, files in tf.io.gfile.walk(root):
    for name in files:
      path = dirpath.rstrip('/') + '/' + name
      entries.append((path[len(root) + 1:], path))
  if not entries:
    raise FileNotFoundError(f'{root}: no files to fingerprint')
  h = hashlib.sha256()
  for rel, path in sorted(entries):
    h.update(canonical([rel, file_digest(path)]).encode())
  return h.hexdigest()


def code_digest(paths: Optional[Iterable[str]] = None) -> str:
  """sha256 of the trainer's Python sources (``_CODE_PACKAGES``, their
  sub-packages included), each named by its path in the repository."""
  if paths is None:
    paths = []
    for package in _CODE_PACKAGES:
      for folder, _, names in os.walk(os.path.join(_ROOT, package)):
        paths += [os.path.join(folder, n) for n in names if n.endswith('.py')]
  h = hashlib.sha256()
  for path in sorted(paths):
    with open(path, 'rb') as f:
      name = os.path.relpath(os.path.abspath(path), _ROOT)
      h.update(canonical([name, _sha(f.read())]).encode())
  return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Fingerprint:
  """What a run depends on (``parts``) and its digest.

  Attributes:
    parts: name -> a content digest (``batches``, ``transform_graph``,
      ``module``, ``trainer_code``) or the settings as values
      (``settings``: name -> value), all JSON.
  """
  parts: Mapping[str, Any]

  @property
  def digest(self) -> str:
    """The first 20 hex digits of sha256 over the parts (a folder name)."""
    return _sha(canonical({'version': VERSION,
                           'parts': self.parts}).encode())[:20]

  def to_dict(self) -> Dict[str, Any]:
    return {'version': VERSION, 'digest': self.digest,
            'parts': json.loads(canonical(self.parts))}

  @classmethod
  def from_dict(cls, value: Mapping[str, Any]) -> 'Fingerprint':
    return cls(parts=dict(value.get('parts') or {}))

  def diff(self, other: 'Fingerprint') -> List[str]:
    """What differs from ``other`` (an earlier run), in words."""
    return diff_parts(other.parts, self.parts)


_PART_WORDS = {
    'batches': 'other batches',
    'transform_graph': 'another transform graph',
    'module': 'another model module',
    'trainer_code': 'other trainer code',
}


def _changes(old: Mapping[str, Any], new: Mapping[str, Any],
             prefix: str = '') -> List[str]:
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if a == b:
      continue
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      out += _changes(a, b, f'{prefix}{key}.')
    else:
      out.append(f'{prefix}{key} {canonical(a)} -> {canonical(b)}')
  return out


def diff_parts(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
  """Differences between two ``parts`` dicts: changed settings as
  ``name old -> new``, changed contents as words (``other batches``)."""
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if a == b:
      continue
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      changed = _changes(a, b)
      out.append(f'changed {key}: ' + ', '.join(changed))
    else:
      out.append(_PART_WORDS.get(key, f'changed {key}'))
  return out


def run_fingerprint(*, batches_uri: str, transform_graph_uri: Optional[str],
                    module_source: str, settings: Mapping[str, Any],
                    code: Optional[str] = None) -> Fingerprint:
  """The fingerprint of one training run.

  Args:
    batches_uri: the SequenceBatches artifact (every file, by content).
    transform_graph_uri: the TransformGraph artifact, or None.
    module_source: the model module's source file.
    settings: every training setting, as JSON values (``TrainConfig``
      fields, hyperparameters, task, ...).
    code: the trainer code's digest (default: ``code_digest()``).
  """
  return Fingerprint(parts={
      'batches': tree_digest(batches_uri),
      'transform_graph': (tree_digest(transform_graph_uri)
                          if transform_graph_uri else None),
      'module': file_digest(module_source),
      'trainer_code': code or code_digest(),
      'settings': json.loads(canonical(dict(settings))),
  })


def write(path: str, value: Mapping[str, Any]) -> None:
  """Writes JSON ``value`` to ``path`` (replaced as a whole)."""
  folder = os.path.dirname(path)
  if folder:
    tf.io.gfile.makedirs(folder)
  tmp = path + '.tmp'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    f.write(json.dumps(value, indent=1, sort_keys=True) + '\n')
  tf.io.gfile.rename(tmp, path, overwrite=True)


def read(path: str) -> Optional[Dict[str, Any]]:
  """The JSON at ``path``, or None if there is none."""
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.loads(f.read())


# The train split's properties that a checkpoint depends on.
_SPLIT_KEYS = ('batch_size', 'num_unroll', 'num_batches', 'num_sequences',
               'real_timesteps', 'feature_names', 'label_kind', 'mode')


def fit_fingerprint(model: Any, train: Any, config: Any,
                    run: Optional[str] = None) -> Fingerprint:
  """What one ``fit``'s checkpoints belong to: the run's fingerprint (if
  given), the loop settings (a ``TrainConfig``), the train split's shape (a
  ``BatchSource``) and the Keras model's weight shapes."""
  return Fingerprint(parts={
      'run': run,
      'settings': config.fingerprinted(),
      'train_split': {'split': train.split,
                      **{k: train.meta.get(k) for k in _SPLIT_KEYS}},
      'weights': [list(map(int, w.shape)) for w in model.weights],
  })


def check_checkpoint_fingerprint(checkpoint_dir: str,
                                 mine: Fingerprint) -> None:
  """Raises ``CheckpointMismatchError`` unless the checkpoints in
  ``checkpoint_dir`` were written by a run with fingerprint ``mine``."""
  stored = read(f'{checkpoint_dir}/{FILE}')
  if stored is None:
    raise CheckpointMismatchError(
        f'{checkpoint_dir} holds checkpoints without a {FILE}:'
        ' they cannot be matched to these batches and settings. Remove them '
        'or use another checkpoint directory.')
  if stored.get('digest') != mine.digest:
    why = mine.diff(Fingerprint.from_dict(stored))
    raise CheckpointMismatchError(
        f'{checkpoint_dir} holds checkpoints of another run '
        f'({"; ".join(why) or "other fingerprint"}). Remove them, use '
        'another checkpoint directory, or start fresh.')
