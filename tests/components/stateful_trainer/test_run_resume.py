"""One run (``run.run``): checkpoints keyed by the fingerprint of the run's
inputs; resumed by a run with the same inputs, fresh otherwise (with the
reason logged); never resumed once exported; bad modules and transform
graphs fail before any training step."""

import logging
import os
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from components.stateful.state import protocol as state
from components.stateful_trainer import fingerprint as fingerprint_lib
from components.stateful_trainer import run as runner
from components.stateful_trainer import settings
from tests.components.stateful_trainer import helpers

B, T, F = 3, 4, 2
NAMES = ['x0', 'x1']


class Crash(RuntimeError):
  pass


@pytest.fixture(scope='module')
def batches_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('batches'))
  splits = {'train': helpers.random_sequences([7, 12, 5, 9, 3, 10], F,
                                              seed=71),
            'eval': helpers.random_sequences([8, 6], F, seed=72)}
  return helpers.write_batches(root, splits, batch_size=B, num_unroll=T,
                               feature_names=NAMES)


def _args(batches_dir, tmp_path, name, **changes):
  train = dict(epochs=2, checkpoint_every_n_steps=2, log_every_n_steps=0,
               validation_fraction=0.0, seed=0)
  train.update(changes.pop('train', {}))
  out = tmp_path / name
  return runner.TrainerArgs(
      batches_uri=batches_dir, model_uri=str(out / 'model'),
      serving_model_dir=str(out / 'model' / 'serving'),
      model_run_dir=str(out / 'run'),
      hyperparameters={'model': 'lstm', 'units': [4], 'learning_rate': 0.01},
      train=settings.TrainConfig(**train), **changes)


def _crash_at(step):
  def after_step(s):
    if s == step:
      raise Crash(s)
  return after_step


def _messages(caplog):
  return [r.getMessage() for r in caplog.records]


