"""The exported model: SavedModel signatures (after ``tf.saved_model.load``),
chunked ``step`` == ``serving_default``, ``stateful/`` + ``load_stateful_model``
and the tf.Transform path."""

import functools
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from components.stateful_trainer import export
from components.stateful import model_io
from components.stateful_trainer import run as trainer_run
from components.stateful.state import protocol as state
from components.stateful_trainer import settings
from components.stateful import batches as batches_lib
from tests.components.stateful_trainer import helpers

B, T, F = 3, 4, 2
NAMES = ['x0', 'x1']


def _train(root, tmp, *, hyperparameters, transform_uri=None,
           eval_split='eval'):
  args = trainer_run.TrainerArgs(
      batches_uri=root, model_uri=os.path.join(tmp, 'model'),
      serving_model_dir=os.path.join(tmp, 'model', 'Format-Serving'),
      model_run_dir=os.path.join(tmp, 'model_run'), eval_split=eval_split,
      hyperparameters=hyperparameters,
      train=settings.TrainConfig(epochs=2, log_every_n_steps=0),
      transform_graph_uri=transform_uri)
  return trainer_run.run(args)


def _trained_classifier(tmp_path_factory, name, seed, hyperparameters,
                        mode='packed'):
  """Per-sequence, 3 classes: (run result, loaded SavedModel, splits, tmp)."""
  tmp = str(tmp_path_factory.mktemp(name))
  splits = {'train': helpers.random_sequences([7, 12, 5, 9, 16, 3], F,
                                              seed=seed, num_classes=3),
            'eval': helpers.random_sequences([8, 6, 11, 10], F,
                                             seed=seed + 1, num_classes=3)}
  root = helpers.write_batches(os.path.join(tmp, 'batches'), splits,
                               batch_size=B, num_unroll=T,
                               feature_names=NAMES, mode=mode)
  result = _train(root, tmp, hyperparameters=hyperparameters)
  loaded = tf.saved_model.load(result.serving_model_dir)
  return result, loaded, splits, tmp


@pytest.fixture(scope='module')
def classifier(tmp_path_factory):
  """Two stacked LSTMs."""
  return _trained_classifier(tmp_path_factory, 'classifier', 31, {
      'model': 'lstm', 'units': [5, 4], 'learning_rate': 0.05})


@pytest.fixture(scope='module')
def conv_classifier(tmp_path_factory):
  """The default conv model (causal convolutions and running pools as
  state)."""
  return _trained_classifier(tmp_path_factory, 'conv_classifier', 41, {
      'kernels_per_dilation': 4, 'max_dilation': 4, 'learning_rate': 0.05})


@pytest.fixture(scope='module')
def dense_classifier(tmp_path_factory):
  """Two stacked LSTMs trained and evaluated on dense batches (resets
  inside segments); exported for serving like any other."""
  return _trained_classifier(tmp_path_factory, 'dense_classifier', 31, {
      'model': 'lstm', 'units': [5, 4], 'learning_rate': 0.05}, mode='dense')


@pytest.fixture(scope='module')
def regressor(tmp_path_factory):
  """Per-step float labels, one GRU."""
  tmp = str(tmp_path_factory.mktemp('regressor'))
  splits = {'train': helpers.random_sequences([7, 12, 5, 9], F, seed=33,
                                              float_labels=True)}
  root = helpers.write_batches(os.path.join(tmp, 'batches'), splits,
                               batch_size=B, num_unroll=T,
                               label_kind='per_step', feature_names=NAMES)
  args = trainer_run.TrainerArgs(
      batches_uri=root, model_uri=os.path.join(tmp, 'model'),
      serving_model_dir=os.path.join(tmp, 'model', 'Format-Serving'),
      model_run_dir=os.path.join(tmp, 'model_run'), eval_split=None,
      hyperparameters={'units': [4], 'rnn_type': 'gru'},
      train=settings.TrainConfig(epochs=1, log_every_n_steps=0))
  result = trainer_run.run(args)
  return result, tf.saved_model.load(result.serving_model_dir)


@pytest.mark.parametrize('which', ['classifier', 'conv_classifier',
                                   'dense_classifier'])
