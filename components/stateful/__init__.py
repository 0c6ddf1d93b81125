"""The stateful core: what the trainer, the evaluator and the export share.

TensorFlow and ``tf_keras``, no TFX. The trainer and the evaluator import
from here and never from each other (docs/design.md, "Layers").

* ``state`` — the state protocol: finds every stateful layer (Keras RNN
  layers and ``layers.StatefulLayer``), per-lane reset, zeroing,
  snapshot/restore, explicit state in and out for serving, model checks.
* ``layers`` — stateful layers beyond RNNs: ``CausalConv1D`` (carries its
  receptive field), ``RunningPool`` (carries counts, sums and maxima), and
  the element-wise ``SignedLog`` / ``Standardize``.
* ``model_spec`` — ``ModelSpec``, what ``build_model(spec)`` is told.
* ``model_io`` — model modules, checked models, the ``stateful/`` export.
* ``default_model`` — the model used when no module file is given.
* ``objective`` — loss and metrics for a task.
* ``steps`` — train/eval/predict steps with per-lane resets.
* ``batches`` — ``BatchSource`` and ``lanes_to_sequences``.
"""
