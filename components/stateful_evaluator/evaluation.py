"""One evaluation, start to finish, and its documents. TensorFlow, no TFX.

``evaluate`` loads the candidate (and the baseline, when there is one)
(``models.py``), runs each chunk by chunk over the eval split
(``chunked.py``), computes the metrics and slices (``metrics.py``), checks
that chunked execution equals whole-sequence serving (``equivalence.py``),
applies the thresholds (``validation.py``) and decides the blessing;
``write_outputs`` writes ``metrics.json``, ``validation.json`` and
``report.html``. How the run mirrors training: docs/design.md, "The state
protocol".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional

import tensorflow as tf

from components.sequence_batcher import reader as sb_reader
from components.stateful_evaluator import config as config_lib
from components.stateful_evaluator import metrics as metrics_lib
from components.stateful_evaluator import report as report_lib
from components.stateful_evaluator import validation as validation_lib
from components.stateful import model_io
from components.stateful import objective as objective_lib
from components.stateful_evaluator import chunked as chunked_lib
from components.stateful_evaluator import equivalence as equivalence_lib
from components.stateful_evaluator import models as models_lib


_LOG = logging.getLogger(__name__)


METRICS_FILE = 'metrics.json'


VALIDATION_FILE = 'validation.json'


REPORT_FILE = 'report.html'


@dataclasses.dataclass
class EvaluationOutcome:
  """Everything one evaluation found.

  Attributes:
    blessed: thresholds passed and the chunked outputs match serving.
    reasons: why it is not blessed (empty when blessed).
    message: a one-paragraph summary (the blessing message).
    metrics: the ``metrics.json`` content.
    validation: the ``validation.json`` content.
  """
  blessed: bool
  reasons: List[str]
  message: str
  metrics: Dict[str, Any]
  validation: Dict[str, Any]


def _evaluate_one(loaded: models_lib.LoadedModel, batches_uri: str, split: str,
                  objective: objective_lib.Objective,
                  sampler: Optional[chunked_lib.SequenceSampler]
                 ) -> metrics_lib.StepRecords:
  dataset = sb_reader.read_batches(batches_uri, split)
  return chunked_lib.run_chunked(loaded, dataset, objective, sampler)


def evaluate(*, model_uri: str, batches_uri: str, split: str,
             config: config_lib.EvalConfig,
             serving_dir: Optional[str],
             baseline_uri: Optional[str] = None,
             clock: Callable[[], float] = time.monotonic
            ) -> EvaluationOutcome:
  """Evaluates a model (and its baseline) on one split and decides blessing.

  Args:
    model_uri: the candidate ``Model`` artifact URI (StatefulTrainer layout).
    batches_uri: the ``SequenceBatches`` artifact URI.
    split: the split to evaluate, e.g. ``eval``.
    config: the evaluation settings.
    serving_dir: the candidate's serving SavedModel (for the equivalence
      check); None means there is none (the model is then not blessed).
    baseline_uri: the baseline ``Model`` URI, or None.
    clock: seconds, monotonic (injected for tests).

  Returns:
    An ``EvaluationOutcome``. Blessed iff every checked threshold passes and
    the equivalence check passes.
  """
  started = clock()
  _, meta = sb_reader.load_metadata(batches_uri, split)
  candidate = models_lib.load_model(model_uri, meta)
  spec = candidate.spec
  objective = objective_lib.make_objective(spec, candidate.module)
  settings = metrics_lib.MetricSettings.for_task(
      spec.task, spec.num_classes, spec.output_units, config)
  unknown = [t.metric for t in config.thresholds
             if t.metric not in settings.metric_names()]
  if unknown:
    raise config_lib.EvalConfigError(
        f'thresholds name metrics {unknown} that are not computed for this '
        f'{spec.task} model; computed: {settings.metric_names()}')
  sampler = chunked_lib.SequenceSampler(config.equivalence_sample_size,
                            config.equivalence_seed, spec.num_unroll)
  records = _evaluate_one(candidate, batches_uri, split, objective, sampler)
  eval_seconds = clock() - started
  _LOG.info('chunked evaluation of %s: %d labelled steps of %d sequences in '
            '%.1fs', model_uri, len(records), len(records.sequence_keys),
            eval_seconds)
  equivalence = equivalence_lib.check_equivalence(
      serving_dir, sampler.sequences(), num_outputs=spec.output_units,
      num_unroll=spec.num_unroll, config=config,
      twin_factory=lambda: model_io.build_serving(
          candidate.module, spec, weights_from=candidate.model))
  _LOG.info('equivalence check: %s', equivalence.message)

  base_records = None
  base_spec = None
  if baseline_uri:
    baseline = models_lib.load_model(baseline_uri, meta)
    base_spec = baseline.spec
    models_lib.check_baseline(spec, base_spec)
    # The candidate's objective: both losses are the same function.
    base_records = _evaluate_one(baseline, batches_uri, split, objective,
                                 None)

  slices = metrics_lib.define_slices(records, config)
  cand_metrics = metrics_lib.sliced_metrics(records, slices, settings)
  base_metrics = (metrics_lib.sliced_metrics(base_records, slices, settings)
                  if base_records is not None else None)
  max_pos = int(records.position.max())
  if base_records is not None:
    max_pos = max(max_pos, int(base_records.position.max()))
  edges = metrics_lib.position_edges(max_pos, config.position_bins)
  positions = {
      'edges': edges,
      'candidate': metrics_lib.by_position(records, edges, spec.task),
      'baseline': (metrics_lib.by_position(base_records, edges, spec.task)
                   if base_records is not None else None),
  }
  result = validation_lib.validate(config, cand_metrics, base_metrics)

  reasons = [f'threshold failed: {c.metric} [{c.slice}] ({c.kind}): '
             f'{c.message}' for c in result.failures]
  if not equivalence.ok:
    reasons.append(equivalence.message)
  blessed = not reasons
  message = _blessing_message(blessed, reasons, result, equivalence)

  metrics_doc = metrics_lib.json_safe({
      'format_version': 1,
      'model': {'uri': model_uri, 'spec': spec.to_dict()},
      'baseline': ({'uri': baseline_uri, 'spec': base_spec.to_dict()}
                   if baseline_uri else None),
      'batches': {
          'uri': batches_uri, 'split': split,
          'batch_size': meta['batch_size'], 'num_unroll': meta['num_unroll'],
          'mode': meta.get('mode'), 'label_kind': meta['label_kind'],
          'num_batches': meta.get('num_batches'),
          'num_sequences': meta.get('num_sequences'),
      },
      'task': spec.task,
      'primary_metric': settings.primary,
      'metric_names': settings.metric_names(),
      'slices': slices.to_dict(),
      'metrics': {'candidate': cand_metrics, 'baseline': base_metrics},
      'by_position': positions,
      'eval_config': config.to_dict(),
      'seconds': clock() - started,
  })
  validation_doc = metrics_lib.json_safe({
      'blessed': blessed,
      'reasons': reasons,
      'message': message,
      'thresholds': result.to_dict(),
      'equivalence': equivalence.to_dict(),
  })
  return EvaluationOutcome(blessed=blessed, reasons=reasons, message=message,
                           metrics=metrics_doc, validation=validation_doc)


def _blessing_message(blessed: bool, reasons: List[str],
                      result: validation_lib.ValidationResult,
                      equivalence: equivalence_lib.EquivalenceResult) -> str:
  n = len(result.checks)
  stamp = (' No baseline model: change thresholds were not checked (rubber '
           'stamp).' if result.rubber_stamped else '')
  if blessed:
    return (f'Blessed: {n} threshold check(s) passed; '
            f'{equivalence.message}.{stamp}')
  return 'Not blessed: ' + ' | '.join(reasons) + stamp


def write_outputs(outcome: EvaluationOutcome, output_dir: str) -> Dict[str,
                                                                         str]:
  """Writes ``metrics.json``, ``validation.json`` and ``report.html``.

  Returns:
    ``{file name: path}``.
  """
  tf.io.gfile.makedirs(output_dir)
  paths = {}
  for name, doc in ((METRICS_FILE, outcome.metrics),
                    (VALIDATION_FILE, outcome.validation)):
    paths[name] = os.path.join(output_dir, name)
    with tf.io.gfile.GFile(paths[name], 'w') as f:
      f.write(json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) +
              '\n')
  paths[REPORT_FILE] = os.path.join(output_dir, REPORT_FILE)
  with tf.io.gfile.GFile(paths[REPORT_FILE], 'w') as f:
    f.write(report_lib.render(outcome.metrics, outcome.validation))
  return paths

