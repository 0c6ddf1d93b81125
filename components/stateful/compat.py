"""Old module paths, for model artifacts saved by earlier versions.

A model artifact stores a copy of its model module (``stateful/module.py``:
the default model's ``default_model.py``, or the user's file), and that copy
imports ``components.stateful.*`` by path when the artifact is loaded, e.g.
as the evaluator's baseline. Modules and names that have moved since are
resolved here, in one table, instead of being re-exported from the modules
they left. ``install()`` (called by ``model_io.load_module_file`` before it
imports a stored or user module) makes them resolvable; nothing is imported
until an old path or name is asked for.

``MODULES``: an old module path that no longer exists imports as its new
module (the same module object, so the same classes and Keras
registrations).

| old path | new module |
|---|---|
| ``components.stateful.explicit_state`` | ``components.stateful.state.explicit`` |
| ``components.stateful.resets`` | ``components.stateful.state.resets`` |
| ``components.stateful.pools`` | ``components.stateful.layers.pools`` |
| ``components.stateful.lru`` | ``components.stateful.layers.lru`` |
| ``components.stateful.scans`` | ``components.stateful.layers.scans`` |
| ``components.stateful.default_model`` | ``components.stateful.models.default_model`` |
| ``components.stateful.conv_adapt`` | ``components.stateful.models.conv_adapt`` |
| ``components.stateful.ridge`` | ``components.stateful.models.ridge`` |
| ``components.stateful.recurrent_models`` | ``components.stateful.models.recurrent_models`` |
| ``components.stateful.hyperparameters`` | ``components.stateful.models.hyperparameters`` |
| ``components.stateful.row_sampling`` | ``components.stateful.models.row_sampling`` |
| ``components.stateful.replicas`` | ``components.stateful.distribution.replicas`` |
| ``components.stateful.shards`` | ``components.stateful.distribution.shards`` |

``MOVED``: an old module path that is a package now (``layers.py`` became
``layers/``, ``state.py`` became ``state/``) gets a module ``__getattr__``
(PEP 562) that finds each of the old module's names in its new home; a
name not in the table is still an ``AttributeError``.

| old path | names | new module |
|---|---|---|
| ``components.stateful.layers`` | ``StatefulLayer``, ``PlainCall`` | ``components.stateful.layers.base`` |
| | ``CausalConv1D``, ``CenteredNormal``, ``LagKernel``, ``EXACT_CHANNELS`` | ``components.stateful.layers.convolution`` |
| | ``SignedLog``, ``Standardize``, ``LabelUnits`` | ``components.stateful.layers.elementwise`` |
| | ``RunningPool``, ``DecayingPool``, ``POOL_STATS``, ``DECAYING_STATS`` | ``components.stateful.layers.pools`` |
| ``components.stateful.state`` | every public name of the old ``state.py`` (``STATE_NAMES``) | ``components.stateful.state.protocol`` |
| | ``run_with_states``, ``serving_state_layers``, ``serving_state_shapes`` | ``components.stateful.state.explicit`` |

Resumable checkpoints of older versions are another matter: their
fingerprint covers the code, and a changed code is refused (docs/
stateful_trainer.md, "Resume").
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import Dict

_CORE = 'components.stateful'

MODULES: Dict[str, str] = {
    f'{_CORE}.{old}': f'{_CORE}.{new}' for old, new in (
        ('explicit_state', 'state.explicit'),
        ('resets', 'state.resets'),
        ('pools', 'layers.pools'),
        ('lru', 'layers.lru'),
        ('scans', 'layers.scans'),
        ('default_model', 'models.default_model'),
        ('conv_adapt', 'models.conv_adapt'),
        ('ridge', 'models.ridge'),
        ('recurrent_models', 'models.recurrent_models'),
        ('hyperparameters', 'models.hyperparameters'),
        ('row_sampling', 'models.row_sampling'),
        ('replicas', 'distribution.replicas'),
        ('shards', 'distribution.shards'),
    )}

# The public names of the old ``state.py`` (the protocol).
STATE_NAMES = ('StatefulModelError', 'all_layers', 'recurrent_layers',
               'stateful_rnn_layers', 'carries_state', 'stateful_layers',
               'trainable_behind_state', 'state_variables', 'reset_lanes',
               'zero_rows', 'zero_all', 'snapshot', 'restore',
               'check_stateful_model', 'check_serving_model')


def _names(home: str, *names: str) -> Dict[str, str]:
  return {name: f'{_CORE}.{home}' for name in names}


MOVED: Dict[str, Dict[str, str]] = {
    f'{_CORE}.layers': {
        **_names('layers.base', 'StatefulLayer', 'PlainCall'),
        **_names('layers.convolution', 'CausalConv1D', 'CenteredNormal',
                 'LagKernel', 'EXACT_CHANNELS'),
        **_names('layers.elementwise', 'SignedLog', 'Standardize',
                 'LabelUnits'),
        **_names('layers.pools', 'RunningPool', 'DecayingPool', 'POOL_STATS',
                 'DECAYING_STATS'),
    },
    f'{_CORE}.state': {
        **_names('state.protocol', *STATE_NAMES),
        **_names('state.explicit', 'run_with_states', 'serving_state_layers',
                 'serving_state_shapes'),
    },
}


def _resolver(old: str, names: Dict[str, str]):
  def __getattr__(name: str):  # pylint: disable=invalid-name
    if name in names:
      return getattr(importlib.import_module(names[name]), name)
    raise AttributeError(f'module {old!r} has no attribute {name!r}')
  return __getattr__


class _OldModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Imports an old path of ``MODULES`` as its new module (the module
  object itself, not a second copy)."""

  def find_spec(self, fullname, path=None, target=None):  # pylint: disable=unused-argument
    if fullname not in MODULES:
      return None
    return importlib.machinery.ModuleSpec(fullname, self)

  def create_module(self, spec):
    module = importlib.import_module(MODULES[spec.name])
    # The import system sets ``__spec__`` of what this returns to the old
    # path's spec; ``exec_module`` puts the module's own back.
    module.__dict__.setdefault('_compat_spec', module.__spec__)
    return module

  def exec_module(self, module):
    module.__spec__ = module.__dict__.pop('_compat_spec')


_FINDER = _OldModules()


def install() -> None:
  """Makes every old module path and moved name resolvable (idempotent)."""
  if _FINDER not in sys.meta_path:
    sys.meta_path.append(_FINDER)
  for old, names in MOVED.items():
    module = importlib.import_module(old)
    if getattr(module, '__getattr__', None) is None:
      module.__getattr__ = _resolver(old, names)
