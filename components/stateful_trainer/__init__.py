"""StatefulTrainer: stateful truncated-BPTT training on SequenceBatches.

* ``settings`` (``TrainConfig``, ``OptimizerConfig``) and ``training``, the
  loop (``fit``: epochs, cursor, validation, checkpoints, progress), which
  scores the validation carve through ``validation`` (``CarveScorer``). The
  steps, the objective, the state protocol and the batch reader it uses are
  the shared core's (``components.stateful``).
* ``export`` — the serving SavedModel (``serving_default``, ``step``, ...).
* ``run.run`` — one run without TFX; ``component.StatefulTrainer`` — the
  TFX component (imports TFX).
"""
