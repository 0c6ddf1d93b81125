"""The model module contract: every hook a model module may define, declared
once, and read in one place (``hooks_of``).

A model module (the ``--module-file``, or ``default_model.py`` without one)
defines ``build_model(spec)`` and any of the optional hooks in ``HOOKS``;
the trainer, the objective and the export read them only through
``hooks_of(module)``. A public module-level name that is close to a hook's
name but is not one (``default_epoch``, ``optimiser_defaults``) would be
silently ignored, so ``hooks_of(module, strict=True)`` (what
``model_io.resolve_module`` uses) refuses it with a one-line
``ModuleError``.

Plain Python (no TensorFlow), so the trainer's settings can read hooks.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from typing import Any, Callable, Dict, List, Optional

# Hook name -> what it is (one line each). ``build_model`` is required.
HOOKS: Dict[str, str] = {
    'build_model': 'build_model(spec) -> a tf_keras Model, features '
                   '[B, T, F] -> outputs [B, T, K] (required)',
    'adapt': 'adapt(model, spec, batches[, shard][, refit]) -> summary '
             'dict: fits data-dependent weights before training',
    'label_scoring': "label_scoring(spec) -> 'last_step', 'every_step' or "
                     "'weighted': where a per-sequence label is scored",
    'default_epochs': 'default_epochs(spec) -> int or None: epochs when '
                      '--epochs is unset',
    'scales_labels': 'scales_labels(spec) -> bool: the model maps regression '
                     'outputs to label units itself (no standardisation)',
    'optimizer_defaults': 'optimizer_defaults(spec) -> dict: optimizer '
                          'hyperparameters over the trainer\'s defaults '
                          '(settings.OptimizerConfig)',
    'loss': 'loss(spec) -> a Keras loss function or Loss (applied '
            'unreduced, per step)',
    'metrics': 'metrics(spec) -> a list of Keras metrics',
    'hyperparameter_keys': 'hyperparameter_keys(spec) -> the '
                           'spec.hyperparameters keys the module reads '
                           '(others are refused up front); may raise '
                           'ValueError for a bad value',
}
REQUIRED = ('build_model',)

# How close (difflib's ratio) a public name must be to a hook's name to be
# taken for a misspelling of it: catches 'default_epoch',
# 'optimiser_defaults', 'lable_scoring', 'metric', 'build_models'; leaves
# helpers such as 'model_kind', 'losses', 'loss_fn', 'hyperparameters'.
NEAR_MISS_CUTOFF = 0.9


class ModuleError(ValueError):
  """A model module is missing, does not import, or breaks the contract."""


@dataclasses.dataclass(frozen=True)
class ModuleHooks:
  """A model module's hooks (see ``HOOKS``); None where it has none.

  Attributes:
    module: the module (or any object with the hooks as attributes).
    where: its file (or name), for messages.
  """
  module: Any
  where: str
  build_model: Optional[Callable] = None
  adapt: Optional[Callable] = None
  label_scoring: Optional[Callable] = None
  default_epochs: Optional[Callable] = None
  scales_labels: Optional[Callable] = None
  optimizer_defaults: Optional[Callable] = None
  loss: Optional[Callable] = None
  metrics: Optional[Callable] = None
  hyperparameter_keys: Optional[Callable] = None


assert set(HOOKS) == {f.name for f in dataclasses.fields(ModuleHooks)} - {
    'module', 'where'}, 'HOOKS and ModuleHooks must list the same hooks'


def one_line(e: BaseException) -> str:
  """``Type: message`` on one line; a SyntaxError with its line number."""
  if isinstance(e, SyntaxError):
    return f'{type(e).__name__}: {e.msg} (line {e.lineno})'
  if isinstance(e, SystemExit):
    return f'SystemExit: it called sys.exit({e.code!r})'
  text = ' '.join(str(e).split())
  return f'{type(e).__name__}: {text}' if text else type(e).__name__


def where(module: Any) -> str:
  """The module's file, else its name, else its repr (for messages)."""
  return str(getattr(module, '__file__', None) or
             getattr(module, '__name__', None) or module)


def hooks_of(module: Any, strict: bool = False) -> ModuleHooks:
  """The hooks ``module`` defines: the one place they are read.

  Args:
    module: a model module (or None: no hooks).
    strict: also require ``build_model`` and refuse a public name that
      looks like a misspelt hook (``near_misses``).

  Returns:
    ``ModuleHooks``.

  Raises:
    ModuleError: a hook that is not callable; with ``strict``, no
      ``build_model`` or a misspelt hook (one line: file, name, hook).
  """
  if module is None:
    return ModuleHooks(module=None, where='None')
  found = {}
  for name in HOOKS:
    value = getattr(module, name, None)
    if value is not None and not callable(value):
      raise ModuleError(f'model module {where(module)!r}: {name} must be a '
                        f'function, {HOOKS[name]}; got '
                        f'{type(value).__name__}')
    found[name] = value
  if strict:
    for name in REQUIRED:
      if found[name] is None:
        raise ModuleError(f'model module {where(module)!r} does not define '
                          f'{name}(spec)')
    misses = near_misses(module)
    if misses:
      name, hook = misses[0]
      raise ModuleError(
          f'model module {where(module)!r} defines {name!r}, which is not a '
          f'hook but looks like the hook {hook!r} ({HOOKS[hook]}): rename it '
          f'{hook!r}, or give it a leading underscore if it is a helper')
  return ModuleHooks(module=module, where=where(module), **found)


def near_misses(module: Any) -> List[tuple]:
  """``(name, hook)`` for each public name of ``module`` defined there
  (not an imported module, function or class) that is not a hook but is
  within ``NEAR_MISS_CUTOFF`` of a hook's name."""
  if not isinstance(module, types.ModuleType):
    return []
  own = getattr(module, '__name__', None)
  out = []
  for name, value in sorted(vars(module).items()):
    if name.startswith('_') or name in HOOKS:
      continue
    if isinstance(value, types.ModuleType):
      continue
    if callable(value) and getattr(value, '__module__', own) != own:
      continue  # Imported (a function, a class, a typing alias).
    close = difflib.get_close_matches(name, list(HOOKS), n=1,
                                      cutoff=NEAR_MISS_CUTOFF)
    if close:
      out.append((name, close[0]))
  return out