def test_step_chunk_by_chunk_matches_serving_default(which, request):
  _, loaded, splits, _ = request.getfixturevalue(which)
  seqs = splits['eval']
  x, lengths = helpers.padded(seqs)
  whole = loaded.signatures['serving_default'](
      features=tf.constant(x), lengths=tf.constant(lengths))
  chunked = helpers.run_step_signature(loaded, x, [3, 1, 4, x.shape[1] - 8])
  # Per step: position lengths-1 of the stream is the sequence prediction.
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(chunked['logits'][i, n - 1],
                               whole['logits'].numpy()[i], rtol=1e-5,
                               atol=1e-5)
  # The control: dropping the state between chunks changes the answer.
  dropped = helpers.run_step_signature(loaded, x, [3, 1, 4, x.shape[1] - 8],
                                       reset_at=(1,))
  assert not np.allclose(dropped['logits'][:, 3:], chunked['logits'][:, 3:],
                         atol=1e-4)


def test_per_step_serving_and_step_agree_on_every_step(regressor):
  result, loaded = regressor
  rng = np.random.default_rng(5)
  x = rng.normal(size=(2, 11, F)).astype(np.float32)
  lengths = np.array([11, 6], np.int64)
  x[1, 6:] = 0.0
  whole = loaded.signatures['serving_default'](
      features=tf.constant(x), lengths=tf.constant(lengths))
  preds = whole['predictions'].numpy()
  assert preds.shape == (2, 11, 1)
  np.testing.assert_array_equal(preds[1, 6:], 0.0)  # Past the length.
  chunked = helpers.run_step_signature(loaded, x, [5, 5, 1])
  np.testing.assert_allclose(chunked['predictions'][0], preds[0], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(chunked['predictions'][1, :6], preds[1, :6],
                             rtol=1e-5, atol=1e-5)
  assert result.spec.task == 'regression' and result.spec.output_size == 1


def test_load_stateful_model_any_batch_size_matches_serving(classifier,
                                                            tmp_path):
  result, loaded, splits, tmp = classifier
  model_uri = os.path.join(tmp, 'model')
  sdir = os.path.join(model_uri, 'stateful')
  assert sorted(os.listdir(sdir)) == ['fingerprint.json', 'manifest.json',
                                      'module.py', 'spec.json', 'weights']
  spec = model_io.read_spec(model_uri)
  assert spec == result.spec
  model, spec2 = model_io.load_stateful_model(model_uri, batch_size=2)
  assert spec2.batch_size == 2 and spec2.num_unroll == T
  assert len(state.stateful_rnn_layers(model)) == 2
  for a, b in zip(helpers.weights_of(model), helpers.weights_of(
      result.model)):
    np.testing.assert_array_equal(a, b)
  # Evaluate the eval split laid out for 2 lanes, statefully, and compare
  # with the serving model on whole sequences.
  root = helpers.write_batches(str(tmp_path / 'b2'),
                               {'eval': splits['eval']}, batch_size=2,
                               num_unroll=T, feature_names=NAMES)
  got = helpers.outputs_by_sequence(model,
                                    batches_lib.BatchSource.open(root, 'eval'))
  x, lengths = helpers.padded(splits['eval'])
  whole = loaded.signatures['serving_default'](
      features=tf.constant(x), lengths=tf.constant(lengths))
  for i, seq in enumerate(splits['eval']):
    np.testing.assert_allclose(got[seq.key][-1], whole['logits'].numpy()[i],
                               rtol=1e-5, atol=1e-5)


def test_initial_state_signature(classifier):
  _, loaded, _, _ = classifier
  zeros = loaded.signatures['initial_state'](batch_size=tf.constant(
      5, tf.int64))
  assert sorted(zeros) == [f'state_{i}' for i in range(4)]
  assert zeros['state_0'].shape == (5, 5) and zeros['state_3'].shape == (5, 4)
  assert not any(v.numpy().any() for v in zeros.values())


def _write_transform_graph(path, rows):
  """A real tf.Transform output (z-score of x0, x1) analysed with Beam."""
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  import tensorflow_transform.beam as tft_beam  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import dataset_metadata  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import metadata_io  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import schema_utils  # pylint: disable=g-import-not-at-top

  spec = {n: tf.io.FixedLenFeature([1], tf.float32) for n in NAMES}
  spec['seq_id'] = tf.io.FixedLenFeature([], tf.string)
  meta = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(spec))

  def preprocessing_fn(inputs):
    out = {n: tft.scale_to_z_score(inputs[n]) for n in NAMES}
    out['seq_id'] = inputs['seq_id']
    return out

  with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=False):
    transform_fn = (rows, meta) | tft_beam.AnalyzeDataset(preprocessing_fn)
    _ = transform_fn | tft_beam.WriteTransformFn(path)
  metadata_io.write_metadata(meta, os.path.join(path, 'metadata'))
  return tft.TFTransformOutput(path)


