"""StatefulTrainer: stateful truncated-BPTT training on SequenceBatches.

* ``model_spec.ModelSpec`` — what ``build_model(spec)`` is told (no TF).
* ``training`` — the loop as small functions (``train_step``, ``eval_step``,
  ``train_epoch``-level ``fit``, ``evaluate``, ``predict_batches``).
* ``state`` — RNN state helpers (``stateful_rnn_layers``, ``reset_lanes``,
  ``zero_all``, ``snapshot``/``restore``).
* ``export`` — the serving SavedModel (``serving_default``, ``step``).
* ``model_io.load_stateful_model`` — rebuild a trained model stateful for
  any batch size (for the StatefulEvaluator).
* ``runner.run`` — one run without TFX; ``component.StatefulTrainer`` — the
  TFX component (imports TFX).
"""

from components.stateful_trainer.model_spec import ModelSpec


def load_stateful_model(model_uri, batch_size, num_unroll=None):
  """See ``model_io.load_stateful_model`` (imported lazily: loads TF)."""
  from components.stateful_trainer import model_io  # pylint: disable=g-import-not-at-top
  return model_io.load_stateful_model(model_uri, batch_size, num_unroll)


__all__ = ['ModelSpec', 'load_stateful_model']
