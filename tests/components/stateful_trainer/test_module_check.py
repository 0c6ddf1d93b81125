"""The up-front module check, hyperparameter keys, and the optimizer's
defaults (declared once, in effect as before)."""

import dataclasses
import logging
import textwrap

import pytest

from components.stateful.models import default_model
from components.stateful.models import hyperparameters as hp_lib
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful import module_contract
from components.stateful import objective
from components.stateful_trainer import module_check
from components.stateful_trainer import settings

GRU = textwrap.dedent('''
    import tf_keras as keras


    def build_model(spec):
      inputs = keras.Input(shape=(spec.num_unroll, spec.num_features),
                           batch_size=spec.batch_size)
      x = keras.layers.GRU(spec.hyperparameters.get('units', 3),
                           return_sequences=True,
                           stateful=spec.stateful)(inputs)
      return keras.Model(inputs, keras.layers.Dense(spec.output_units)(x))
''')


def _spec(**hyperparameters):
  return ms.ModelSpec(batch_size=2, num_unroll=4, stateful=True,
                      feature_names=('a', 'b'), num_classes=3,
                      hyperparameters=hyperparameters)


def _write(tmp_path, source, name='user_model.py'):
  path = tmp_path / name
  path.write_text(source)
  return str(path)


def _config(module, spec):
  return settings.OptimizerConfig.from_hyperparameters(
      settings.optimizer_hyperparameters(module, spec))


# The optimizer's defaults -------------------------------------------------


def test_the_optimizer_defaults_in_effect_are_unchanged(tmp_path):
  default = model_io.resolve_module()
  # The default (conv, ridge head) model: its hook's SGD at 1e-3.
  conv = _config(default, _spec())
  assert (conv.optimizer, conv.learning_rate) == ('sgd', 1e-3)
  assert default_model.FINE_TUNE_LEARNING_RATE == 1e-3
  # Every other form of the default model, and a module without the hook:
  # the trainer's defaults, Adam at 3e-3.
  plain = model_io.resolve_module(_write(tmp_path, GRU))
  for module, spec in ((default, _spec(model='lstm')),
                       (default, _spec(model='lru')),
                       (default, _spec(head='sgd')),
                       (plain, _spec())):
    config = _config(module, spec)
    assert (config.optimizer, config.learning_rate) == ('adam', 3e-3)
  for config in (conv, _config(plain, _spec())):
    assert config.lr_schedule == 'cosine'
    assert config.warmup_fraction == 0.05
    assert config.clip_global_norm == 1.0
    assert config.momentum == 0.0 and config.weight_decay == 0.0
  # The run's hyperparameters over the hook.
  assert _config(default, _spec(learning_rate=0.01)).learning_rate == 0.01
  assert _config(default, _spec(optimizer='adam')).optimizer == 'adam'


def test_each_optimizer_default_is_declared_once():
  fields = {f.name: f.default
            for f in dataclasses.fields(settings.OptimizerConfig)}
  assert settings.OPTIMIZER_DEFAULTS == fields
  assert settings.OptimizerConfig() == (
      settings.OptimizerConfig.from_hyperparameters({}))
  assert settings.OptimizerConfig().learning_rate == 3e-3
  # The objective clips with the same default.
  assert objective.DEFAULT_CLIP_GLOBAL_NORM == fields['clip_global_norm']
  # --help shows them.
  table = {n: d for n, d, _ in hp_lib.DEFAULT_MODEL}
  assert str(fields['learning_rate']) in table['learning_rate']
  assert table['lr_schedule'] == fields['lr_schedule']


# Hyperparameter keys ------------------------------------------------------


def test_an_unknown_hyperparameter_key_is_refused():
  with pytest.raises(model_io.ModuleError) as e:
    module_check.check_module(None, {'model': 'lstm', 'unit': 64}, 2,
                              ms.CLASSIFICATION, 3)
  message = str(e.value)
  assert '\n' not in message and 'default_model.py' in message
  assert "'unit'" in message and "closest known key: 'units'" in message


