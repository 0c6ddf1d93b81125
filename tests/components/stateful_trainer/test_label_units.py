"""Regression labels on a sane scale (``TrainConfig.standardize_labels``):
trained standardised, exported and evaluated in label units."""

import os

import numpy as np
import pytest
import tensorflow as tf

from components.sequence_batcher import layout
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful.state import protocol as state
from components.stateful_evaluator import evaluation as E
from components.stateful_evaluator import settings as S
from components.stateful_trainer import run as trainer_run
from components.stateful_trainer import settings
from tests.components.stateful_trainer import helpers

B, T, F = 3, 4, 2
CENTER, SPREAD = 500.0, 50.0


def _sequences(seed):
  rng = np.random.default_rng(seed)
  out = []
  for i, n in enumerate((7, 12, 5, 9, 6, 10)):
    x = rng.normal(size=(n, F)).astype(np.float32)
    y = CENTER + SPREAD * (0.8 * x[:, 0] + 0.2 * rng.normal(size=n))
    out.append(layout.SequenceArrays(f's{i:03d}', x, y.astype(np.float32)))
  return out


def _train(tmp_path, standardize):
  root = helpers.write_batches(
      str(tmp_path / 'batches'), {'train': _sequences(1), 'eval':
                                  _sequences(2)},
      batch_size=B, num_unroll=T, label_kind=ms.PER_STEP,
      feature_names=['x0', 'x1'])
  model_uri = str(tmp_path / 'model')
  result = trainer_run.run(trainer_run.TrainerArgs(
      batches_uri=root, model_uri=model_uri,
      serving_model_dir=os.path.join(model_uri, 'Format-Serving'),
      model_run_dir=str(tmp_path / 'run'), eval_split=None,
      task=ms.REGRESSION,
      hyperparameters={'model': 'gru', 'units': [4], 'learning_rate': 0.01},
      train=settings.TrainConfig(epochs=1, log_every_n_steps=0,
                                 validation_fraction=0.0,
                                 standardize_labels=standardize)))
  return root, result


def _serve(result, seqs):
  loaded = tf.saved_model.load(result.serving_model_dir)
  length = max(s.length for s in seqs)
  x = np.zeros((len(seqs), length, F), np.float32)
  for i, s in enumerate(seqs):
    x[i, :s.length] = s.features
  out = loaded.signatures['serving_default'](
      features=tf.constant(x), lengths=tf.constant(
          [s.length for s in seqs], tf.int64))
  values = out['predictions'].numpy()
  return [values[i, :s.length].reshape(s.length, -1)[:, 0]
          for i, s in enumerate(seqs)]


def test_labels_standardised_for_training_and_outputs_in_label_units(
    tmp_path):
  root, result = _train(tmp_path, True)
  labels = np.concatenate([s.labels for s in _sequences(1)])
  assert result.spec.label_center == pytest.approx(labels.mean(), rel=1e-6)
  assert result.spec.label_spread == pytest.approx(labels.std(), rel=1e-5)
  # The module's model predicts standardised values; LabelUnits maps them.
  inner = model_io.module_model(result.model)
  assert inner is not result.model
  x = tf.random.normal([B, T, F], seed=1)
  state.zero_all(result.model)
  outer = result.model(x).numpy()
  state.zero_all(result.model)
  raw = inner(x).numpy()
  np.testing.assert_allclose(outer, raw * result.spec.label_spread +
                             result.spec.label_center, rtol=1e-5)
  # Exported in label units: one epoch from a head near 0 predicts near
  # the label mean, not near 0.
  evals = _sequences(2)
  served = _serve(result, evals)
  assert abs(np.mean(np.concatenate(served)) - CENTER) < 2 * SPREAD
  # The evaluator's MSE (chunked, TFMA) is the MSE of the exported
  # predictions in label units.
  out = E.evaluate(model_uri=os.path.dirname(result.stateful_dir),
                   batches_uri=root, split='eval',
                   output_dir=str(tmp_path / 'evaluation'),
                   settings=S.StatefulSettings(equivalence_sample_size=3,
                                               require_skill=False),
                   serving_dir=result.serving_model_dir)
  assert out.document['equivalence']['ok'], out.document['equivalence']
  mse = np.mean(np.concatenate([(p - s.labels) ** 2
                                for p, s in zip(served, evals)]))
  got = out.results.metrics['candidate']['overall']['mean_squared_error']
  assert got == pytest.approx(mse, rel=1e-4)
  # The spec round-trips with the scale (the evaluator rebuilt the same
  # model from it).
  again = ms.ModelSpec.from_json(result.spec.to_json())
  assert again.label_spread == result.spec.label_spread


def test_standardisation_can_be_turned_off(tmp_path):
  _, result = _train(tmp_path, False)
  assert result.spec.label_spread is None
  assert model_io.module_model(result.model) is result.model
  served = _serve(result, _sequences(2))
  assert abs(np.mean(np.concatenate(served))) < CENTER / 2


def test_the_default_conv_model_scales_its_own_labels(tmp_path):
  from components.stateful.models import default_model as dm
  spec = ms.ModelSpec(batch_size=B, num_unroll=T, stateful=True,
                      feature_names=('a',), task=ms.REGRESSION, output_size=1)
  assert dm.scales_labels(spec)
  assert not dm.scales_labels(spec.replace(hyperparameters={'model': 'lru'}))
  with pytest.raises(ms.ModelSpecError, match='together'):
    spec.replace(label_center=1.0)
  with pytest.raises(ms.ModelSpecError, match='positive'):
    spec.replace(label_center=1.0, label_spread=0.0)
