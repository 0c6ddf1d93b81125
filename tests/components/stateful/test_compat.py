"""The old module paths of moved names resolve through ``compat.MOVED``
(what a model module copy stored by an earlier version imports), and
nothing else does."""

from __future__ import annotations

import importlib
import textwrap

import pytest

from components.stateful import compat
from components.stateful import model_io


def test_every_moved_name_resolves_from_its_old_module():
  compat.install()
  for old, names in compat.MOVED.items():
    module = importlib.import_module(old)
    for name, home in names.items():
      assert getattr(module, name) is getattr(importlib.import_module(home),
                                              name), (old, name)
    with pytest.raises(AttributeError, match='no_such_name'):
      getattr(module, 'no_such_name')


def test_a_stored_module_importing_old_paths_loads(tmp_path):
  """A module file as older versions stored it: it takes the pools from
  ``layers`` and the explicit-state runner from ``state``."""
  path = tmp_path / 'module.py'
  path.write_text(textwrap.dedent('''
      from components.stateful.layers import RunningPool
      from components.stateful import state
      RUN = state.run_with_states
      def build_model(spec):
        return None
  '''))
  module = model_io.load_module_file(str(path))
  from components.stateful import explicit_state, pools  # pylint: disable=g-import-not-at-top
  assert module.RunningPool is pools.RunningPool
  assert module.RUN is explicit_state.run_with_states
