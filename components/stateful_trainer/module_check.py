"""The up-front check of a model module and its hyperparameters, for a
runner to call before anything runs (``check_module``).

Every failure is a one-line ``model_io.ModuleError`` naming the module
file: a module that does not import (an exception, or ``sys.exit()`` at
import), that breaks the hook table (``module_contract``: no
``build_model``, a misspelt hook), a hyperparameter key the module does not
read (when it declares its keys with ``hyperparameter_keys(spec)``) or a
bad value of one (the default module's ``model=foo``), and a
``build_model(spec)`` that raises or does not return a ``tf_keras`` model.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from typing import Any, Mapping, Optional, Sequence

import tf_keras as keras

from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful import module_contract
from components.stateful_trainer import settings

_LOG = logging.getLogger(__name__)

ModuleError = model_io.ModuleError

# The hyperparameters the trainer reads itself, whatever the module
# (``settings.OptimizerConfig``).
TRAINER_KEYS = tuple(f.name for f in dataclasses.fields(
    settings.OptimizerConfig))


def check_module(module_file: Optional[str],
                 hyperparameters: Mapping[str, Any],
                 num_features: int,
                 task: str,
                 num_classes: Optional[int] = None,
                 *,
                 output_size: Optional[int] = None,
                 label_kind: str = ms.PER_SEQUENCE,
                 feature_names: Optional[Sequence[str]] = None,
                 typical_length: Optional[int] = None,
                 batch_size: int = 2,
                 num_unroll: int = 8,
                 seed: int = 0) -> module_contract.ModuleHooks:
  """Checks a model module cheaply before a pipeline runs.

  Imports the module (None: the default module), checks its hooks
  (``module_contract.hooks_of(module, strict=True)``), the hyperparameter
  keys (``check_hyperparameters``) and builds its model once, stateful,
  for a small placeholder layout (``batch_size`` lanes of ``num_unroll``
  steps; the real layout is checked again by the trainer). The Keras
  session is cleared afterwards, so a run in the same process names its
  layers as it would have without the check.

  Args:
    module_file: the ``--module-file``, or None for the default module.
    hyperparameters: the run's hyperparameters (``spec.hyperparameters``).
    num_features: F, the number of features.
    task: ``classification`` or ``regression``.
    num_classes: classification: the number of classes (None: 2, a
      placeholder).
    output_size: regression: values per step (None: 1).
    label_kind: ``per_sequence`` or ``per_step``.
    feature_names: the feature names (None: ``x0``, ``x1``, ...).
    typical_length: the median training length, when known.
    batch_size: B of the placeholder layout.
    num_unroll: T of the placeholder layout.
    seed: the run's seed.

  Returns:
    The module's ``module_contract.ModuleHooks``.

  Raises:
    ModuleError: one line naming the module file (see the module
      docstring).
    model_spec.ModelSpecError: the layout arguments themselves are invalid.
  """
  module = model_io.resolve_module(module_file)
  hooks = module_contract.hooks_of(module, strict=True)
  names = (tuple(feature_names) if feature_names is not None else
           tuple(f'x{i}' for i in range(int(num_features))))
  if len(names) != int(num_features):
    raise ms.ModelSpecError(f'{len(names)} feature names for num_features '
                            f'{num_features}')
  classification = task == ms.CLASSIFICATION
  try:
    spec = ms.ModelSpec(
        batch_size=int(batch_size), num_unroll=int(num_unroll),
        stateful=True, feature_names=names, label_kind=label_kind,
        task=task,
        num_classes=(int(num_classes or 2) if classification else None),
        output_size=(None if classification else int(output_size or 1)),
        hyperparameters=dict(hyperparameters or {}), seed=int(seed),
        typical_length=typical_length)
  except ms.ModelSpecError as e:
    if 'hyperparameters' not in str(e):
      raise
    raise ModuleError(f'hyperparameters for model module {hooks.where!r}: '
                      f'{e}') from None
  declared = check_hyperparameters(hooks, spec)
  read = _Recording(spec.hyperparameters)
  object.__setattr__(spec, 'hyperparameters', read)  # Its private copy.
  try:
    model = hooks.build_model(spec)
  except (Exception, SystemExit) as e:  # Anything from user code.
    raise ModuleError(f'model module {hooks.where!r}: build_model(spec) '
                      f'raised {module_contract.one_line(e)}') from e
  finally:
    keras.backend.clear_session()
  _check_model(model, hooks.where)
  if declared is None:
    unread = sorted(set(dict.keys(read)) - read.read - set(TRAINER_KEYS))
    if unread:
      _LOG.warning(
          'model module %r: build_model(spec) did not read the '
          'hyperparameters %s, nor does the trainer (a typo? it read %s; '
          'a module can declare its keys with a hyperparameter_keys(spec) '
          'hook to make this an error)', hooks.where, unread,
          sorted(read.read))
  return hooks


def check_hyperparameters(hooks: module_contract.ModuleHooks,
                          spec: ms.ModelSpec) -> Optional[frozenset]:
  """The keys the module and the trainer read, when the module declares
  its own (``hyperparameter_keys(spec)``), else None.

  Raises:
    ModuleError: a key of ``spec.hyperparameters`` that neither reads
      (naming the closest known key), or the hook's ``ValueError`` for a
      bad value (the default module's ``model=foo``).
  """
  if hooks.hyperparameter_keys is None:
    return None
  try:
    declared = hooks.hyperparameter_keys(spec)
    known = frozenset(TRAINER_KEYS) | frozenset(str(k) for k in declared)
  except ValueError as e:
    raise ModuleError(f'hyperparameters for model module {hooks.where!r}: '
                      f'{module_contract.one_line(e)}') from None
  except Exception as e:  # pylint: disable=broad-except
    raise ModuleError(f'model module {hooks.where!r}: '
                      'hyperparameter_keys(spec) raised '
                      f'{module_contract.one_line(e)}') from e
  unknown = sorted(set(spec.hyperparameters) - known)
  if unknown:
    key = str(unknown[0])
    closest = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.0)
    raise ModuleError(
        f'hyperparameter {key!r} is not read by model module '
        f'{hooks.where!r} nor by the trainer (the closest known key: '
        f'{closest[0]!r}; known: {", ".join(sorted(known))})')
  return known


def _check_model(model: Any, where: str) -> None:
  """A one-line ``ModuleError`` unless ``model`` is a tf_keras Model."""
  if isinstance(model, keras.Model):
    return
  if model is None:
    raise ModuleError(f'model module {where!r}: build_model(spec) returned '
                      'None; it must return a tf_keras (Keras 2) Model')
  kind = f'{type(model).__module__}.{type(model).__qualname__}'
  hint = ''
  if type(model).__module__.split('.')[0] == 'keras':
    hint = (': a Keras 3 model; build it with `import tf_keras as keras` (or '
            'set TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)')
  raise ModuleError(f'model module {where!r}: build_model(spec) must return '
                    f'a tf_keras (Keras 2) Model, got {kind}{hint}')


class _Recording(dict):
  """The hyperparameters, recording the keys looked up (``read``); reading
  them all at once (iterating, ``items()``, a copy) counts as reading
  every key."""

  def __init__(self, values):
    super().__init__(values)
    self.read = set()

  def _all(self):
    self.read.update(dict.keys(self))

  def __getitem__(self, key):
    self.read.add(key)
    return super().__getitem__(key)

  def get(self, key, default=None):
    self.read.add(key)
    return super().get(key, default)

  def __contains__(self, key):
    self.read.add(key)
    return super().__contains__(key)

  def __iter__(self):
    self._all()
    return super().__iter__()

  def keys(self):
    self._all()
    return super().keys()

  def items(self):
    self._all()
    return super().items()

  def values(self):
    self._all()
    return super().values()

  def copy(self):
    self._all()
    return dict(self)
