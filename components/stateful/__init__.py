"""The stateful core: what the trainer, the evaluator and the export share.

TensorFlow and ``tf_keras``, no TFX. The trainer and the evaluator import
from here and never from each other (docs/design.md, "Layers"). By role:

* ``state/`` — the state protocol. ``protocol``: finds every stateful layer
  (Keras RNN layers and ``layers.base.StatefulLayer``), per-lane reset,
  zeroing, snapshot/restore, model checks; ``explicit``: explicit state in
  and out (the serving twin, replicated steps); ``resets``: per-step resets
  (``dense`` batches).
* ``layers/`` — stateful layers beyond RNNs. ``base``: ``StatefulLayer``
  and ``PlainCall``; then one file per family: ``convolution``
  (``CausalConv1D`` and its kernels), ``pools`` (``RunningPool``,
  ``DecayingPool``), ``lru`` (``LinearRecurrence``) with its ``scans``,
  ``elementwise`` (``SignedLog``, ``Standardize``, ``LabelUnits``).
* ``models/`` — the default model module and its parts: ``default_model``
  (used when no module file is given), ``hyperparameters``,
  ``recurrent_models``, ``conv_adapt`` (its ``adapt``: the passes over
  the batches in ``adapt_passes``, the PPV thresholds in
  ``ppv_thresholds``, the head's rows in ``head_rows``), ``head`` (the
  closed-form head, solved by ``ridge``), ``row_sampling`` (samples that
  do not depend on the workers).
* ``distribution/`` — data parallelism: ``lanes`` (the lane rule: part r of
  R owns lanes ``[r*b, (r+1)*b)``, for every replica and worker),
  ``replicas`` (replicated steps with explicit state), ``shards`` (fit-time
  statistics across workers).
* The step machinery, at the top: ``model_spec`` (``ModelSpec``, what
  ``build_model(spec)`` is told), ``module_contract`` (the hooks a model
  module may define), ``model_io`` (model modules, checked models, the
  ``stateful/`` export), ``objective`` (loss and metrics for a task),
  ``steps`` (train/eval/predict steps with per-lane resets), ``batches``
  (``BatchSource`` and ``lanes_to_sequences``), ``carve`` (the validation
  carve laid out in batches of its own), ``heap`` (process memory
  plumbing), ``compat`` (the old module paths a saved model may import).

Imports go one way (a test holds the core free of import circles):
``layers`` imports nothing of the other sub-packages; ``state`` imports
``layers.base``; the step machinery imports ``state`` and ``layers``;
``distribution`` imports ``state`` and the step machinery; ``models``
imports all of them. The sub-packages' ``__init__`` files import nothing.
"""
