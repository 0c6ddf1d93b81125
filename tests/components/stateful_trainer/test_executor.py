"""The TFX side: ``Executor.Do`` on tiny artifacts, the component's
arguments, and one run under TFX's LocalDagRunner."""

import json
import os
import textwrap

import pytest
import tensorflow as tf
from tfx import types
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.sequence_batcher.component import SequenceBatches
from components.stateful_trainer import component as trainer_component
from components.stateful_trainer import executor
from components.stateful import model_io
from tests.components.stateful_trainer import helpers

B, T, F = 3, 4, 2
NAMES = ['x0', 'x1']

USER_MODULE = textwrap.dedent('''
    """A user module: one GRU and an extra metric."""
    import tf_keras as keras

    def build_model(spec):
      inputs = keras.Input(shape=(spec.num_unroll, spec.num_features),
                           batch_size=spec.batch_size)
      x = keras.layers.GRU(spec.hyperparameters['units'],
                           return_sequences=True,
                           stateful=spec.stateful)(inputs)
      return keras.Model(inputs, keras.layers.Dense(spec.output_units)(x))

    def metrics(spec):
      return [keras.metrics.SparseTopKCategoricalAccuracy(k=2, name='top2')]
''')


@pytest.fixture(scope='module')
def batches_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('batches'))
  splits = {'train': helpers.random_sequences([7, 12, 5, 9, 3], F, seed=61,
                                              num_classes=3),
            'eval': helpers.random_sequences([8, 6, 10], F, seed=62,
                                             num_classes=3)}
  return helpers.write_batches(root, splits, batch_size=B, num_unroll=T,
                               feature_names=NAMES)


def _artifact(cls, uri, **props):
  artifact = cls()
  artifact.uri = uri
  for key, value in props.items():
    setattr(artifact, key, value)
  return artifact


def test_executor_do_trains_and_exports(batches_dir, tmp_path):
  module_path = tmp_path / 'user_module.py'
  module_path.write_text(USER_MODULE)
  hp_dir = tmp_path / 'hparams'
  hp_dir.mkdir()
  # What the Tuner writes: keras_tuner HyperParameters.get_config().
  (hp_dir / 'best_hyperparameters.txt').write_text(json.dumps(
      {'space': [], 'values': {'units': 6, 'learning_rate': 0.02}}))
  input_dict = {
      'batches': [_artifact(SequenceBatches, batches_dir,
                            split_names='["train", "eval"]')],
      'hyperparameters': [_artifact(standard_artifacts.HyperParameters,
                                    str(hp_dir))],
  }
  model = _artifact(standard_artifacts.Model, str(tmp_path / 'model'))
  model_run = _artifact(standard_artifacts.ModelRun, str(tmp_path / 'run'))
  output_dict = {'model': [model], 'model_run': [model_run]}
  exec_properties = {
      'module_file': str(module_path),
      'custom_config': json.dumps({'hyperparameters': {'units': 3,
                                                       'dropout': 0.0}}),
      'epochs': 2, 'seed': 3, 'train_split': 'train', 'eval_split': None,
      'eval_every_n_steps': 2, 'log_every_n_steps': 1,
      'eval_each_epoch': 1, 'validation_fraction': 0.0,
  }
  executor.Executor().Do(input_dict, output_dict, exec_properties)

  serving = os.path.join(model.uri, 'Format-Serving')
  loaded = tf.saved_model.load(serving)
  assert {'serving_default', 'step'} <= set(loaded.signatures)
  spec = model_io.read_spec(model.uri)
  # The HyperParameters artifact overrides custom_config.
  assert spec.hyperparameters == {'units': 6, 'learning_rate': 0.02,
                                  'dropout': 0.0}
  assert (spec.batch_size, spec.num_unroll, spec.feature_names) == (
      B, T, tuple(NAMES))
  assert spec.num_classes == 3 and spec.seed == 3
  copied = os.path.join(model.uri, 'stateful', 'module.py')
  with open(copied) as f:
    assert f.read() == USER_MODULE
  rebuilt, _ = model_io.load_stateful_model(model.uri, batch_size=5)
  assert rebuilt.layers[1].__class__.__name__ == 'GRU'

  with open(os.path.join(model_run.uri, 'history.json')) as f:
    history = json.load(f)
  assert [e['epoch'] for e in history['epochs']] == [0, 1]
  assert set(history['epochs'][-1]['train']) == {'loss', 'top2'}
  assert history['epochs'][-1]['eval']['top2'] >= 0
  assert len(history['evaluations']) > 2  # Epoch ends and every 2 steps.
  tags = helpers.summary_tags(os.path.join(model_run.uri, 'tensorboard'))
  for tag in ('loss', 'top2', 'steps_per_sec', 'real_timesteps_per_sec'):
    assert tag in tags, sorted(tags)
  assert all(v > 0 for v in tags['real_timesteps_per_sec'])
  # Checkpoints (here in the ModelRun: no checkpoint_dir) are removed once
  # the model is exported; the fingerprint is recorded with the model.
  assert not tf.io.gfile.exists(os.path.join(model_run.uri, 'checkpoints'))
  digest = model.get_string_custom_property(executor.FINGERPRINT_PROPERTY)
  assert len(digest) == 20 and history['fingerprint'] == digest
  with open(os.path.join(model.uri, 'stateful', 'fingerprint.json')) as f:
    assert json.load(f)['digest'] == digest


