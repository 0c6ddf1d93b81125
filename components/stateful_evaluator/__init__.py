"""StatefulEvaluator: the stateful, chunked run as TFMA's extractor stage,
TensorFlow Model Analysis for metrics, slices, plots, baseline diffs and
validations, and a ``ModelBlessing`` for the stock Pusher.

* ``settings`` — ``StatefulSettings``: the chunked == whole check and the
  no-skill gate (plain Python); the metrics config is a ``tfma.EvalConfig``.
* ``models`` (loading and fit checks), ``chunked`` (the sample the check
  replays, label checks), ``extracts`` (the chunked pass: one example per
  sequence, or per step group for per-step classification),
  ``equivalence`` (chunked == whole-sequence serving), ``tfma_config`` (the
  ``tfma.EvalConfig``), ``tfma_metrics`` (numpy TFMA metrics of the default
  config), ``tfma_in_process`` (with ``tfma_histograms``) and
  ``tfma_eval`` (the TFMA run, in this process or on Beam),
  ``tfma_results`` (its output read back, the one verdict) and ``evaluation`` (one evaluation and the
  blessing decision) — no TFX; they use the shared core
  ``components.stateful``, never the trainer. ``report`` — the HTML view.
* ``component.StatefulEvaluator`` / ``executor.Executor`` — the TFX parts.
"""

from components.stateful_evaluator.settings import SettingsError
from components.stateful_evaluator.settings import StatefulSettings

__all__ = ['SettingsError', 'StatefulSettings']
