"""Training semantics: state across steps, phase boundaries, weighting,
clipping, group order and repeatability."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components.sequence_batcher import layout
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful.state import protocol as state
from components.stateful_trainer import settings
from components.stateful_trainer import optimizers
from components.stateful_trainer import training
from components.stateful import batches as batches_lib
from components.stateful import objective as objective_lib
from components.stateful import steps as steps_lib
from tests.components.stateful_trainer import helpers

B, T, F = 3, 4, 2


def _fit(model, spec, source, *, eval_source=None, module=None,
         after_step=None, clock=None, checkpoint_dir=None, **config):
  objective = objective_lib.make_objective(spec, module)
  optimizer = optimizers.make_optimizer(
      settings.OptimizerConfig.from_hyperparameters(spec.hyperparameters))
  config.setdefault('log_every_n_steps', 0)
  kwargs = {'clock': clock} if clock else {}
  return training.fit(model, optimizer=optimizer, objective=objective,
                      train=source, eval_source=eval_source,
                      config=settings.TrainConfig(
                          **{'validation_fraction': 0.0,
                             'eval_each_epoch': True, **config}),
                      after_step=after_step, checkpoint_dir=checkpoint_dir,
                      **kwargs)


def _default_model(spec):
  keras.utils.set_random_seed(spec.seed)
  return model_io.build_stateful(model_io.resolve_module(), spec)


def test_train_steps_carry_exact_state(tmp_path):
  """Inside ``fit`` (train_step), after every batch each lane's state is the
  running sum of its current sequence up to the end of that segment."""
  lengths = [3, 9, 5, 14, 2, 7, 11, 4, 6]
  seqs = helpers.random_sequences(lengths, F, seed=1, float_labels=True)
  root = helpers.write_batches(str(tmp_path), {'train': seqs}, batch_size=B,
                               num_unroll=T, label_kind='per_step')
  source = batches_lib.BatchSource.open(root, 'train')
  batches = list(source.dataset(keys=None).as_numpy_iterator())
  by_key = {s.key: s for s in seqs}

  inputs = keras.Input(shape=(T, F), batch_size=B)
  x = keras.layers.SimpleRNN(
      F, activation='linear', use_bias=False, trainable=False,
      kernel_initializer=keras.initializers.Identity(),
      recurrent_initializer=keras.initializers.Identity(),
      return_sequences=True, stateful=True)(inputs)
  model = keras.Model(inputs, keras.layers.Dense(1)(x))
  spec = ms.ModelSpec(batch_size=B, num_unroll=T, stateful=True,
                      feature_names=('a', 'b'), label_kind='per_step',
                      task='regression', output_size=1,
                      hyperparameters={'learning_rate': 0.01})
  checked = []

  def after_step(step):
    batch = batches[(step - 1) % len(batches)]
    (h,) = helpers.state_values(model)
    for lane in range(B):
      k = batch['segment_index'][lane]
      if k < 0:
        continue
      seq = by_key[batch['key'][lane].decode()]
      end = min((k + 1) * T, seq.length)
      np.testing.assert_allclose(h[lane], seq.features[:end].sum(axis=0),
                                 rtol=1e-5, atol=1e-5)
      checked.append(step)

  result = _fit(model, spec, source, epochs=2, after_step=after_step)
  assert result.finished and result.steps == 2 * len(batches)
  assert len(set(checked)) == 2 * len(batches)


def _no_bias_rnn(batch_size):
  inputs = keras.Input(shape=(T, F), batch_size=batch_size)
  x = keras.layers.SimpleRNN(4, use_bias=False, return_sequences=True,
                             stateful=True)(inputs)
  return keras.Model(inputs, keras.layers.Dense(2)(x))


def test_state_is_zero_at_every_epoch_start(tmp_path):
  """Lane 3 is padding throughout (3 sequences, 4 lanes): zero input, no
  bias, so its state stays exactly what it starts the epoch with. Leftover
  state is planted at the end of epoch 1; epoch 2 must start from zero."""
  seqs = helpers.random_sequences([6, 9, 5], F, seed=2)
  root = helpers.write_batches(str(tmp_path), {'train': seqs}, batch_size=4,
                               num_unroll=T)
  source = batches_lib.BatchSource.open(root, 'train')
  n = source.num_batches
  model = _no_bias_rnn(4)
  spec = helpers.classification_spec(4, T, ['a', 'b'])
  seen = {}

  def after_step(step):
    if step == n:  # Last step of epoch 1: plant leftover state everywhere.
      for v in state.state_variables(model):
        v.assign(tf.fill(v.shape, 0.7))
    if step == n + 1:  # First step of epoch 2.
      seen['padding_lane'] = helpers.state_values(model)[0][3].copy()

  _fit(model, spec, source, epochs=2, after_step=after_step)
  np.testing.assert_array_equal(seen['padding_lane'], 0.0)


def test_evaluation_has_its_own_state_and_restores_training_state(tmp_path):
  seqs = helpers.random_sequences([6, 9, 5, 13, 4], F, seed=4)
  root = helpers.write_batches(str(tmp_path), {'eval': seqs}, batch_size=B,
                               num_unroll=T)
  source = batches_lib.BatchSource.open(root, 'eval')
  spec = helpers.classification_spec(B, T, ['a', 'b'], units=[5])
  model = _default_model(spec)
  objective = objective_lib.make_objective(spec)
  metrics = objective.new_metrics()
  steps = steps_lib.compile_steps(model, None, objective, None, metrics)
  clean = steps_lib.evaluate(model, steps, metrics, source.dataset())
  # A "training" state mid-sequence: evaluation must neither see nor lose it.
  rng = np.random.default_rng(0)
  planted = [rng.normal(size=v.shape).astype(np.float32)
             for v in state.state_variables(model)]
  for v, value in zip(state.state_variables(model), planted):
    v.assign(value)
  dirty = steps_lib.evaluate_preserving_state(model, steps, metrics,
                                             source.dataset())
  assert dirty == clean
  for v, value in zip(state.state_variables(model), planted):
    np.testing.assert_array_equal(v.numpy(), value)


def test_mid_epoch_evaluation_does_not_change_training(tmp_path):
  """Same seed, with and without evaluation every 2 steps: same weights."""
  splits = {'train': helpers.random_sequences([7, 12, 5, 9, 16, 3], F,
                                              seed=5),
            'eval': helpers.random_sequences([8, 6, 11], F, seed=6)}
  root = helpers.write_batches(str(tmp_path), splits, batch_size=B,
                               num_unroll=T)
  train = batches_lib.BatchSource.open(root, 'train')
  evals = batches_lib.BatchSource.open(root, 'eval')
  spec = helpers.classification_spec(B, T, ['a', 'b'], units=[6, 5])
  results = []
  for every in (0, 2):
    model = _default_model(spec)
    result = _fit(model, spec, train, eval_source=evals, epochs=2,
                  eval_every_n_steps=every)
    results.append((helpers.weights_of(model), result))
  (w0, r0), (w2, r2) = results
  assert len(r2.evaluations) > len(r0.evaluations) >= 2
  for a, b in zip(w0, w2):
    np.testing.assert_array_equal(a, b)
  assert [e.train for e in r0.epochs] == [e.train for e in r2.epochs]
  # The end-of-epoch evaluations agree too (each starts from zero state).
  assert r0.epochs[-1].eval == r2.epochs[-1].eval


def test_same_seed_same_run_other_seed_other_run(tmp_path):
  seqs = helpers.random_sequences([7, 12, 5, 9, 16, 3], F, seed=7)
  root = helpers.write_batches(str(tmp_path), {'train': seqs}, batch_size=B,
                               num_unroll=T)
  source = batches_lib.BatchSource.open(root, 'train')
  runs = []
  for seed in (3, 3, 4):
    spec = helpers.classification_spec(B, T, ['a', 'b'], seed=seed,
                                       units=[6], dropout=0.0)
    model = _default_model(spec)
    _fit(model, spec, source, epochs=2, seed=seed)
    runs.append(helpers.weights_of(model))
  for a, b in zip(runs[0], runs[1]):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(runs[0], runs[2]))


def _sequences_with_labels(last_label, other_label):
  """Two sequences whose labels vary within the sequence."""
  rng = np.random.default_rng(9)
  seqs = []
  for i, n in enumerate((7, 10)):
    labels = np.full(n, other_label, np.int64)
    labels[-1] = last_label
    seqs.append(layout.SequenceArrays(
        key=f'k{i}', features=rng.normal(size=(n, F)).astype(np.float32),
        labels=labels))
  return seqs


def test_loss_counts_only_label_weighted_steps(tmp_path):
  """per_sequence: only the last step's label counts. Changing the others
  changes nothing; changing the last one changes the weights."""
  spec = helpers.classification_spec(2, T, ['a', 'b'], units=[4])
  weights = {}
  for name, (last, other) in {'base': (1, 0), 'other_steps': (1, 1),
                              'last_step': (0, 0)}.items():
    root = helpers.write_batches(str(tmp_path / name),
                                 {'train': _sequences_with_labels(last, other)},
                                 batch_size=2, num_unroll=T)
    model = _default_model(spec)
    _fit(model, spec, batches_lib.BatchSource.open(root, 'train'), epochs=1)
    weights[name] = helpers.weights_of(model)
  for a, b in zip(weights['base'], weights['other_steps']):
    np.testing.assert_array_equal(a, b)
  assert any(not np.allclose(a, b)
             for a, b in zip(weights['base'], weights['last_step']))


def test_gradients_are_clipped_by_global_norm(tmp_path):
  seqs = helpers.random_sequences([8, 8, 8], F, seed=10)
  root = helpers.write_batches(str(tmp_path), {'train': seqs}, batch_size=B,
                               num_unroll=T)
  source = batches_lib.BatchSource.open(root, 'train')
  moved = {}
  for clip in (1e-3, 0):
    spec = helpers.classification_spec(B, T, ['a', 'b'], units=[4],
                                       optimizer='sgd', learning_rate=1.0,
                                       clip_global_norm=clip)
    model = _default_model(spec)
    before = helpers.weights_of(model)
    result = _fit(model, spec, source, epochs=1)
    after = helpers.weights_of(model)
    moved[clip] = np.sqrt(sum(np.sum((a - b) ** 2)
                              for a, b in zip(after, before)))
    steps = result.steps
  # SGD with lr 1: each step moves the weights by the clipped gradient.
  assert moved[1e-3] <= steps * 1e-3 * (1 + 1e-4)
  assert moved[0] > 10 * moved[1e-3]


def test_group_order_per_epoch_is_seeded_and_keeps_groups_whole(tmp_path):
  seqs = helpers.random_sequences([3, 5, 9, 13, 2, 6, 10, 4, 8, 7, 1, 12], F,
                                  seed=11)
  root = helpers.write_batches(str(tmp_path), {'train': seqs}, batch_size=B,
                               num_unroll=T, mode='bucketed')
  source = batches_lib.BatchSource.open(root, 'train')
  groups = source.meta['groups']
  orders = []
  for epoch in (0, 1, 2):
    ds = source.dataset(keys=('batch_index',), epoch=epoch,
                        shuffle_groups=True, seed=5)
    got = [int(b['batch_index']) for b in ds.as_numpy_iterator()]
    perm = batches_lib.group_order(5, epoch, len(groups))
    want = [first + i for g in perm for first, n in [groups[g]]
            for i in range(n)]
    assert got == want
    orders.append(tuple(perm))
  assert len(set(orders)) > 1
  assert tuple(batches_lib.group_order(5, 1, len(groups))) == orders[1]


def test_shuffle_groups_needs_bucketed_batches(tmp_path):
  seqs = helpers.random_sequences([3, 5, 9], F, seed=12)
  root = helpers.write_batches(str(tmp_path), {'train': seqs}, batch_size=B,
                               num_unroll=T, mode='packed')
  source = batches_lib.BatchSource.open(root, 'train')
  with pytest.raises(batches_lib.BatchError, match='bucketed'):
    source.dataset(shuffle_groups=True)


def test_ablation_resets_every_batch(tmp_path):
  """reset_state_every_batch: the state after a step only depends on that
  batch (as if every lane started a sequence)."""
  seqs = helpers.random_sequences([9, 13, 10], F, seed=13)
  root = helpers.write_batches(str(tmp_path), {'train': seqs}, batch_size=B,
                               num_unroll=T)
  source = batches_lib.BatchSource.open(root, 'train')
  batches = list(source.dataset(keys=None).as_numpy_iterator())
  model = helpers.cumsum_model(B, T, F)
  steps = steps_lib.compile_steps(model, None, None, reset_all=True)
  for batch in batches:
    steps.predict(batch['features'], batch['reset'])
    (h,) = helpers.state_values(model)
    np.testing.assert_allclose(h, batch['features'].sum(axis=1), rtol=1e-5,
                               atol=1e-5)


def test_optimizer_hyperparameters():
  config = settings.OptimizerConfig.from_hyperparameters(
      {'optimizer': 'SGD', 'learning_rate': 0.25, 'momentum': 0.5,
       'clip_global_norm': 0})
  assert config.clip_global_norm is None
  opt = optimizers.make_optimizer(config)
  assert isinstance(opt, keras.optimizers.SGD)
  assert float(opt.learning_rate) == pytest.approx(0.25)
  assert float(opt.momentum) == pytest.approx(0.5)
  with pytest.raises(settings.TrainingConfigError, match='optimizer'):
    settings.OptimizerConfig.from_hyperparameters({'optimizer': 'lbfgs'})
  with pytest.raises(settings.TrainingConfigError, match='learning_rate'):
    settings.OptimizerConfig.from_hyperparameters({'learning_rate': 0})


def test_progress_lines_and_epoch_rates(tmp_path, caplog):
  seqs = helpers.random_sequences([7, 12, 5, 9], F, seed=14)
  root = helpers.write_batches(str(tmp_path), {'train': seqs}, batch_size=B,
                               num_unroll=T)
  source = batches_lib.BatchSource.open(root, 'train')
  spec = helpers.classification_spec(B, T, ['a', 'b'], units=[4])
  model = _default_model(spec)
  ticks = iter(np.arange(0, 1000, 0.5))
  with caplog.at_level('INFO', logger=training.__name__):
    result = _fit(model, spec, source, epochs=1, log_every_n_steps=2,
                  clock=lambda: float(next(ticks)))
  lines = [r.getMessage() for r in caplog.records]
  assert any('steps/s' in l and 'real timesteps/s' in l and 'step 2:' in l
             for l in lines)
  epoch = result.epochs[0]
  real = sum(s.length for s in seqs)
  assert epoch.real_steps == real
  assert epoch.steps == source.num_batches
  assert epoch.real_steps_per_sec == pytest.approx(real / epoch.seconds)


class _ZeroLossModule:
  """A module object with a loss hook (a Keras Loss is applied unreduced)."""

  @staticmethod
  def loss(spec):
    del spec

    class Zero(keras.losses.Loss):

      def call(self, y_true, y_pred):
        return tf.zeros_like(y_pred[..., 0])

    return Zero()


def test_module_loss_hook_is_used(tmp_path):
  seqs = helpers.random_sequences([8, 5, 9], F, seed=15)
  root = helpers.write_batches(str(tmp_path), {'train': seqs}, batch_size=B,
                               num_unroll=T)
  source = batches_lib.BatchSource.open(root, 'train')
  spec = helpers.classification_spec(B, T, ['a', 'b'], units=[4],
                                     optimizer='sgd')
  model = _default_model(spec)
  before = helpers.weights_of(model)
  result = _fit(model, spec, source, module=_ZeroLossModule, epochs=1)
  assert result.epochs[0].train['loss'] == 0.0
  for a, b in zip(before, helpers.weights_of(model)):
    np.testing.assert_array_equal(a, b)  # Zero loss: nothing to learn.


def test_a_reduced_loss_is_rejected():
  spec = helpers.classification_spec(B, T, ['a', 'b'])

  class Reduced:
    loss = staticmethod(lambda spec: lambda y, p: tf.reduce_mean(p))

  objective = objective_lib.make_objective(spec, Reduced)
  with pytest.raises(objective_lib.ObjectiveError, match=r'\[B, T\]'):
    objective.per_step_loss(tf.zeros([B, T], tf.int64), tf.zeros([B, T, 2]))
