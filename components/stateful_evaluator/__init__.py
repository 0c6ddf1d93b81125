"""StatefulEvaluator: chunked stateful evaluation, metrics by sequence length
and segment, baseline comparison and a ``ModelBlessing`` for the stock Pusher.

* ``config`` — ``EvalConfig`` and thresholds (plain Python).
* ``metrics`` / ``validation`` / ``report`` — NumPy maths, TFMA-style
  threshold checks and the HTML report (no TensorFlow, no TFX).
* ``models`` (loading and fit checks), ``chunked`` (the chunked stateful
  run), ``equivalence`` (chunked == whole-sequence serving) and
  ``evaluation`` (one evaluation and the blessing decision) — TensorFlow, no
  TFX; they use the shared core ``components.stateful``, never the trainer.
* ``component.StatefulEvaluator`` / ``executor.Executor`` — the TFX parts.
"""

from components.stateful_evaluator.config import ChangeThreshold
from components.stateful_evaluator.config import EvalConfig
from components.stateful_evaluator.config import EvalConfigError
from components.stateful_evaluator.config import HIGHER_IS_BETTER
from components.stateful_evaluator.config import LOWER_IS_BETTER
from components.stateful_evaluator.config import MetricThreshold
from components.stateful_evaluator.config import ValueThreshold

__all__ = ['ChangeThreshold', 'EvalConfig', 'EvalConfigError',
           'HIGHER_IS_BETTER', 'LOWER_IS_BETTER', 'MetricThreshold',
           'ValueThreshold']