@pytest.fixture(scope='module')
def raw_and_transform(tmp_path_factory):
  """Raw sequences far from zero mean / unit variance and their transform."""
  raw = helpers.random_sequences([7, 12, 5, 9], F, seed=41)
  for s in raw:
    s.features = s.features * np.float32([3.0, 0.5]) + np.float32([10, -4])
  rows = [{'x0': [float(r[0])], 'x1': [float(r[1])], 'seq_id': s.key.encode()}
          for s in raw for r in s.features]
  path = str(tmp_path_factory.mktemp('transform'))
  return raw, path, _write_transform_graph(path, rows)


def test_transform_graph_is_applied_to_raw_features(raw_and_transform,
                                                    tmp_path):
  raw, transform_uri, tft_output = raw_and_transform
  layer = tft_output.transform_features_layer()

  def transformed(features):
    out = layer({n: tf.constant(features[:, [j]]) for j, n in
                 enumerate(NAMES)})
    return np.concatenate([out[n].numpy() for n in NAMES], axis=1)

  seqs = [helpers.layout.SequenceArrays(key=s.key,
                                        features=transformed(s.features),
                                        labels=s.labels) for s in raw]
  assert abs(np.concatenate([s.features for s in seqs]).mean()) < 1e-3
  root = helpers.write_batches(str(tmp_path / 'batches'), {'train': seqs},
                               batch_size=B, num_unroll=T,
                               feature_names=NAMES)
  tmp = str(tmp_path)
  result = _train(root, tmp,
                  hyperparameters={'units': [4]},
                  transform_uri=transform_uri, eval_split=None)
  loaded = tf.saved_model.load(result.serving_model_dir)
  x_raw, lengths = helpers.padded(raw)
  x_model, _ = helpers.padded(seqs)
  got = loaded.signatures['serving_default'](features=tf.constant(x_raw),
                                             lengths=tf.constant(lengths))
  twin = model_io.build_serving(model_io.resolve_module(), result.spec,
                                weights_from=result.model)
  want = twin(x_model).numpy()[np.arange(len(raw)), lengths - 1]
  np.testing.assert_allclose(got['logits'].numpy(), want, rtol=1e-4,
                             atol=1e-4)
  # The step signature applies it too.
  chunked = helpers.run_step_signature(loaded, x_raw, [5, x_raw.shape[1] - 5])
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(chunked['logits'][i, n - 1], want[i],
                               rtol=1e-4, atol=1e-4)
  # serving_transformed is the same graph on already-transformed features.
  same = loaded.signatures['serving_transformed'](
      features=tf.constant(x_model), lengths=tf.constant(lengths))
  np.testing.assert_allclose(same['logits'].numpy(), want, rtol=1e-4,
                             atol=1e-4)
  # Without the transform the raw values would give other answers.
  assert not np.allclose(twin(x_raw).numpy()[np.arange(len(raw)),
                                             lengths - 1], want, atol=1e-3)


def test_transform_without_the_feature_names_is_rejected(raw_and_transform):
  _, transform_uri, _ = raw_and_transform
  with pytest.raises(ValueError, match='no raw feature'):
    export.RawFeatureTransform(transform_uri, ['x0', 'speed'])


