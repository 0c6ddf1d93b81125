"""The evaluator on a model the StatefulTrainer really trained and exported
(default stacked LSTM), evaluated with another batch size and T than it was
trained with."""

from __future__ import annotations

import os


from components.stateful_evaluator import evaluation as E
from components.stateful_evaluator import settings as S
from components.stateful import model_spec as ms
from components.stateful_trainer import run as trainer_run
from components.stateful_trainer import settings
from tests.components.stateful_evaluator import helpers

LENGTHS = (3, 14, 6, 9, 1, 11, 7, 4, 12, 5)


def test_trained_lstm_is_evaluated_chunked_and_matches_its_export(tmp_path):
  seqs = helpers.make_sequences(LENGTHS, label_kind=ms.PER_STEP,
                                task=ms.CLASSIFICATION, seed=11)
  train_uri = str(tmp_path / 'train_batches')
  helpers.write_batches(train_uri, seqs, label_kind=ms.PER_STEP,
                        batch_size=4, num_unroll=3, split='train')
  model_uri = str(tmp_path / 'model')
  serving_dir = os.path.join(model_uri, helpers.SERVING_DIR)
  trainer_run.run(trainer_run.TrainerArgs(
      batches_uri=train_uri, model_uri=model_uri,
      serving_model_dir=serving_dir,
      model_run_dir=str(tmp_path / 'model_run'), eval_split=None,
      task=ms.CLASSIFICATION, num_classes=2,
      hyperparameters={'model': 'lstm', 'units': [6, 5], 'learning_rate': 0.01},
      train=settings.TrainConfig(epochs=1, log_every_n_steps=0)))
  # Eval batches laid out differently: B=3 lanes, T=5 steps.
  eval_uri = str(tmp_path / 'eval_batches')
  helpers.write_batches(eval_uri, seqs, label_kind=ms.PER_STEP,
                        batch_size=3, num_unroll=5, train=seqs)
  outcome = E.evaluate(
      model_uri=model_uri, batches_uri=eval_uri, split='eval',
      output_dir=str(tmp_path / 'evaluation'),
      settings=S.StatefulSettings(equivalence_sample_size=4,
                                  require_skill=False),
      serving_dir=serving_dir)
  eq = outcome.document['equivalence']
  # Two stacked LSTMs carried across chunks of 5 agree with the whole-
  # sequence export to float precision.
  assert eq['ok'], eq['message']
  assert eq['reference'] == 'signature serving_default'
  assert eq['compared'] == 'per_step' and eq['num_multi_segment'] == 4
  assert 0.0 <= eq['max_abs_diff'] < 1e-5
  assert outcome.blessed, outcome.message  # One epoch: the gate is off.
  doc = outcome.document
  assert doc['batches']['batch_size'] == 3 and doc['batches'][
      'num_unroll'] == 5
  # Per-step classification: one TFMA example per (sequence, label,
  # arg-max) group of steps, every labelled step counted by weight.
  assert len(LENGTHS) <= doc['extracts']['examples'] < sum(LENGTHS)
  assert doc['extracts']['labelled_steps'] == sum(LENGTHS)
  overall = doc['tfma']['metrics']['candidate']['overall']
  assert overall['weighted_example_count'] == sum(LENGTHS)
  assert 0.0 <= overall['sparse_categorical_accuracy'] <= 1.0
  assert overall['recall/class_1'] is not None
