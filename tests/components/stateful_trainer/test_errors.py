"""Clear errors for models, labels, specs and settings that cannot work."""

import os
import textwrap

import numpy as np
import pytest
import tf_keras as keras

from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful_trainer import run as trainer_run
from components.stateful.state import protocol as state
from components.stateful_trainer import settings
from components.stateful import batches as batches_lib
from tests.components.stateful_trainer import helpers

B, T, F, K = 4, 5, 3, 2


def _check(model, batch_size=B):
  return state.check_stateful_model(model, batch_size=batch_size,
                                    num_unroll=T, num_features=F,
                                    output_units=K)


def _functional(*layers, batch_size=B, steps=T, features=F):
  inputs = keras.Input(shape=(steps, features), batch_size=batch_size)
  x = inputs
  for layer in layers:
    x = layer(x)
  return keras.Model(inputs, x)


def test_a_valid_model_passes():
  model = _functional(keras.layers.LSTM(3, return_sequences=True,
                                        stateful=True),
                      keras.layers.Dense(K))
  assert [l.name for l in _check(model)] == [model.layers[1].name]


def test_no_recurrent_layer():
  with pytest.raises(state.StatefulModelError, match='no recurrent layer'):
    _check(_functional(keras.layers.Dense(K)))


def test_no_stateful_recurrent_layer():
  with pytest.raises(state.StatefulModelError,
                     match='no stateful recurrent layer'):
    _check(_functional(keras.layers.GRU(3, return_sequences=True),
                       keras.layers.Dense(K)))


def test_one_stacked_layer_not_stateful():
  with pytest.raises(state.StatefulModelError, match='not stateful'):
    _check(_functional(
        keras.layers.LSTM(3, return_sequences=True, stateful=True),
        keras.layers.LSTM(3, return_sequences=True, name='forgetful'),
        keras.layers.Dense(K)))


def test_bidirectional_is_rejected():
  with pytest.raises(state.StatefulModelError, match='Bidirectional'):
    _check(_functional(
        keras.layers.Bidirectional(keras.layers.LSTM(
            3, return_sequences=True, stateful=True)),
        keras.layers.Dense(K)))


def test_backwards_recurrent_layer_is_rejected():
  with pytest.raises(state.StatefulModelError, match='go_backwards'):
    _check(_functional(
        keras.layers.SimpleRNN(3, return_sequences=True, stateful=True,
                               go_backwards=True),
        keras.layers.Dense(K)))


def test_nested_model_layers_are_found():
  inner = keras.Sequential([
      keras.layers.GRU(3, return_sequences=True, stateful=True,
                       go_backwards=True)])
  with pytest.raises(state.StatefulModelError, match='go_backwards'):
    _check(_functional(inner, keras.layers.Dense(K)))


def test_batch_size_mismatch():
  model = _functional(keras.layers.LSTM(3, return_sequences=True,
                                        stateful=True),
                      keras.layers.Dense(K), batch_size=8)
  with pytest.raises(state.StatefulModelError, match='batch size 8'):
    _check(model)


def test_input_shape_mismatches():
  rnn = lambda: keras.layers.LSTM(3, return_sequences=True, stateful=True)
  with pytest.raises(state.StatefulModelError, match='4 features'):
    _check(_functional(rnn(), keras.layers.Dense(K), features=4))
  with pytest.raises(state.StatefulModelError, match='7 time steps'):
    _check(_functional(rnn(), keras.layers.Dense(K), steps=7))


def test_output_not_per_step_or_wrong_size():
  with pytest.raises(state.StatefulModelError, match='per step'):
    _check(_functional(keras.layers.LSTM(3, stateful=True),
                       keras.layers.Dense(K)))
  with pytest.raises(state.StatefulModelError, match='does not match'):
    _check(_functional(keras.layers.LSTM(3, return_sequences=True,
                                         stateful=True),
                       keras.layers.Dense(K + 1)))


def test_keras_3_model_is_rejected():
  import keras as keras3  # pylint: disable=g-import-not-at-top
  if keras3.__version__.startswith('2.'):
    pytest.skip('keras is Keras 2 here')
  model = keras3.Sequential([keras3.Input((T, F), batch_size=B),
                             keras3.layers.LSTM(3, stateful=True,
                                                return_sequences=True)])
  with pytest.raises(state.StatefulModelError, match='Keras 3'):
    _check(model)


def test_serving_twin_must_match_the_stateful_model(tmp_path):
  path = tmp_path / 'odd_module.py'
  path.write_text(textwrap.dedent('''
      import tf_keras as keras

      def build_model(spec):
        units = 3 if spec.stateful else 4  # A different twin: an error.
        inputs = keras.Input(shape=(spec.num_unroll, spec.num_features),
                             batch_size=spec.batch_size)
        x = keras.layers.GRU(units, return_sequences=True,
                             stateful=spec.stateful)(inputs)
        return keras.Model(inputs, keras.layers.Dense(spec.output_units)(x))
  '''))
  module = model_io.load_module_file(str(path))
  spec = helpers.classification_spec(B, T, ['a', 'b', 'c'])
  model = model_io.build_stateful(module, spec)
  with pytest.raises(state.StatefulModelError, match='same weights'):
    model_io.build_serving(module, spec, weights_from=model)


