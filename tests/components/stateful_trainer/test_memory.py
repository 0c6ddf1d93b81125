"""Memory test: the state carried across batches is what solves the cue task.

``data/generate.py``'s ``cue`` task: the label is visible only in ``f0`` at
steps 0..2; everything later is label-independent noise. A sequence longer
than one segment (T steps) can only be classified at its last step if the
state survives the batch boundaries. The stateful trainer must get those
sequences right; the same model and data trained and evaluated with the
state zeroed before every batch (``reset_state_every_batch``, the ablation)
must stay near chance on them, while still solving the one-segment ones.

Labels are ``per_step`` (the constant label on every step), so the loss
inside the first segment teaches the model to latch the cue (gradients do
not cross segment boundaries); accuracy is scored at each sequence's last
step, as for a per-sequence label. Figures measured on 2 CPU cores are in
docs/stateful_trainer.md.
"""

import numpy as np
import pytest
import tf_keras as keras

from components.stateful import model_io
from components.stateful_trainer import settings
from components.stateful_trainer import optimizers
from components.stateful_trainer import training
from components.stateful import batches as batches_lib
from components.stateful import objective as objective_lib
from components.stateful import steps as steps_lib
from tests.components.stateful_trainer import helpers

B, T = 16, 16


@pytest.fixture(scope='module')
def cue_batches(tmp_path_factory):
  seqs, names = helpers.cue_sequences(800, seed=1, num_unroll=T,
                                      median_length=48)
  split = int(0.75 * len(seqs))
  root = helpers.write_batches(
      str(tmp_path_factory.mktemp('cue')),
      {'train': seqs[:split], 'eval': seqs[split:]}, batch_size=B,
      num_unroll=T, label_kind='per_step', feature_names=names)
  return (batches_lib.BatchSource.open(root, 'train'),
          batches_lib.BatchSource.open(root, 'eval'), names, seqs[split:])


def _last_step_accuracy(model, source, reset_all):
  """Accuracy at the last real step, for sequences of one segment and of
  more than one segment."""
  hits = {'short': [], 'long': []}
  for batch, outputs in steps_lib.predict_batches(
      model, source.dataset(keys=None), reset_all=reset_all):
    for lane in range(B):
      length = int(batch['sequence_length'][lane])
      k = int(batch['segment_index'][lane])
      if k < 0 or (length - 1) // T != k:
        continue  # Padding, or not the segment holding the last step.
      pos = (length - 1) % T
      hit = int(np.argmax(outputs[lane, pos])) == int(batch['labels'][lane,
                                                                      pos])
      hits['long' if length > T else 'short'].append(hit)
  return {k: (float(np.mean(v)), len(v)) for k, v in hits.items()}


def _train(train, evals, names, ablation):
  spec = helpers.classification_spec(B, T, names, label_kind='per_step',
                                     seed=1, units=[32], learning_rate=0.01)
  keras.utils.set_random_seed(1)
  module = model_io.resolve_module()
  model = model_io.build_stateful(module, spec)
  result = training.fit(
      model, optimizer=optimizers.make_optimizer(
          settings.OptimizerConfig.from_hyperparameters(
              spec.hyperparameters)),
      objective=objective_lib.make_objective(spec, module), train=train,
      eval_source=evals,
      config=settings.TrainConfig(epochs=6, seed=1, log_every_n_steps=0,
                                  validation_fraction=0.0,
                                  reset_state_every_batch=ablation))
  return _last_step_accuracy(model, evals, ablation), result


def test_stateful_training_remembers_the_cue_across_batches(cue_batches):
  train, evals, names, eval_seqs = cue_batches
  long_seqs = [s for s in eval_seqs if s.length > T]
  assert len(long_seqs) >= 60
  assert np.median([s.length for s in long_seqs]) > 3 * T

  stateful, stateful_run = _train(train, evals, names, ablation=False)
  ablated, ablated_run = _train(train, evals, names, ablation=True)
  print('stateful:', stateful, 'final eval', stateful_run.final_eval)
  print('ablation:', ablated, 'final eval', ablated_run.final_eval)

  # Sequences spanning several batches: only carried state can solve them.
  assert stateful['long'][0] >= 0.9, stateful
  assert ablated['long'][0] <= 0.7, ablated
  # Both models learnt the task itself (one-segment sequences).
  assert stateful['short'][0] >= 0.9, stateful
  assert ablated['short'][0] >= 0.9, ablated
