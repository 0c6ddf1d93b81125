"""Old module paths, for model artifacts saved by earlier versions.

A model artifact stores a copy of its model module (``stateful/module.py``:
the default model's ``default_model.py``, or the user's file), and that copy
imports ``components.stateful.*`` by path when the artifact is loaded, e.g.
as the evaluator's baseline. Names that have moved since are resolved here,
in one table, instead of being re-exported from the modules they left.
``install()`` (called by ``model_io.load_module_file`` before it imports a
stored or user module) gives each old module a module ``__getattr__``
(PEP 562) that finds a moved name in its new home; nothing is imported
until a name is asked for, and a name not in the table is still an
``AttributeError``.

| old path | name | new home |
|---|---|---|
| ``components.stateful.layers`` | ``RunningPool``, ``DecayingPool``, ``POOL_STATS``, ``DECAYING_STATS`` | ``components.stateful.pools`` |
| ``components.stateful.state`` | ``run_with_states``, ``serving_state_layers``, ``serving_state_shapes`` | ``components.stateful.explicit_state`` |

Resumable checkpoints of older versions are another matter: their
fingerprint covers the code, and a changed code is refused (docs/
stateful_trainer.md, "Resume").
"""

from __future__ import annotations

import importlib
from typing import Dict

MOVED: Dict[str, Dict[str, str]] = {
    'components.stateful.layers': {
        'RunningPool': 'components.stateful.pools',
        'DecayingPool': 'components.stateful.pools',
        'POOL_STATS': 'components.stateful.pools',
        'DECAYING_STATS': 'components.stateful.pools',
    },
    'components.stateful.state': {
        'run_with_states': 'components.stateful.explicit_state',
        'serving_state_layers': 'components.stateful.explicit_state',
        'serving_state_shapes': 'components.stateful.explicit_state',
    },
}


def _resolver(old: str, names: Dict[str, str]):
  def __getattr__(name: str):  # pylint: disable=invalid-name
    if name in names:
      return getattr(importlib.import_module(names[name]), name)
    raise AttributeError(f'module {old!r} has no attribute {name!r}')
  return __getattr__


def install() -> None:
  """Makes every moved name resolvable from its old module (idempotent)."""
  for old, names in MOVED.items():
    module = importlib.import_module(old)
    if getattr(module, '__getattr__', None) is None:
      module.__getattr__ = _resolver(old, names)
