"""The model module contract: the hook table, read in one place, and
misspelt hooks refused."""

import ast
import dataclasses
import glob
import os
import re
import textwrap

import pytest

from components.stateful.models import default_model
from components.stateful import model_io
from components.stateful import module_contract

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

GOOD = textwrap.dedent('''
    import tf_keras as keras

    UNITS = 3


    def units_of(spec):
      return spec.hyperparameters.get('units', UNITS)


    def build_model(spec):
      inputs = keras.Input(shape=(spec.num_unroll, spec.num_features),
                           batch_size=spec.batch_size)
      x = keras.layers.GRU(units_of(spec), return_sequences=True,
                           stateful=spec.stateful)(inputs)
      return keras.Model(inputs, keras.layers.Dense(spec.output_units)(x))
''')


def test_the_table_lists_every_hook_the_hooks_object_holds():
  fields = {f.name for f in dataclasses.fields(module_contract.ModuleHooks)}
  assert set(module_contract.HOOKS) == fields - {'module', 'where'}
  assert set(module_contract.HOOKS) >= {
      'build_model', 'adapt', 'label_scoring', 'default_epochs',
      'scales_labels', 'optimizer_defaults', 'loss', 'metrics',
      'hyperparameter_keys'}
  assert module_contract.REQUIRED == ('build_model',)


def test_no_module_reads_a_hook_outside_the_contract():
  # Every hook is read through hooks_of: no getattr/hasattr of a hook name
  # and no call of module.<hook>.
  hooks = '|'.join(module_contract.HOOKS)
  pattern = re.compile(
      rf"(getattr|hasattr)\(\w*module\w*, '({hooks})'|"
      rf"\bmodule\.({hooks})\(")
  for path in glob.glob(os.path.join(ROOT, 'components', '*', '*.py')):
    if path.endswith('module_contract.py'):
      continue
    with open(path) as f:
      found = pattern.search(f.read())
    assert not found, (path, found and found.group(0))


def test_the_default_module_keeps_the_contract():
  assert module_contract.near_misses(default_model) == []
  hooks = module_contract.hooks_of(model_io.resolve_module(), strict=True)
  for name in module_contract.HOOKS:
    if name not in ('loss', 'metrics'):
      assert getattr(hooks, name) is not None, name


def test_a_module_with_helpers_is_accepted(tmp_path):
  path = tmp_path / 'good_module.py'
  path.write_text(GOOD)
  module = model_io.resolve_module(str(path))
  hooks = module_contract.hooks_of(module)
  assert hooks.build_model is module.build_model
  assert hooks.adapt is None and hooks.loss is None
  assert hooks.where == str(path)


@pytest.mark.parametrize('name, hook', [
    ('default_epoch', 'default_epochs'),
    ('optimiser_defaults', 'optimizer_defaults'),
    ('lable_scoring', 'label_scoring'),
    ('metric', 'metrics'),
    ('scale_labels', 'scales_labels'),
    ('hyperparameter_key', 'hyperparameter_keys'),
])
def test_a_misspelt_hook_is_a_one_line_module_error(tmp_path, name, hook):
  path = tmp_path / 'typo_module.py'
  path.write_text(GOOD + f'\n\ndef {name}(spec):\n  return None\n')
  with pytest.raises(model_io.ModuleError) as e:
    model_io.resolve_module(str(path))
  message = str(e.value)
  assert '\n' not in message
  assert str(path) in message and repr(name) in message
  assert repr(hook) in message


def test_a_misspelt_hook_bound_to_a_value_is_refused_too(tmp_path):
  path = tmp_path / 'typo_module.py'
  path.write_text(GOOD + '\ndefault_epoch = 3\n')
  with pytest.raises(model_io.ModuleError, match="'default_epochs'"):
    model_io.resolve_module(str(path))


def test_imported_names_and_private_helpers_are_not_taken_for_hooks(
    tmp_path):
  path = tmp_path / 'imports_module.py'
  path.write_text(GOOD + textwrap.dedent('''
      from tf_keras import metrics as metric  # An imported module.
      from tf_keras.losses import Loss as loss_base


      def _metric(spec):  # Private.
        return []
  '''))
  model_io.resolve_module(str(path))


def test_a_hook_that_is_not_callable_is_refused(tmp_path):
  path = tmp_path / 'value_module.py'
  path.write_text(GOOD + '\ndefault_epochs = 3\n')
  with pytest.raises(model_io.ModuleError,
                     match='default_epochs must be a function'):
    model_io.resolve_module(str(path))


def test_hooks_of_an_object_or_none():
  class Hooks:
    loss = staticmethod(lambda spec: None)

  hooks = module_contract.hooks_of(Hooks)
  assert hooks.loss is not None and hooks.build_model is None
  assert module_contract.hooks_of(None).loss is None


def _module_sources():
  """Every model module the tests and benchmarks write or ship: files with
  a module-level build_model, and string constants holding one."""
  sources = {}
  for path in sorted(glob.glob(os.path.join(ROOT, 'tests', '**', '*.py'),
                               recursive=True) +
                     glob.glob(os.path.join(ROOT, 'benchmarks', '*.py'))):
    with open(path) as f:
      text = f.read()
    if 'def build_model' not in text:
      continue
    tree = ast.parse(text)
    if any(isinstance(n, ast.FunctionDef) and n.name == 'build_model'
           for n in tree.body):
      sources[os.path.relpath(path, ROOT)] = text
    strings = {}
    for node in ast.walk(tree):
      if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and
              isinstance(node.targets[0], ast.Name)):
        continue
      # String constants: literals, concatenations, textwrap.dedent(...).
      code = compile(ast.Expression(node.value), path, 'eval')
      try:
        value = eval(code, {'__builtins__': {}, 'textwrap': textwrap},  # pylint: disable=eval-used
                     dict(strings))
      except Exception:  # pylint: disable=broad-except
        continue
      if isinstance(value, str):
        strings[node.targets[0].id] = value
        if 'def build_model' in value:
          name = f'{os.path.relpath(path, ROOT)}:{node.targets[0].id}'
          sources[name] = value
  return sources


def test_every_module_of_the_tests_and_benchmarks_keeps_the_contract(
    tmp_path):
  sources = _module_sources()
  assert len(sources) >= 8, sorted(sources)
  for i, (name, source) in enumerate(sorted(sources.items())):
    path = tmp_path / f'module_{i}.py'
    path.write_text(source)
    try:
      module = model_io.load_module_file(str(path))
    except model_io.ModuleError:
      continue  # Needs the repository's test helpers on the path: skip.
    assert module_contract.near_misses(module) == [], name
    module_contract.hooks_of(module, strict=True)
