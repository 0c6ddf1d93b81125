"""The old module paths resolve through ``compat``'s table (what a model
module copy stored by an earlier version imports), and nothing else does."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from components.stateful import compat
from components.stateful import model_io


def test_every_old_module_path_imports_as_its_new_module():
  compat.install()
  for old, new in compat.MODULES.items():
    module = importlib.import_module(old)
    assert module is importlib.import_module(new), old
    assert module.__name__ == new
    assert module.__spec__.name == new, old  # Its own spec, kept.
    assert sys.modules[old] is module


def test_every_moved_name_resolves_from_its_old_module():
  compat.install()
  for old, names in compat.MOVED.items():
    module = importlib.import_module(old)
    for name, home in names.items():
      assert getattr(module, name) is getattr(importlib.import_module(home),
                                              name), (old, name)
    with pytest.raises(AttributeError, match='no_such_name'):
      getattr(module, 'no_such_name')


def test_the_old_layer_names_are_the_old_modules_names():
  """Every public name the old flat ``layers.py`` and ``state.py`` had."""
  layers = set(compat.MOVED['components.stateful.layers'])
  assert {'StatefulLayer', 'PlainCall', 'CausalConv1D', 'SignedLog',
          'Standardize', 'LabelUnits', 'CenteredNormal', 'LagKernel',
          'RunningPool', 'DecayingPool'} <= layers
  from components.stateful.state import protocol  # pylint: disable=g-import-not-at-top
  public = {n for n, v in vars(protocol).items()
            if not n.startswith('_') and getattr(v, '__module__', None) ==
            protocol.__name__}
  assert public == set(compat.STATE_NAMES)


def test_keras_registered_names_are_unchanged():
  """Saved models name their custom objects by these."""
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  from components.stateful.layers import convolution, elementwise, lru, pools  # pylint: disable=g-import-not-at-top,multiple-imports
  from components.stateful.models import recurrent_models  # pylint: disable=g-import-not-at-top
  for cls in (convolution.CausalConv1D, convolution.CenteredNormal,
              convolution.LagKernel, elementwise.SignedLog,
              elementwise.Standardize, elementwise.LabelUnits,
              pools.RunningPool, pools.DecayingPool, lru.LinearRecurrence):
    assert keras.utils.get_registered_name(cls) == (
        f'components.stateful>{cls.__name__}')
  assert keras.utils.get_registered_name(recurrent_models.SeededDropout) == (
      'stateful_trainer>SeededDropout')


def test_a_stored_module_importing_old_paths_loads(tmp_path):
  """A module file as older versions stored it: flat modules of
  ``components.stateful``, the pools from ``layers`` and the explicit-state
  runner from ``state``."""
  path = tmp_path / 'module.py'
  path.write_text(textwrap.dedent('''
      from components.stateful import conv_adapt
      from components.stateful import layers as sl
      from components.stateful import pools
      from components.stateful import recurrent_models
      from components.stateful import shards
      from components.stateful import state
      from components.stateful.default_model import build_model
      from components.stateful.layers import RunningPool
      from components.stateful.scans import last_reset
      RUN = state.run_with_states
      ZERO = state.zero_all
      CONV = sl.CausalConv1D
      SCALE = sl.Standardize
  '''))
  module = model_io.load_module_file(str(path))
  # pylint: disable=g-import-not-at-top
  from components.stateful.distribution import shards
  from components.stateful.layers import convolution, elementwise, pools, scans
  from components.stateful.models import conv_adapt, default_model
  from components.stateful.state import explicit, protocol
  # pylint: enable=g-import-not-at-top
  assert module.RunningPool is pools.RunningPool
  assert module.pools is pools
  assert module.conv_adapt is conv_adapt
  assert module.shards is shards
  assert module.build_model is default_model.build_model
  assert module.last_reset is scans.last_reset
  assert module.RUN is explicit.run_with_states
  assert module.ZERO is protocol.zero_all
  assert module.CONV is convolution.CausalConv1D
  assert module.SCALE is elementwise.Standardize