def test_module_without_build_model(tmp_path):
  path = tmp_path / 'empty_module.py'
  path.write_text('X = 1\n')
  with pytest.raises(model_io.ModuleError, match='build_model'):
    model_io.resolve_module(str(path))
  with pytest.raises(model_io.ModuleError, match='does not exist'):
    model_io.resolve_module(str(tmp_path / 'missing.py'))


@pytest.mark.parametrize('kwargs, match', [
    (dict(task='classification', num_classes=1), 'num_classes >= 2'),
    (dict(task='regression', output_size=0), 'output_size >= 1'),
    (dict(task='ranking', num_classes=2), 'task must be'),
    (dict(label_kind='per_lane', num_classes=2), 'label_kind'),
    (dict(num_classes=2, batch_size=None), 'needs a batch_size'),
    (dict(num_classes=2, feature_names=()), 'feature_names is empty'),
    (dict(num_classes=2, feature_names=('a', 'a')), 'duplicates'),
    (dict(num_classes=2, hyperparameters={'f': object()}), 'JSON'),
])
def test_model_spec_validation(kwargs, match):
  base = dict(batch_size=B, num_unroll=T, stateful=True,
              feature_names=('a', 'b'), task='classification')
  base.update(kwargs)
  with pytest.raises(ms.ModelSpecError, match=match):
    ms.ModelSpec(**base)


def test_model_spec_json_round_trip():
  spec = ms.ModelSpec(batch_size=B, num_unroll=T, stateful=True,
                      feature_names=['a', 'b'], label_kind='per_step',
                      task='regression', output_size=1,
                      hyperparameters={'units': [4, 3]}, seed=5)
  again = ms.ModelSpec.from_json(spec.to_json())
  assert again == spec and again.num_features == 2
  twin = spec.serving()
  assert (twin.stateful, twin.batch_size, twin.num_unroll) == (False, None,
                                                               None)


def _batches(tmp_path, **kwargs):
  kwargs.setdefault('num_classes', 2)
  seqs = helpers.random_sequences([6, 8, 3], F, seed=51, **kwargs)
  return helpers.write_batches(str(tmp_path / 'b'), {'train': seqs},
                               batch_size=B, num_unroll=T)


def _args(tmp_path, root, **kwargs):
  return trainer_run.TrainerArgs(
      batches_uri=root, model_uri=str(tmp_path / 'm'),
      serving_model_dir=str(tmp_path / 'm' / 'Format-Serving'),
      model_run_dir=str(tmp_path / 'r'), eval_split=None, **kwargs)


def test_float_labels_for_classification(tmp_path):
  root = _batches(tmp_path, float_labels=True)
  with pytest.raises(batches_lib.LabelError, match='integer class labels'):
    trainer_run.run(_args(tmp_path, root, task='classification'))


def test_class_labels_out_of_range(tmp_path):
  root = _batches(tmp_path, num_classes=5, per_step_labels=True)
  with pytest.raises(batches_lib.LabelError, match=r'in \[0, 3\)'):
    trainer_run.run(_args(tmp_path, root, num_classes=3))


def test_regression_output_size_must_fit_scalar_labels(tmp_path):
  root = _batches(tmp_path, float_labels=True)
  with pytest.raises(batches_lib.LabelError, match='output_size=1'):
    trainer_run.run(_args(tmp_path, root, output_size=3))


def test_missing_eval_split(tmp_path):
  root = _batches(tmp_path)
  args = _args(tmp_path, root)
  args = trainer_run.TrainerArgs(**{**args.__dict__, 'eval_split': 'eval'})
  with pytest.raises(ValueError, match="no split 'eval'"):
    trainer_run.run(args)


def test_num_classes_inferred_from_labels(tmp_path):
  seqs = helpers.random_sequences([6, 8, 3, 9], F, seed=52, num_classes=4,
                                  per_step_labels=True)
  stats_root = helpers.write_batches(str(tmp_path / 'b'), {'train': seqs},
                                     batch_size=B, num_unroll=T)
  source = batches_lib.BatchSource.open(stats_root, 'train')
  stats = batches_lib.label_statistics(source)
  last = [int(s.labels[-1]) for s in seqs]  # per_sequence: last step only.
  assert stats['count'] == len(seqs)
  assert stats['max'] == max(last) and stats['min'] == min(last)
  assert batches_lib.infer_num_classes(stats) == max(2, max(last) + 1)


@pytest.mark.parametrize('kwargs', [dict(epochs=-1), dict(max_steps=0),
                                    dict(eval_every_n_steps=-1),
                                    dict(seed=True)])
def test_train_config_validation(kwargs):
  with pytest.raises(settings.TrainingConfigError):
    settings.TrainConfig(**kwargs)
