"""Session fixtures: tiny batches and Model artifacts built once per run."""

from __future__ import annotations

import pytest

from components.sequence_batcher import layout
from components.stateful import model_spec as ms
from tests.components.stateful_evaluator import helpers



@pytest.fixture(scope='session')
def regression_sequences():
  return helpers.make_sequences(helpers.REGRESSION_LENGTHS,
                                label_kind=ms.PER_STEP, task=ms.REGRESSION,
                                seed=3)


@pytest.fixture(scope='session')
def regression_batches(tmp_path_factory, regression_sequences):
  """``{mode: SequenceBatches URI}`` for packed and bucketed layouts."""
  root = tmp_path_factory.mktemp('regression_batches')
  train = helpers.make_sequences(helpers.REGRESSION_LENGTHS,
                                 label_kind=ms.PER_STEP, task=ms.REGRESSION,
                                 seed=4)
  return {
      mode: helpers.write_batches(str(root / mode), regression_sequences,
                                  label_kind=ms.PER_STEP, mode=mode,
                                  train=train)
      for mode in layout.MODES
  }


@pytest.fixture(scope='session')
def classification_sequences():
  return helpers.make_sequences(helpers.CLASSIFICATION_LENGTHS,
                                label_kind=ms.PER_SEQUENCE,
                                task=ms.CLASSIFICATION, seed=5)


@pytest.fixture(scope='session')
def classification_batches(tmp_path_factory, classification_sequences):
  root = tmp_path_factory.mktemp('classification_batches')
  train = helpers.make_sequences(helpers.CLASSIFICATION_LENGTHS,
                                 label_kind=ms.PER_SEQUENCE,
                                 task=ms.CLASSIFICATION, seed=6)
  return helpers.write_batches(str(root), classification_sequences,
                               label_kind=ms.PER_SEQUENCE, batch_size=4,
                               num_unroll=3, train=train)


@pytest.fixture(scope='session')
def models(tmp_path_factory):
  """Model URIs: ``running_sum``, ``forgetful`` (drops state between
  chunks), ``half_sum`` (scale 0.5, no serving export: a baseline) and
  ``classifier`` (per-sequence labels)."""
  root = str(tmp_path_factory.mktemp('models'))
  return {
      'running_sum': helpers.write_model(
          root, 'running_sum', helpers.RUNNING_SUM, task=ms.REGRESSION,
          label_kind=ms.PER_STEP),
      'forgetful': helpers.write_model(
          root, 'forgetful', helpers.FORGETFUL, task=ms.REGRESSION,
          label_kind=ms.PER_STEP),
      'half_sum': helpers.write_model(
          root, 'half_sum', helpers.RUNNING_SUM, task=ms.REGRESSION,
          label_kind=ms.PER_STEP, scale=0.5, serving=False),
      'classifier': helpers.write_model(
          root, 'classifier', helpers.CLASSIFIER, task=ms.CLASSIFICATION,
          label_kind=ms.PER_SEQUENCE),
      # Constant logits: always class 0, no better than the majority class.
      'no_skill_classifier': helpers.write_model(
          root, 'no_skill_classifier', helpers.CLASSIFIER,
          task=ms.CLASSIFICATION, label_kind=ms.PER_SEQUENCE, scale=0.0),
  }