def test_args_from_artifacts_defaults_and_errors(batches_dir, tmp_path):
  outputs = {
      'model': [_artifact(standard_artifacts.Model, str(tmp_path / 'm'))],
      'model_run': [_artifact(standard_artifacts.ModelRun,
                              str(tmp_path / 'r'))],
  }
  batches = _artifact(SequenceBatches, batches_dir,
                      split_names='["train", "eval"]')
  props = {'epochs': 3, 'seed': 0, 'train_split': 'train'}
  args = executor.args_from_artifacts({'batches': [batches]}, outputs, props)
  assert args.eval_split == 'eval'  # Present, so used by default.
  assert args.serving_model_dir == os.path.join(str(tmp_path / 'm'),
                                                'Format-Serving')
  assert args.train.epochs == 3 and args.module.__name__.endswith(
      'default_model')
  assert args.transform_graph_uri is None
  args = executor.args_from_artifacts({'batches': [batches]}, outputs,
                                      {**props, 'eval_split': ''})
  assert args.eval_split is None
  with pytest.raises(ValueError, match="no split 'test'"):
    executor.args_from_artifacts({'batches': [batches]}, outputs,
                                 {**props, 'eval_split': 'test'})
  with pytest.raises(ValueError, match='not used by the StatefulTrainer'):
    executor.args_from_artifacts(
        {'batches': [batches]}, outputs,
        {**props, 'custom_config': json.dumps({'units': 4})})


def test_component_arguments(monkeypatch):
  monkeypatch.setenv('UNSUPPORTED_DO_NOT_PACKAGE_USER_MODULES', '1')
  channel = types.Channel(type=SequenceBatches)
  trainer = trainer_component.StatefulTrainer(
      batches=channel, module_file='/path/to/module.py', epochs=4,
      custom_config={'hyperparameters': {'units': [8]}}, shuffle_groups=True,
      reset_state_every_batch=False, eval_every_n_steps=10)
  props = trainer.exec_properties
  assert props['epochs'] == 4 and props['shuffle_groups'] == 1
  assert props['reset_state_every_batch'] == 0
  assert json.loads(props['custom_config']) == {
      'hyperparameters': {'units': [8]}}
  assert props['module_file'] == '/path/to/module.py'
  assert trainer.outputs['model'].type is standard_artifacts.Model
  assert trainer.outputs['model_run'].type is standard_artifacts.ModelRun
  for kwargs, match in [
      (dict(custom_config={'units': 3}), 'not used by the StatefulTrainer'),
      (dict(epochs=-1), 'epochs'),  # 0 is valid: adapt's weights.
      (dict(task='ranking'), 'task'),
      (dict(task='regression', num_classes=3), 'num_classes'),
  ]:
    with pytest.raises(ValueError, match=match):
      trainer_component.StatefulTrainer(batches=channel, **kwargs)


def test_runs_in_a_local_tfx_pipeline(batches_dir, tmp_path):
  importer = tfx.dsl.Importer(
      source_uri=batches_dir, artifact_type=SequenceBatches,
      custom_properties={'split_names': '["train", "eval"]'}
  ).with_id('batches')
  trainer = trainer_component.StatefulTrainer(
      batches=importer.outputs['result'], epochs=1,
      custom_config={'hyperparameters': {'units': [4]}})
  pipeline = tfx.dsl.Pipeline(
      pipeline_name='stateful-trainer-test',
      pipeline_root=str(tmp_path / 'root'),
      components=[importer, trainer],
      metadata_connection_config=(
          tfx.orchestration.metadata.sqlite_metadata_connection_config(
              str(tmp_path / 'mlmd.sqlite'))))
  tfx.orchestration.LocalDagRunner().run(pipeline)
  models = tf.io.gfile.glob(str(tmp_path / 'root' / 'StatefulTrainer' /
                                'model' / '*' / 'Format-Serving'))
  assert len(models) == 1
  loaded = tf.saved_model.load(models[0])
  assert 'step' in loaded.signatures
