"""Resume: a run that crashes after a mid-epoch checkpoint and is restarted
ends exactly where an uninterrupted run ends."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components.stateful import model_io
from components.stateful.state import protocol as state
from components.stateful_trainer import fingerprint as fingerprint_lib
from components.stateful_trainer import settings
from components.stateful_trainer import optimizers
from components.stateful_trainer import training
from components.stateful import batches as batches_lib
from components.stateful import objective as objective_lib
from tests.components.stateful_trainer import helpers

B, T, F = 3, 4, 2


class Crash(RuntimeError):
  pass


def _setup(tmp_path):
  splits = {
      'train': helpers.random_sequences(
          [7, 12, 5, 9, 16, 3, 11, 6, 14, 2], F, seed=21),
      'eval': helpers.random_sequences([8, 6, 11], F, seed=22),
  }
  root = helpers.write_batches(str(tmp_path / 'batches'), splits,
                               batch_size=B, num_unroll=T)
  return (batches_lib.BatchSource.open(root, 'train'),
          batches_lib.BatchSource.open(root, 'eval'))


# The recurrent default model with dropout between stacked layers (its draw
# counter must resume too), and the conv default model (causal convolutions
# and running pools as state) with a validation carve (the best weights
# must resume too; the initial weights are no candidate, so both epochs run).
MODELS = {
    'lstm': dict(units=[6, 5], dropout=0.3, learning_rate=0.01),
    'conv': dict(model='conv', kernels_per_dilation=4, max_dilation=4,
                 learning_rate=0.01),
}


def _run(train, evals, *, checkpoint_dir=None, crash_at=None, seed=0,
         kind='lstm'):
  """A fresh process-like run: new model, optimizer and step functions."""
  spec = helpers.classification_spec(B, T, ['a', 'b'], seed=seed,
                                     **MODELS[kind])
  keras.utils.set_random_seed(seed)
  module = model_io.resolve_module()
  model = model_io.build_stateful(module, spec)
  module.adapt(model, spec, train.dataset(keys=None).as_numpy_iterator())
  objective = objective_lib.make_objective(spec, module)
  optimizer = optimizers.make_optimizer(
      settings.OptimizerConfig.from_hyperparameters(spec.hyperparameters))

  def after_step(step):
    if crash_at is not None and step == crash_at:
      raise Crash(step)

  config = settings.TrainConfig(
      epochs=2, eval_every_n_steps=3, checkpoint_every_n_steps=4,
      log_every_n_steps=0, seed=seed, early_stopping_patience=0,
      eval_each_epoch=True,
      validation_fraction=0.5 if kind == 'conv' else 0.0,
      # The adapted weights are no candidate here: an epoch that does not
      # beat them would end training (no_gain) before the crash in epoch 2.
      score_initial=False)
  result = training.fit(model, optimizer=optimizer, objective=objective,
                        train=train, eval_source=evals, config=config,
                        checkpoint_dir=checkpoint_dir, after_step=after_step)
  return model, optimizer, result


@pytest.mark.parametrize('kind', sorted(MODELS))
def test_resume_mid_epoch_gives_the_same_weights(tmp_path, kind):
  train, evals = _setup(tmp_path)
  n = train.num_batches
  assert n >= 6
  # Checkpoints every 4 steps and at epoch ends. Crash in epoch 2, two
  # steps after a mid-epoch checkpoint: those two steps are redone.
  last_ckpt = (n // 4 + 1) * 4
  crash_at = last_ckpt + 2
  assert n < last_ckpt < crash_at < 2 * n and last_ckpt % n != 0

  reference, ref_opt, ref_result = _run(train, evals, kind=kind)

  ckpt_dir = str(tmp_path / 'ckpt')
  with pytest.raises(Crash):
    _run(train, evals, checkpoint_dir=ckpt_dir, crash_at=crash_at, kind=kind)
  assert tf.train.latest_checkpoint(ckpt_dir).endswith(f'-{last_ckpt}')

  resumed, res_opt, res_result = _run(train, evals, checkpoint_dir=ckpt_dir,
                                      kind=kind)
  assert res_result.resumed_from.endswith(f'-{last_ckpt}')
  assert res_result.finished and res_result.steps == 2 * n
  # Only the rest of epoch 2 ran after the restart.
  assert [e.epoch for e in res_result.epochs] == [1]
  assert res_result.epochs[0].steps == 2 * n - last_ckpt

  ref_w, res_w = helpers.weights_of(reference), helpers.weights_of(resumed)
  assert len(ref_w) == len(res_w)
  for a, b in zip(ref_w, res_w):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  for a, b in zip(ref_opt.variables, res_opt.variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)
  # Epoch metrics accumulate across the restart as if there was none.
  for a, b in zip(ref_result.epochs[1:], res_result.epochs):
    assert a.train == pytest.approx(b.train, abs=1e-6)
    assert a.eval == pytest.approx(b.eval, abs=1e-6)
    assert a.valid == pytest.approx(b.valid, abs=1e-6)


def test_checkpoint_holds_rnn_state_and_data_position(tmp_path):
  train, evals = _setup(tmp_path)
  n = train.num_batches
  ckpt_dir = str(tmp_path / 'ckpt')
  captured = {}

  def run_and_capture():
    spec = helpers.classification_spec(B, T, ['a', 'b'], units=[4])
    keras.utils.set_random_seed(0)
    model = model_io.build_stateful(model_io.resolve_module(), spec)
    objective = objective_lib.make_objective(spec)
    optimizer = optimizers.make_optimizer(settings.OptimizerConfig())

    def after_step(step):
      if step == n + 2:
        captured['states'] = helpers.state_values(model)
        return True  # Stop here (the final checkpoint is written).
      return False

    training.fit(model, optimizer=optimizer, objective=objective,
                 train=train, config=settings.TrainConfig(
                     epochs=2, log_every_n_steps=0, validation_fraction=0.0),
                 checkpoint_dir=ckpt_dir, after_step=after_step)
    return model

  model = run_and_capture()
  path = tf.train.latest_checkpoint(ckpt_dir)
  reader = tf.train.load_checkpoint(path)
  names = [name for name, _ in tf.train.list_variables(path)]
  assert reader.get_tensor('cursor/epoch/.ATTRIBUTES/VARIABLE_VALUE') == 1
  assert reader.get_tensor('cursor/batch/.ATTRIBUTES/VARIABLE_VALUE') == 2
  assert reader.get_tensor('cursor/step/.ATTRIBUTES/VARIABLE_VALUE') == n + 2
  rnn = sorted(name for name in names if name.startswith('rnn_states/'))
  assert len(rnn) == len(state.state_variables(model)) == 2  # LSTM h, c.
  saved = [reader.get_tensor(name) for name in
           (f'rnn_states/{i}/.ATTRIBUTES/VARIABLE_VALUE' for i in range(2))]
  for got, want in zip(saved, captured['states']):
    np.testing.assert_array_equal(got, want)
  assert any(np.abs(s).sum() > 0 for s in saved)  # Mid-sequence state.
  assert any(name.startswith('optimizer/') for name in names)
  assert any(name.startswith('model/') for name in names)


# --------------------------------------------------------------------------
# Checkpoints belong to one run (fingerprint), max_steps, short files.
# --------------------------------------------------------------------------


def _small_fit(train, config, checkpoint_dir, *, fingerprint=None,
               after_step=None, clock=None):
  spec = helpers.classification_spec(B, T, ['a', 'b'], units=[4])
  keras.utils.set_random_seed(0)
  model = model_io.build_stateful(model_io.resolve_module(), spec)
  objective = objective_lib.make_objective(spec)
  optimizer = optimizers.make_optimizer(settings.OptimizerConfig())
  kwargs = {'clock': clock} if clock is not None else {}
  if fingerprint is not None:
    kwargs['fingerprint'] = fingerprint
  return training.fit(model, optimizer=optimizer, objective=objective,
                      train=train, config=config,
                      checkpoint_dir=checkpoint_dir, after_step=after_step,
                      **kwargs)


def _crash_at(step):
  def after_step(s):
    if s == step:
      raise Crash(s)
  return after_step


def test_checkpoints_of_another_run_are_refused(tmp_path):
  train, _ = _setup(tmp_path)
  ckpt_dir = str(tmp_path / 'ckpt')
  config = settings.TrainConfig(epochs=2, checkpoint_every_n_steps=2,
                                log_every_n_steps=0, validation_fraction=0.0)
  with pytest.raises(Crash):
    _small_fit(train, config, ckpt_dir, fingerprint='run-a',
               after_step=_crash_at(3))
  assert tf.train.latest_checkpoint(ckpt_dir).endswith('-2')
  # Another setting, or another run's fingerprint: refused, not restored.
  with pytest.raises(fingerprint_lib.CheckpointMismatchError,
                     match=r'settings: epochs 2 -> 3'):
    _small_fit(train, config.replace(epochs=3), ckpt_dir,
               fingerprint='run-a')
  with pytest.raises(fingerprint_lib.CheckpointMismatchError,
                     match='changed run'):
    _small_fit(train, config, ckpt_dir, fingerprint='run-b')
  # The same run resumes.
  result = _small_fit(train, config, ckpt_dir, fingerprint='run-a')
  assert result.resumed_from.endswith('-2')
  assert result.steps == 2 * train.num_batches


def test_max_steps_is_not_exceeded_when_resumed(tmp_path):
  train, _ = _setup(tmp_path)
  ckpt_dir = str(tmp_path / 'ckpt')
  config = settings.TrainConfig(epochs=3, max_steps=5, log_every_n_steps=0,
                                validation_fraction=0.0)
  first = _small_fit(train, config, ckpt_dir)
  assert first.steps == 5 and not first.finished
  steps = []
  again = _small_fit(train, config, ckpt_dir, after_step=steps.append)
  assert again.resumed_from is not None
  assert again.steps == 5 and steps == []  # No step past max_steps.


def test_fewer_batches_than_the_metadata_says_is_an_error(tmp_path):
  from components.sequence_batcher import reader  # pylint: disable=g-import-not-at-top
  train, _ = _setup(tmp_path)
  sdir, meta = reader.load_metadata(train.path, 'train')
  path = f'{sdir}/{meta["files"][-1]}'
  records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
  assert len(records) >= 3
  with tf.io.TFRecordWriter(path) as w:
    for r in records[:-2]:  # The last two batches are lost.
      w.write(r)
  calls = []

  def clock():  # Turns an endless loop into a failure.
    calls.append(1)
    if len(calls) > 2000:
      raise RuntimeError('fit does not end')
    return float(len(calls))

  with pytest.raises(batches_lib.BatchError) as e:
    _small_fit(train, settings.TrainConfig(
        epochs=1, log_every_n_steps=0, validation_fraction=0.0),
               str(tmp_path / 'ckpt'), clock=clock)
  text = str(e.value)
  assert path in text and 'metadata.json' in text
  assert f'says {train.num_batches} batches' in text
  assert f'hold {train.num_batches - 2}' in text
