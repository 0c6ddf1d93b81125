"""One evaluation, start to finish, and its documents. No TFX.

``evaluate`` loads the candidate (and the baseline, when there is a
comparable one) (``extraction/models.py``), makes the chunked stateful pass
that writes one extract per sequence (``extraction/extracts.py``), checks
that chunked execution equals whole-sequence serving
(``checks/equivalence.py``), has TensorFlow Model Analysis compute metrics,
slices, plots, diffs and validations over the extracts (its config
``analysis/config.py``; in this process, ``analysis/in_process.py``, up to
``tfma_in_process_max_examples``, else on Beam, ``analysis/beam_run.py``)
and decides the blessing from three checks:

1. TFMA's validation result (the ``tfma.EvalConfig`` thresholds; change
   thresholds only against a real baseline);
2. chunked == whole-sequence outputs within the tolerance;
3. the no-skill gate: the candidate beats the majority class / training mean
   (and, for per-step regression, the last observed value) on the primary
   metric by the margin and significantly (a one-sided paired test on the
   same extracts at ``skill_significance``, ``checks/no_skill_gate.py``; the
   references are scored there, not as TFMA models).

The three are one verdict: TFMA's ``validations.tfrecord`` holds them all
(``analysis/results.record_checks``), so ``validation_ok`` is the blessing.

The output folder holds TFMA's files (the stock Evaluator's layout),
``extracts.tfrecord.gz``, ``stateful_evaluation.json`` (the checks, the
headline figures copied from TFMA's results, the settings) and
``report.html``. How the pass mirrors training: docs/design.md, "The state
protocol".
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import apache_beam as beam
import tensorflow as tf
import tensorflow_model_analysis as tfma

from components.sequence_batcher import reader as sb_reader
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful_evaluator import report as report_lib
from components.stateful_evaluator import settings as settings_lib
from components.stateful_evaluator.analysis import beam_run
from components.stateful_evaluator.analysis import config as tfma_config
from components.stateful_evaluator.analysis import (
    in_process as tfma_in_process)
from components.stateful_evaluator.analysis import results as tfma_results
from components.stateful_evaluator.checks import equivalence as equivalence_lib
from components.stateful_evaluator.checks import no_skill_gate
from components.stateful_evaluator.extraction import chunked as chunked_lib
from components.stateful_evaluator.extraction import extracts as extracts_lib
from components.stateful_evaluator.extraction import models as models_lib

_LOG = logging.getLogger(__name__)

DOCUMENT_FILE = 'stateful_evaluation.json'
REPORT_FILE = 'report.html'
FORMAT_VERSION = 2


@dataclasses.dataclass
class EvaluationOutcome:
  """Everything one evaluation found.

  Attributes:
    blessed: every check passed.
    reasons: why it is not blessed (empty when blessed).
    message: a one-paragraph summary (the blessing message).
    document: the ``stateful_evaluation.json`` content.
    results: TFMA's results, read back.
  """
  blessed: bool
  reasons: List[str]
  message: str
  document: Dict[str, Any]
  results: tfma_results.Results


def _baseline(baseline_uri: Optional[str], model_uri: str, meta, spec
             ) -> tuple:
  """``(LoadedModel or None, note)``: the baseline when it is comparable,
  else None and why not (never an error: a baseline that no longer fits is
  "no comparable baseline")."""
  if not baseline_uri:
    return None, 'no blessed baseline yet'
  if os.path.normpath(baseline_uri) == os.path.normpath(model_uri):
    return None, ('the baseline is the candidate itself (a cached re-run): '
                  'change thresholds skipped')
  try:
    baseline = models_lib.load_model(baseline_uri, meta)
    models_lib.check_baseline(spec, baseline.spec)
  except (models_lib.EvaluationError, ms.ModelSpecError, OSError,
          ValueError) as e:
    return None, (f'baseline {baseline_uri} is not comparable '
                  f'({str(e).splitlines()[0]}): change thresholds skipped')
  return baseline, f'baseline {baseline_uri}'


def class_names(model_uri: str, spec: ms.ModelSpec) -> List[str]:
  """The model's class names (its serving model's ``model_info``: the
  labels as the user wrote them), or the indices as text for a model
  exported without them; [] for regression."""
  if spec.task != ms.CLASSIFICATION:
    return []
  path = os.path.join(model_uri, 'Format-Serving', 'assets.extra',
                      'model_info.json')
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      return list(json.load(f).get('class_names') or [])
  return [str(i) for i in range(int(spec.num_classes or spec.output_size))]


def per_class(overall: Dict[str, Any], names: List[str]
             ) -> Dict[str, Dict[str, Any]]:
  """The per-class metrics (``recall/class_i`` ...) by class name."""
  out: Dict[str, Dict[str, Any]] = {}
  for metric, value in sorted(overall.items()):
    base, sep, index = metric.rpartition('/class_')
    if not sep or not index.isdigit():
      continue
    i = int(index)
    name = names[i] if i < len(names) else index
    out.setdefault(name, {})[base] = value
  return out


def _gate(results: tfma_results.Results, spec: ms.ModelSpec,
          settings: settings_lib.StatefulSettings,
          tests: Dict[str, no_skill_gate.PairedTest]) -> Dict[str, Any]:
  """The no-skill gate on the overall primary metric: better than every
  no-skill predictor (``tests``: ``{reference model: PairedTest}``, which
  also holds the reference's figure) by the margin, and significantly so.

  ``gain``: candidate minus the best reference (accuracy), or ``1 -
  candidate / best`` (MSE); the margin holds when ``gain > 0`` and ``gain >=
  margin``."""
  metric = tfma_config.primary_metric(spec.task)
  cand = results.metrics.get(tfma_config.CANDIDATE, {}).get(
      'overall', {}).get(metric)
  skill = {m: t.reference_value for m, t in tests.items()}
  higher = tfma_config.higher_is_better(metric)
  known = [v for v in skill.values() if v is not None]
  best = (max(known) if higher else min(known)) if known else None
  margin = settings.no_skill_margin
  gain = None
  if cand is None or best is None or not math.isfinite(cand):
    text = f'{metric} missing from the results'
  elif higher:
    gain = cand - best
    text = (f'{metric} {cand:.4f} vs best no-skill {best:.4f} (needs > '
            f'{best:.4f} and >= {best + margin:.4f})')
  else:
    gain = 1.0 - cand / best if best else -math.inf
    text = (f'{metric} {cand:.6g} vs best no-skill {best:.6g} (needs < '
            f'{best:.6g} and <= {best * (1.0 - margin):.6g})')
  margin_ok = gain is not None and gain > 0 and gain >= margin
  alpha = settings.skill_significance
  worst = no_skill_gate.worst(tests)
  tested = worst is not None and alpha < 1.0
  significant = not tested or worst.p_value <= alpha
  if tested:
    text += (f'; one-sided {worst.test}-test against {worst.reference}: p = '
             f'{worst.p_value:.3g} over {worst.blocks} blocks (needs <= '
             f'{alpha:g})')
  return {'metric': metric, 'candidate': cand, 'no_skill': skill,
          'best_no_skill': best, 'margin': margin, 'gain': gain,
          'margin_ok': bool(margin_ok), 'significant': bool(significant),
          'ok': bool(margin_ok and significant), 'significance': alpha,
          'p_value': worst.p_value if tested else None,
          'tests': {r: t.to_dict() for r, t in tests.items()},
          'required': settings.require_skill, 'message': text}


def _checks(equivalence, gate: Dict[str, Any],
            settings: settings_lib.StatefulSettings
           ) -> List[tfma_results.Check]:
  """The chunked == whole check and (when required) the no-skill gate, as
  value thresholds on the candidate in TFMA's validation result."""
  checks = [tfma_results.Check(
      name='chunked_whole_max_abs_diff', value=equivalence.max_abs_diff,
      ok=bool(equivalence.ok), message=equivalence.message,
      upper_bound=settings.equivalence_tolerance)]
  if not settings.require_skill:
    return checks
  checks.append(tfma_results.Check(
      name='no_skill_gain', value=gate['gain'], ok=gate['margin_ok'],
      message=f'no better than no skill by the margin: {gate["message"]}',
      lower_bound=gate['margin']))
  if gate['p_value'] is not None:
    checks.append(tfma_results.Check(
        name='no_skill_p_value', value=gate['p_value'],
        ok=gate['significant'],
        message=f'not significantly better than no skill: {gate["message"]}',
        upper_bound=gate['significance']))
  return checks


IN_PROCESS = 'in_process'
BEAM = 'beam'


def tfma_runner(config: tfma.EvalConfig, examples: int,
                settings: settings_lib.StatefulSettings) -> Tuple[str, str]:
  """Where TFMA runs (``IN_PROCESS`` or ``BEAM``), and why."""
  limit = settings.tfma_in_process_max_examples
  reason = tfma_in_process.unsupported(config)
  if reason:
    return BEAM, f'the eval_config asks for {reason}'
  if limit == 0:
    return BEAM, 'tfma_in_process_max_examples is 0'
  if examples > limit:
    return BEAM, (f'{examples} examples > tfma_in_process_max_examples '
                  f'{limit}')
  return IN_PROCESS, (f'{examples} examples <= '
                      f'tfma_in_process_max_examples {limit}')


def evaluate(*, model_uri: str, batches_uri: str, split: str,
             output_dir: str,
             eval_config: Optional[tfma.EvalConfig] = None,
             settings: settings_lib.StatefulSettings = (
                 settings_lib.StatefulSettings()),
             serving_dir: Optional[str] = None,
             baseline_uri: Optional[str] = None,
             make_pipeline: Callable[[], beam.Pipeline] = beam.Pipeline,
             clock: Callable[[], float] = time.monotonic
            ) -> EvaluationOutcome:
  """Evaluates a model (and its baseline) on one split; writes the outputs
  to ``output_dir`` and decides the blessing (see the module docstring).

  Args:
    model_uri: the candidate ``Model`` artifact URI (StatefulTrainer layout).
    batches_uri: the ``SequenceBatches`` artifact URI.
    split: the split to evaluate, e.g. ``eval``.
    output_dir: the ``ModelEvaluation`` URI.
    eval_config: a ``tfma.EvalConfig``; None: ``default_eval_config``.
    settings: the stateful-only settings.
    serving_dir: the candidate's serving SavedModel (for the equivalence
      check); None: there is none (not blessed).
    baseline_uri: the baseline ``Model`` URI, or None.
    make_pipeline: builds the Beam pipeline TFMA runs on (when it runs on
      Beam, see ``tfma_runner``).
    clock: seconds, monotonic (injected for tests).
  """
  started = clock()
  _, meta = sb_reader.load_metadata(batches_uri, split)
  # The whole-sequence reference loads in a thread of its own while the
  # model is read and the chunked pass runs (TensorFlow releases the GIL
  # for most of either); the check itself waits for it below.
  loader = concurrent.futures.ThreadPoolExecutor(
      1, thread_name_prefix='equivalence-load')
  reference = loader.submit(equivalence_lib.load_reference, serving_dir,
                            settings, meta.get('num_features'))
  loader.shutdown(wait=False)
  candidate = models_lib.load_model(model_uri, meta)
  spec = candidate.spec
  baseline, baseline_note = _baseline(baseline_uri, model_uri, meta, spec)
  _LOG.info('baseline: %s', baseline_note)
  config = tfma_config.complete_config(eval_config, spec, baseline is not None)
  no_skill = extracts_lib.NoSkill.from_batches(batches_uri,
                                               settings.train_split, spec)
  sampler = chunked_lib.SequenceSampler(settings.equivalence_sample_size,
                                        settings.equivalence_seed,
                                        spec.num_unroll)
  # The no-skill gate's paired tests (and, for regression, the report's
  # sample of predicted against actual) see each sequence as it is written.
  references = {m: tfma_config.PREDICTION_KEYS[m]
                for m in tfma_config.no_skill_models(spec)}
  paired = no_skill_gate.PairedTests(spec.task, list(references.values()),
                                     settings.skill_block_steps)
  points = (no_skill_gate.PointSample() if spec.task == ms.REGRESSION
            else None)

  def observe(seq):
    paired.add(seq)
    if points is not None:
      points.offer(seq[extracts_lib.LABEL], seq[extracts_lib.PREDICTION])

  # TFMA in process reads the extracts as they are written, beside the
  # pass (TensorFlow releases the GIL for most of it).
  stream = (tfma_in_process.Streaming(
      config, settings.tfma_in_process_max_examples)
            if tfma_runner(config, 0, settings)[0] == IN_PROCESS else None)
  try:
    stats = extracts_lib.write_extracts(
        candidate, baseline, batches_uri, split, no_skill, output_dir,
        sampler, observe=observe,
        on_record=stream.put if stream is not None else None)
  except BaseException:
    if stream is not None:
      stream.abandon()  # The pass's own error is the one to see.
    raise
  if stream is not None:
    stream.close()
  _LOG.info('chunked evaluation: %d sequences, %d labelled steps, %d '
            'examples in %.1fs', stats.sequences, stats.labelled_steps,
            stats.examples, stats.seconds)
  runner, runner_note = tfma_runner(config, stats.examples, settings)
  _LOG.info('TFMA runs %s: %s', runner.replace('_', ' '), runner_note)

  # TFMA reads only the extracts: it runs in a thread beside the check.
  def run_tfma() -> Tuple[tfma_results.Results, float]:
    tfma_started = clock()
    if runner == IN_PROCESS:
      stream.write(stats.path, output_dir)
    else:
      beam_run.run(stats.path, config, output_dir, make_pipeline)
    results = tfma_results.load(output_dir, spec.num_classes)
    return results, clock() - tfma_started

  tfma_thread = concurrent.futures.ThreadPoolExecutor(
      1, thread_name_prefix='tfma')
  tfma_future = tfma_thread.submit(run_tfma)
  tfma_thread.shutdown(wait=False)
  equivalence = equivalence_lib.check_equivalence(
      serving_dir, sampler.sequences(), num_outputs=spec.output_units,
      num_unroll=spec.num_unroll, config=settings,
      twin_factory=lambda: model_io.build_serving(
          candidate.module, spec, weights_from=candidate.model),
      loaded=reference.result)
  _LOG.info('equivalence check: %s', equivalence.message)
  results, tfma_seconds = tfma_future.result()
  _LOG.info('TFMA: %.1fs; validation_ok=%s', tfma_seconds,
            results.validation_ok)
  tests = paired.results()
  gate = _gate(results, spec, settings,
               {m: tests[f] for m, f in references.items()})

  reasons = [f'threshold failed: {f}' for f in results.failures]
  if not results.validation_ok and not results.failures:
    reasons.append('TFMA validation failed')
  if not equivalence.ok:
    reasons.append(equivalence.message)
  if settings.require_skill and not gate['ok']:
    reasons.append(f'no better than no skill: {gate["message"]}')
  # TFMA's validation result is the verdict; ``reasons`` say why.
  verdict = tfma_results.record_checks(
      output_dir, _checks(equivalence, gate, settings),
      thresholds_ok=results.validation_ok, rubber_stamp=baseline is None)
  blessed = bool(verdict.validation_ok)
  notes = [baseline_note] + ([] if settings.require_skill else [
      'no-skill gate off (require_skill=False)'])
  if not results.thresholds:
    notes.append('no TFMA threshold configured')
  if blessed:
    message = (f'Blessed: TFMA thresholds passed; {equivalence.message}; '
               f'beats no skill: {gate["message"]}. ' + '; '.join(notes))
  else:
    message = 'Not blessed: ' + ' | '.join(reasons) + '. ' + '; '.join(notes)
  primary = gate['metric']
  names = class_names(model_uri, spec)
  document = models_lib.json_safe({
      'format_version': FORMAT_VERSION,
      'task': spec.task,
      'label_kind': spec.label_kind,
      'primary_metric': primary,
      'blessed': blessed,
      'reasons': reasons,
      'message': message,
      'model': {'uri': model_uri, 'spec': spec.to_dict()},
      'baseline': {'uri': baseline_uri, 'used': baseline is not None,
                   'note': baseline_note},
      'batches': {
          'uri': batches_uri, 'split': split,
          'batch_size': meta['batch_size'], 'num_unroll': meta['num_unroll'],
          'mode': meta.get('mode'), 'num_batches': meta.get('num_batches'),
          'num_sequences': meta.get('num_sequences'),
      },
      'extracts': dataclasses.asdict(stats),
      'no_skill': {'predictor': no_skill.describe(), 'gate': gate},
      'equivalence': equivalence.to_dict(),
      'regression_view': None if points is None else {
          'points': points.points(), 'labelled_steps': points.offered},
      'class_names': names,
      'per_class': per_class(
          results.metrics.get('candidate', {}).get('overall', {}), names),
      'tfma': {'runner': runner, 'runner_note': runner_note,
               'validation_ok': bool(verdict.validation_ok),
               'thresholds_validation_ok': results.validation_ok,
               'rubber_stamp': bool(verdict.rubber_stamp),
               'thresholds': results.thresholds,
               'failures': results.failures,
               'metrics': results.metrics,
               'confusion_matrix': results.confusion,
               'eval_config': tfma_config.describe(config)},
      'settings': settings.to_dict(),
      'seconds': {'total': clock() - started, 'chunked_pass': stats.seconds,
                  'tfma': tfma_seconds},
  })
  return EvaluationOutcome(blessed=blessed, reasons=reasons, message=message,
                           document=document, results=results)


def write_outputs(outcome: EvaluationOutcome, output_dir: str
                 ) -> Dict[str, str]:
  """Writes ``stateful_evaluation.json`` and ``report.html`` beside TFMA's
  files. Returns ``{file name: path}``."""
  tf.io.gfile.makedirs(output_dir)
  paths = {DOCUMENT_FILE: os.path.join(output_dir, DOCUMENT_FILE),
           REPORT_FILE: os.path.join(output_dir, REPORT_FILE)}
  with tf.io.gfile.GFile(paths[DOCUMENT_FILE], 'w') as f:
    f.write(json.dumps(outcome.document, indent=1, sort_keys=True,
                       allow_nan=False) + '\n')
  with tf.io.gfile.GFile(paths[REPORT_FILE], 'w') as f:
    f.write(report_lib.render(outcome.document))
  return paths