def test_serving_by_name_ignores_the_client_s_column_order(classifier):
  """Features by name: any order of the inputs gives serving_default's
  answer on the model's order; the model says its names and classes."""
  result, loaded, splits, _ = classifier
  x, lengths = helpers.padded(splits['eval'])
  whole = loaded.signatures['serving_default'](
      features=tf.constant(x), lengths=tf.constant(lengths))
  by_name = {name: tf.constant(x[..., j]) for j, name in enumerate(NAMES)}
  reordered = dict(reversed(list(by_name.items())))
  got = loaded.signatures['serving_by_name'](lengths=tf.constant(lengths),
                                             **reordered)
  np.testing.assert_allclose(got['logits'].numpy(), whole['logits'].numpy(),
                             rtol=1e-6, atol=1e-6)
  classes = whole['classes'].numpy()
  assert [c.decode() for c in got['class_names'].numpy()] == [
      str(c) for c in classes]
  # step_by_name, chunk by chunk, ends where serving_default ends.
  states = loaded.signatures['initial_state'](
      batch_size=tf.constant(len(lengths), tf.int64))
  reset = tf.ones([len(lengths)], tf.int64)
  logits = []
  for start in range(0, x.shape[1], 3):
    chunk = {n: v[:, start:start + 3] for n, v in reordered.items()}
    out = loaded.signatures['step_by_name'](reset=reset, **chunk, **states)
    states = {k: v for k, v in out.items() if k.startswith('state_')}
    reset = tf.zeros_like(reset)
    logits.append(out['logits'].numpy())
  logits = np.concatenate(logits, axis=1)
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(logits[i, n - 1], whole['logits'].numpy()[i],
                               rtol=1e-5, atol=1e-5)
  info = loaded.signatures['model_info']()
  assert [v.decode() for v in info['feature_names'].numpy()] == NAMES
  assert [v.decode() for v in info['class_names'].numpy()] == ['0', '1', '2']
  with open(os.path.join(result.serving_model_dir, 'assets.extra',
                         'model_info.json')) as f:
    import json  # pylint: disable=g-import-not-at-top
    assert json.load(f)['feature_names'] == NAMES


def test_input_names_avoid_invalid_and_reserved_names():
  assert export.input_names(['a', 'temp (C)', 'lengths', 'a', 'state_0',
                             'b.c']) == ['a', 'feature_1', 'feature_2',
                                         'feature_3', 'feature_4', 'b.c']


def test_each_graph_is_traced_once(raw_and_transform, tmp_path, monkeypatch):
  """The export traces the twin's whole-sequence pass, its chunk with
  state and the transform once each (issue 48: the signatures share them,
  and nothing is traced again while the SavedModel is written); the
  written model still applies the transform in every signature."""
  raw, transform_uri, _ = raw_and_transform
  spec = helpers.classification_spec(B, T, NAMES, num_classes=3, units=[4])
  module = model_io.resolve_module()
  twin = model_io.build_serving(module, spec)
  traced = {}
  for name in ('_whole_sequences', '_step_on_model_inputs'):
    original = getattr(export.ServingModule, name)

    def counted(self, *args, _original=original, _name=name):
      traced[_name] = traced.get(_name, 0) + 1
      return _original(self, *args)
    monkeypatch.setattr(export.ServingModule, name,
                        functools.wraps(original)(counted))
  original_call = export.RawFeatureTransform.__call__

  def transform_call(self, features):
    traced['transform'] = traced.get('transform', 0) + 1
    return original_call(self, features)
  monkeypatch.setattr(export.RawFeatureTransform, '__call__', transform_call)
  export.export_serving_model(str(tmp_path / 'serving'), twin, spec,
                              transform_uri)
  assert traced == {'_whole_sequences': 1, '_step_on_model_inputs': 1,
                    'transform': 1}
  loaded = tf.saved_model.load(str(tmp_path / 'serving'))
  x_raw, lengths = helpers.padded(raw)
  want = loaded.signatures['serving_default'](
      features=tf.constant(x_raw), lengths=tf.constant(lengths))['logits']
  by_name = loaded.signatures['serving_by_name'](
      lengths=tf.constant(lengths),
      **{n: tf.constant(x_raw[..., j]) for j, n in enumerate(NAMES)})
  np.testing.assert_array_equal(by_name['logits'].numpy(), want.numpy())
  # serving_default == the transform + serving_transformed.
  twin_in = export.RawFeatureTransform(transform_uri, NAMES)(
      tf.constant(x_raw))
  same = loaded.signatures['serving_transformed'](
      features=twin_in, lengths=tf.constant(lengths))['logits']
  np.testing.assert_allclose(same.numpy(), want.numpy(), rtol=1e-6,
                             atol=1e-6)