def test_same_inputs_resume_a_changed_setting_starts_fresh(
    batches_dir, tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='components.stateful_trainer')
  root = str(tmp_path / 'checkpoints')
  reference = runner.run(_args(batches_dir, tmp_path, 'reference'))
  total = reference.fit.steps

  with pytest.raises(Crash):
    runner.run(_args(batches_dir, tmp_path, 'a1', checkpoint_root=root),
               after_step=_crash_at(5))
  digest = os.listdir(root)
  assert len(digest) == 1 and tf.train.latest_checkpoint(
      os.path.join(root, digest[0])).endswith('-4')

  # One setting changed: a fresh start, with the reason.
  caplog.clear()
  other = runner.run(_args(batches_dir, tmp_path, 'b',
                           checkpoint_root=root, train={'epochs': 3}))
  assert other.fit.resumed_from is None
  assert other.fit.steps == 3 * total // 2
  text = '\n'.join(_messages(caplog))
  assert 'starting fresh: no checkpoints for these inputs' in text
  assert 'changed settings: train.epochs 2 -> 3' in text
  assert other.fingerprint.digest != digest[0]
  # Exported: its checkpoints are gone; the interrupted run's are kept.
  assert os.listdir(root) == digest

  # The same inputs again: resumed, and the same model as without a crash.
  caplog.clear()
  resumed = runner.run(_args(batches_dir, tmp_path, 'a2',
                             checkpoint_root=root))
  assert resumed.fingerprint.digest == digest[0]
  assert resumed.fit.resumed_from.endswith('-4')
  assert any(m.startswith(f'resuming from epoch 1, step 4 of {total} ')
             for m in _messages(caplog)), _messages(caplog)
  assert resumed.fit.steps == total
  assert sum(e.steps for e in resumed.fit.epochs) == total - 4
  for a, b in zip(helpers.weights_of(reference.model),
                  helpers.weights_of(resumed.model)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  assert os.listdir(root) == []  # Removed once exported.


def test_dense_batches_resume_to_the_same_model(tmp_path_factory, tmp_path):
  """Dense batches (sequences start inside segments; per-step resets) crash
  mid-epoch, in the middle of a lane's sequence, and resume exactly."""
  root = str(tmp_path_factory.mktemp('dense_batches'))
  splits = {'train': helpers.random_sequences([7, 12, 5, 9, 3, 10, 6], F,
                                              seed=73)}
  dense = helpers.write_batches(root, splits, batch_size=B, num_unroll=T,
                                feature_names=NAMES, mode='dense')
  ckpt = str(tmp_path / 'checkpoints')
  reference = runner.run(_args(dense, tmp_path, 'reference', eval_split=None))
  with pytest.raises(Crash):
    runner.run(_args(dense, tmp_path, 'crashed', eval_split=None,
                     checkpoint_root=ckpt), after_step=_crash_at(3))
  resumed = runner.run(_args(dense, tmp_path, 'resumed', eval_split=None,
                             checkpoint_root=ckpt))
  assert resumed.fit.resumed_from.endswith('-2')
  assert resumed.fit.steps == reference.fit.steps
  for a, b in zip(helpers.weights_of(reference.model),
                  helpers.weights_of(resumed.model)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_finished_run_is_never_resumed_and_other_inputs_are_refused(
    batches_dir, tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='components.stateful_trainer')
  ckpt = str(tmp_path / 'mine')
  first = runner.run(_args(batches_dir, tmp_path, 'first',
                           checkpoint_dir=ckpt))
  # Exported: the checkpoints are removed, the run is marked as finished.
  assert tf.train.latest_checkpoint(ckpt) is None
  stamp = fingerprint_lib.read(os.path.join(ckpt, runner.RUN_FILE))
  assert stamp['status'] == runner.EXPORTED
  # The same inputs again train a new model from the first step.
  caplog.clear()
  again = runner.run(_args(batches_dir, tmp_path, 'again',
                           checkpoint_dir=ckpt))
  assert again.fit.resumed_from is None and again.fit.steps == first.fit.steps
  assert any('finished and exported its model' in m
             for m in _messages(caplog))

  # A user's checkpoint_dir with another run's checkpoints: refused before
  # any training; fresh discards them.
  with pytest.raises(Crash):
    runner.run(_args(batches_dir, tmp_path, 'c1', checkpoint_dir=ckpt),
               after_step=_crash_at(3))
  steps = []
  with pytest.raises(fingerprint_lib.CheckpointMismatchError,
                     match='changed settings: train.seed 0 -> 1'):
    runner.run(_args(batches_dir, tmp_path, 'c2', checkpoint_dir=ckpt,
                     train={'seed': 1}), after_step=steps.append)
  assert steps == []
  caplog.clear()
  fresh = runner.run(_args(batches_dir, tmp_path, 'c3', checkpoint_dir=ckpt,
                           train={'seed': 1}, fresh=True))
  assert fresh.fit.resumed_from is None
  assert fresh.fit.steps == first.fit.steps
  assert any(m.startswith('starting fresh (fresh is set): removed')
             for m in _messages(caplog))


ODD_TWIN = textwrap.dedent('''
    import tf_keras as keras

    def build_model(spec):
      units = 3 if spec.stateful else 4  # The twin differs: an error.
      inputs = keras.Input(shape=(spec.num_unroll, spec.num_features),
                           batch_size=spec.batch_size)
      x = keras.layers.GRU(units, return_sequences=True,
                           stateful=spec.stateful)(inputs)
      return keras.Model(inputs, keras.layers.Dense(spec.output_units)(x))
''')


def test_a_serving_twin_with_other_weights_fails_before_training(
    batches_dir, tmp_path):
  path = tmp_path / 'odd_twin.py'
  path.write_text(ODD_TWIN)
  steps = []
  with pytest.raises(state.StatefulModelError, match='same weights'):
    runner.run(_args(batches_dir, tmp_path, 'odd', module_file=str(path)),
               after_step=steps.append)
  assert steps == []


def _transform_graph_metadata(path, names):
  """A transform graph's raw and transformed schemas (all the feature check
  reads) for float features ``names``."""
  from tensorflow_transform.tf_metadata import dataset_metadata  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import metadata_io  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import schema_utils  # pylint: disable=g-import-not-at-top
  spec = {n: tf.io.FixedLenFeature([1], tf.float32) for n in names}
  meta = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(spec))
  for sub in ('metadata', 'transformed_metadata'):
    metadata_io.write_metadata(meta, os.path.join(path, sub))
  return path


def test_transform_graph_without_the_features_fails_before_training(
    batches_dir, tmp_path):
  graph = _transform_graph_metadata(str(tmp_path / 'tg'), ['x0', 'speed'])
  steps = []
  with pytest.raises(ValueError, match=r"no raw feature \['x1'\]"):
    runner.run(_args(batches_dir, tmp_path, 'tg_run',
                     transform_graph_uri=graph), after_step=steps.append)
  assert steps == []
