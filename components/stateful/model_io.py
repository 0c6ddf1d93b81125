"""Model modules, building checked models, and the ``stateful/`` export.

Public and stable (the StatefulEvaluator uses it):

* ``load_stateful_model(model_uri, batch_size, num_unroll=None)`` ->
  ``(model, spec)``: the trained model rebuilt stateful for any batch size,
  weights loaded, all state zero.
* ``read_spec(model_uri)`` -> ``ModelSpec`` as trained.

Layout of a ``Model`` artifact written by the StatefulTrainer::

  <uri>/Format-Serving/            # SavedModel: serving_default, step, ...
  <uri>/stateful/spec.json         # ModelSpec.to_json() of the trained model
  <uri>/stateful/module.py         # copy of the model module (build_model)
  <uri>/stateful/weights/weights.* # model.save_weights (TF checkpoint format)
  <uri>/stateful/manifest.json     # file names, original module path

No TFX import here.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
import tempfile
import types
from typing import Optional, Tuple

import tensorflow as tf
import tf_keras as keras

from components.stateful import compat
from components.stateful.layers import elementwise
from components.stateful import model_spec as ms
from components.stateful import module_contract
from components.stateful.state import protocol as state

DEFAULT_MODULE = 'components.stateful.models.default_model'
STATEFUL_DIR = 'stateful'
SPEC_FILE = 'spec.json'
MODULE_FILE = 'module.py'
WEIGHTS_PREFIX = os.path.join('weights', 'weights')
MANIFEST_FILE = 'manifest.json'


# A model module is missing, does not import, or breaks the contract
# (``module_contract``, where its hooks are declared and read).
ModuleError = module_contract.ModuleError


def load_module_file(path: str) -> types.ModuleType:
  """Imports a Python file as a module (a fresh, uniquely named module).

  A module file is trusted code: importing it runs it. A remote file
  (``gs://...``) is copied into a private temporary directory
  (``tempfile.mkdtemp``, readable by this user only) to be imported, never
  into a shared, predictable path. A file that does not import (a syntax
  error, a failing import, any exception at import) raises ``ModuleError``
  whose one-line message names the file; so does one that calls
  ``sys.exit()`` at import (``SystemExit``), rather than ending the process.
  """
  if not tf.io.gfile.exists(path):
    raise ModuleError(f'module file {path!r} does not exist')
  with tf.io.gfile.GFile(path, 'rb') as f:
    source = f.read()
  digest = hashlib.sha256(source + path.encode()).hexdigest()[:12]
  name = f'_stateful_user_module_{digest}'
  if name in sys.modules:
    return sys.modules[name]
  local = path
  if '://' in path:  # Remote: copy into a private directory to import.
    local = os.path.join(tempfile.mkdtemp(prefix='stateful_module_'),
                         os.path.basename(path.rstrip('/')) or 'module.py')
    with open(local, 'wb') as f:
      f.write(source)
  compat.install()  # Names a stored module copy may import from old paths.
  spec = importlib.util.spec_from_file_location(name, local)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  try:
    spec.loader.exec_module(module)
  except (Exception, SystemExit) as e:  # SyntaxError, ... from user code.
    del sys.modules[name]
    raise ModuleError(f'module file {path!r} does not import: '
                      f'{_one_line(e)}') from e
  return module


_one_line = module_contract.one_line


def resolve_module(module_file: Optional[str] = None,
                   module: Optional[types.ModuleType] = None
                  ) -> types.ModuleType:
  """The model module: given object, a file, or the shipped default;
  checked against the contract (``module_contract.hooks_of(module,
  strict=True)``: ``build_model`` defined, no misspelt hook)."""
  if module is None:
    module = (load_module_file(module_file) if module_file else
              importlib.import_module(DEFAULT_MODULE))
  module_contract.hooks_of(module, strict=True)
  return module


def _build_model(module: types.ModuleType, spec: ms.ModelSpec):
  """``module``'s ``build_model(spec)`` (read through the contract)."""
  build = module_contract.hooks_of(module).build_model
  if build is None:
    raise ModuleError(f'model module {module_contract.where(module)!r} does '
                      'not define build_model(spec)')
  return build(spec)


def module_source_path(module: types.ModuleType) -> str:
  path = inspect.getsourcefile(module)
  if not path:
    raise ModuleError(f'cannot find the source file of module {module!r}')
  return path


LABEL_UNITS = 'label_units'


def _in_label_units(model: keras.Model, spec: ms.ModelSpec) -> keras.Model:
  """``model`` followed by ``LabelUnits`` when the spec standardises its
  regression labels (``spec.label_spread``); else ``model``."""
  if spec.label_spread is None:
    return model
  shape = model.inputs[0].shape
  inputs = keras.Input(shape=shape[1:], batch_size=shape[0],
                       name='features')
  out = elementwise.LabelUnits(spec.label_center, spec.label_spread,
                          name=LABEL_UNITS)(model(inputs))
  return keras.Model(inputs, out, name=f'{model.name}_in_label_units')


def module_model(model: keras.Model) -> keras.Model:
  """The model the module built (inside ``LabelUnits``, if appended): what
  its ``adapt`` hook is given."""
  if len(model.layers) == 3 and model.layers[-1].name == LABEL_UNITS:
    return model.layers[1]
  return model


def build_stateful(module: types.ModuleType,
                   spec: ms.ModelSpec) -> keras.Model:
  """The module's ``build_model(spec)`` checked for stateful training
  (followed by ``LabelUnits`` when ``spec.label_spread`` is set)."""
  if not spec.stateful:
    raise ms.ModelSpecError('build_stateful needs a stateful spec')
  model = _in_label_units(_build_model(module, spec), spec)
  state.check_stateful_model(
      model, batch_size=spec.batch_size, num_unroll=spec.num_unroll,
      num_features=spec.num_features, output_units=spec.output_units)
  return model


def build_serving(module: types.ModuleType, spec: ms.ModelSpec,
                  weights_from: Optional[keras.Model] = None) -> keras.Model:
  """The non-stateful serving twin, optionally with another model's weights."""
  twin = _in_label_units(_build_model(module, spec.serving()), spec)
  state.check_serving_model(twin, num_features=spec.num_features,
                            output_units=spec.output_units)
  if weights_from is not None:
    copy_weights(weights_from, twin)
  return twin


def copy_weights(source: keras.Model, target: keras.Model) -> None:
  """Copies weights by position; a clear error when the models differ."""
  src, dst = source.weights, target.weights
  if len(src) != len(dst) or any(
      a.shape != b.shape for a, b in zip(src, dst)):
    raise state.StatefulModelError(
        'the serving twin (spec.stateful=False) does not have the same '
        f'weights as the stateful model: {len(src)} vs {len(dst)} weights '
        f'({[tuple(w.shape) for w in src]} vs '
        f'{[tuple(w.shape) for w in dst]}). build_model must build the same '
        'architecture whatever spec.stateful is.')
  target.set_weights(source.get_weights())


def save_stateful(model_uri: str, model: keras.Model, spec: ms.ModelSpec,
                  module: types.ModuleType) -> str:
  """Writes ``<model_uri>/stateful/``: spec, module copy and weights.

  Returns:
    The ``stateful`` directory.
  """
  sdir = os.path.join(model_uri, STATEFUL_DIR)
  tf.io.gfile.makedirs(sdir)
  with tf.io.gfile.GFile(os.path.join(sdir, SPEC_FILE), 'w') as f:
    f.write(spec.to_json())
  source = module_source_path(module)
  tf.io.gfile.copy(source, os.path.join(sdir, MODULE_FILE), overwrite=True)
  model.save_weights(os.path.join(sdir, WEIGHTS_PREFIX))
  manifest = {'spec': SPEC_FILE, 'module': MODULE_FILE,
              'weights': WEIGHTS_PREFIX, 'module_source': source,
              'module_name': getattr(module, '__name__', None)}
  with tf.io.gfile.GFile(os.path.join(sdir, MANIFEST_FILE), 'w') as f:
    f.write(json.dumps(manifest, indent=1, sort_keys=True) + '\n')
  return sdir


def read_spec(model_uri: str) -> ms.ModelSpec:
  """The ``ModelSpec`` the model in ``model_uri`` was trained with."""
  path = os.path.join(model_uri, STATEFUL_DIR, SPEC_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f'{path} not found: {model_uri!r} is not a StatefulTrainer model')
  with tf.io.gfile.GFile(path) as f:
    return ms.ModelSpec.from_json(f.read())


def load_stateful_model(model_uri: str, batch_size: int,
                        num_unroll: Optional[int] = None
                       ) -> Tuple[keras.Model, ms.ModelSpec]:
  """Rebuilds a trained model stateful for ``batch_size`` lanes.

  Args:
    model_uri: the ``Model`` artifact URI written by the StatefulTrainer.
    batch_size: B of the batches it will run on (any value >= 1).
    num_unroll: T of those batches; default: the training T (the model's
      input has a fixed T when the module uses ``spec.num_unroll``).

  Returns:
    ``(model, spec)``: the stateful Keras model (weights loaded, every
    state zero; use ``state.reset_lanes``/``state.zero_all`` to drive it)
    and its ``ModelSpec`` (with ``batch_size``/``num_unroll`` replaced).
  """
  spec = read_spec(model_uri)
  spec = spec.replace(batch_size=int(batch_size), stateful=True,
                      num_unroll=(int(num_unroll) if num_unroll else
                                  spec.num_unroll))
  sdir = os.path.join(model_uri, STATEFUL_DIR)
  module = load_module_file(os.path.join(sdir, MODULE_FILE))
  model = build_stateful(module, spec)
  status = model.load_weights(os.path.join(sdir, WEIGHTS_PREFIX))
  status.assert_existing_objects_matched()
  state.zero_all(model)
  return model, spec
