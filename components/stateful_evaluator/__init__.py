"""StatefulEvaluator: the stateful, chunked run as TFMA's extractor stage,
TensorFlow Model Analysis for metrics, slices, plots, baseline diffs and
validations, and a ``ModelBlessing`` for the stock Pusher.

The stages, in the order ``evaluation.evaluate`` runs them:

* ``extraction/`` — the models and the chunked pass (TensorFlow, no TFMA):
  ``models`` (loading the compared models stateful, fit checks),
  ``chunked`` (the chunked run, the sample the check replays, label
  checks), ``extracts`` (the chunked pass: one example per sequence, or per
  step group for per-step classification: TFMA's extractor stage).
* ``analysis/`` — TensorFlow Model Analysis over the extracts: ``config``
  (the ``tfma.EvalConfig``), ``metrics`` (numpy TFMA metrics of the
  default config), ``in_process`` (TFMA in this process, with
  ``histograms``: the per-class calibration histograms in NumPy),
  ``beam_run`` (TFMA on Beam), ``results`` (its output read back, the one
  verdict) and ``tfma_internals`` (every TFMA name below its public API
  that the in-process path uses, in one place).
* ``checks/`` — the checks besides TFMA's thresholds: ``equivalence``
  (chunked == whole-sequence serving) and ``no_skill_gate`` (the no-skill
  gate's one-sided significance test; NumPy and SciPy).
* ``evaluation`` — one evaluation and the blessing decision;
  ``settings`` — ``StatefulSettings``: the chunked == whole check and the
  no-skill gate (plain Python; the metrics config is a ``tfma.EvalConfig``);
  ``report`` — the HTML view. None of these use TFX; they use the shared
  core ``components.stateful``, never the trainer.
* ``component.StatefulEvaluator`` / ``executor.Executor`` — the TFX parts.
"""

from components.stateful_evaluator.settings import SettingsError
from components.stateful_evaluator.settings import StatefulSettings

__all__ = ['SettingsError', 'StatefulSettings']