def test_model_foo_is_refused_up_front():
  with pytest.raises(model_io.ModuleError,
                     match=r"model must be one of .*got 'foo'") as e:
    module_check.check_module(None, {'model': 'foo'}, 2, ms.CLASSIFICATION, 3)
  assert 'default_model.py' in str(e.value)
  with pytest.raises(model_io.ModuleError, match='head must be one of'):
    module_check.check_module(None, {'head': 'lasso'}, 2, ms.CLASSIFICATION,
                              3)


def test_every_key_the_default_module_lists_is_known():
  hooks = module_contract.hooks_of(model_io.resolve_module())
  keys = {n for n, _, _ in hp_lib.DEFAULT_MODEL}
  keys |= set(module_check.TRAINER_KEYS) | {'rnn_type', 'step_features'}
  values = {k: 1 for k in keys - {'model', 'rnn_type', 'head'}}
  known = module_check.check_hyperparameters(
      hooks, _spec(model='conv', rnn_type='lstm', head='ridge', **values))
  assert keys <= known


def test_a_module_declaring_its_keys_refuses_others(tmp_path):
  path = _write(tmp_path, GRU + textwrap.dedent('''

      def hyperparameter_keys(spec):
        return ('units',)
  '''))
  module_check.check_module(path, {'units': 4, 'learning_rate': 0.01}, 2,
                            ms.REGRESSION)
  with pytest.raises(model_io.ModuleError,
                     match=r"'width' .*closest known key"):
    module_check.check_module(path, {'width': 4}, 2, ms.REGRESSION)


def test_a_module_without_declared_keys_warns_of_unread_ones(tmp_path,
                                                             caplog):
  path = _write(tmp_path, GRU)
  with caplog.at_level(logging.WARNING):
    module_check.check_module(path, {'units': 4, 'unit': 5, 'momentum': 0.9},
                              2, ms.CLASSIFICATION, 3)
  warned = [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and 'did not read' in
            r.getMessage()]
  assert len(warned) == 1 and "['unit']" in warned[0]


# check_module -----------------------------------------------------------


def test_the_default_and_a_good_module_pass():
  hooks = module_check.check_module(None, {}, 2, ms.CLASSIFICATION, 3)
  assert hooks.adapt is not None
  module_check.check_module(None, {'model': 'lstm', 'units': [4]}, 3,
                            ms.REGRESSION, label_kind=ms.PER_STEP)


_BUILD = '''
import tf_keras as keras

def build_model(spec):
'''


@pytest.mark.parametrize('source, expected', [
    (_BUILD + '  raise RuntimeError("no\\nway")\n',
     r'build_model\(spec\) raised RuntimeError: no way'),
    (_BUILD + '  return None\n', 'returned None'),
    (_BUILD + '  return {"not": "a model"}\n', 'got builtins.dict'),
    (_BUILD + '  import sys\n  sys.exit(3)\n',
     r'raised SystemExit: it called sys.exit\(3\)'),
    ('import sys\nsys.exit("bye")\n' + _BUILD + '  return None\n',
     r"does not import: SystemExit: it called sys.exit\('bye'\)"),
    ('raise ValueError("broken")\n', 'does not import: ValueError: broken'),
    (_BUILD + '  return None\n\ndef default_epoch(spec):\n  return 1\n',
     "'default_epoch'.*'default_epochs'"),
])
def test_module_errors_are_one_line_and_name_the_file(tmp_path, source,
                                                      expected):
  path = _write(tmp_path, source)
  with pytest.raises(model_io.ModuleError, match=expected) as e:
    module_check.check_module(path, {}, 2, ms.CLASSIFICATION, 3)
  assert '\n' not in str(e.value) and path in str(e.value)


def test_a_keras_3_model_is_refused(tmp_path):
  import keras as keras3  # pylint: disable=g-import-not-at-top
  if keras3.__version__.startswith('2.'):
    pytest.skip('keras is Keras 2 here')
  path = _write(tmp_path, textwrap.dedent('''
      import keras


      def build_model(spec):
        inputs = keras.Input((spec.num_unroll, spec.num_features),
                             batch_size=spec.batch_size)
        return keras.Model(inputs, keras.layers.Dense(spec.output_units)(
            inputs))
  '''))
  with pytest.raises(model_io.ModuleError, match='Keras 3') as e:
    module_check.check_module(path, {}, 2, ms.CLASSIFICATION, 3)
  assert '\n' not in str(e.value) and path in str(e.value)
