"""Chunked stateful evaluation, the chunking equivalence check and the
blessing decision. TensorFlow, no TFX.

The evaluation mirrors how the model was trained (docs/design.md, "The state protocol"):

* the trained model is rebuilt **stateful for the eval batches' batch size**
  (``model_io.load_stateful_model``) and fed the eval split's batches strictly
  in order (``read_batches``), chunk by chunk, its RNN state carried from one
  batch to the next;
* all state is zeroed at the start, and before every batch the state rows of
  lanes whose ``reset`` flag is 1 are zeroed (``steps_lib.predict_batches``,
  i.e. ``state.zero_all`` / ``state.reset_lanes``);
* metrics are computed from the steps with ``label_weight > 0`` only, weighted
  by it (``metrics.py``).

The **chunking equivalence check** takes a sample of eval sequences (those
spanning several segments first), puts each one back together from its
segments, runs the exported ``serving_default`` signature on the whole
sequences and compares with the chunked outputs. A model whose state handling
differs between chunked and whole-sequence execution (e.g. it drops state at
chunk boundaries) shows a difference and is not blessed. When the export
applies a Transform graph to raw features (the batches hold transformed
ones), the non-stateful serving twin inside the signature is run instead
(``EvalConfig.equivalence_reference``).

Shapes: B lanes, T steps per segment, F features, K outputs per step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import logging
import math
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from components.sequence_batcher import reader as sb_reader
from components.stateful_evaluator import config as config_lib
from components.stateful_evaluator import metrics as metrics_lib
from components.stateful_evaluator import report as report_lib
from components.stateful_evaluator import validation as validation_lib
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful import objective as objective_lib
from components.stateful import steps as steps_lib

_LOG = logging.getLogger(__name__)

METRICS_FILE = 'metrics.json'
VALIDATION_FILE = 'validation.json'
REPORT_FILE = 'report.html'

# Outputs the equivalence check reads, first found wins: the raw model
# output of the StatefulTrainer export (regression ``predictions``,
# classification ``logits``).
OUTPUT_KEYS = ('predictions', 'logits')
# Sampled sequences run through the serving signature this many at a time.
_SERVING_BATCH = 16


class EvaluationError(ValueError):
  """The model, the baseline and the batches do not fit together."""


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


@dataclasses.dataclass
class LoadedModel:
  """A trained model rebuilt stateful for the eval batches.

  Attributes:
    uri: the Model artifact URI.
    model: the stateful Keras model, ``features float32[B, T, F] ->
      float32[B, T, K]``.
    spec: its ``ModelSpec`` (with the eval batch size and T).
    module: the model module stored with it (for the optional loss hook).
  """
  uri: str
  model: Any
  spec: ms.ModelSpec
  module: Any


def load_model(model_uri: str, meta: Mapping[str, Any]) -> LoadedModel:
  """Rebuilds ``model_uri`` stateful for the batch size and T of ``meta``."""
  model, spec = model_io.load_stateful_model(
      model_uri, batch_size=int(meta['batch_size']),
      num_unroll=int(meta['num_unroll']))
  module = model_io.load_module_file(
      os.path.join(model_uri, model_io.STATEFUL_DIR, model_io.MODULE_FILE))
  check_model_fits_batches(spec, meta, what=f'model {model_uri}')
  return LoadedModel(uri=model_uri, model=model, spec=spec, module=module)


def check_model_fits_batches(spec: ms.ModelSpec, meta: Mapping[str, Any],
                             what: str = 'model') -> None:
  """Raises ``EvaluationError`` unless ``spec`` reads these batches."""
  names = list(meta['feature_names'])
  if list(spec.feature_names) != names:
    raise EvaluationError(
        f'{what} was trained on features {list(spec.feature_names)}; the '
        f'eval batches have {names}')
  if spec.label_kind != meta['label_kind']:
    raise EvaluationError(
        f'{what} was trained on {spec.label_kind} labels; the eval batches '
        f'have {meta["label_kind"]} labels')
  if spec.task == ms.CLASSIFICATION and meta.get('label_dtype') != 'int64':
    raise EvaluationError(
        f'{what} is a classifier; the eval batches have '
        f'{meta.get("label_dtype")} labels (class ids must be integers)')


def check_baseline(candidate: ms.ModelSpec, baseline: ms.ModelSpec) -> None:
  """Raises ``EvaluationError`` when the two models' metrics are not
  comparable (different task or output)."""
  if (candidate.task, candidate.output_units) != (baseline.task,
                                                  baseline.output_units):
    raise EvaluationError(
        f'the baseline model is a {baseline.task} model with '
        f'{baseline.output_units} outputs; the candidate is a {candidate.task} '
        f'model with {candidate.output_units}: their metrics cannot be '
        'compared')


# --------------------------------------------------------------------------
# Sampling whole sequences for the equivalence check
# --------------------------------------------------------------------------


@dataclasses.dataclass
class SampledSequence:
  """One sampled sequence, put back together from its segments.

  Attributes:
    key: the sequence key.
    length: L.
    features: float32[L, F], as in the batches.
    chunked: float32[L, K], the chunked stateful outputs.
  """
  key: str
  length: int
  features: np.ndarray
  chunked: np.ndarray


class SequenceSampler:
  """Keeps the segments of a bottom-k sample of sequences, in one pass.

  A sequence's priority is decided when its first segment arrives: sequences
  with more than one segment (the ones where state is carried) come before
  single-segment ones, then a seeded hash of the key. The sample is the
  ``size`` highest-priority sequences, whatever the batch order.
  """

  def __init__(self, size: int, seed: int, num_unroll: int):
    self._size = int(size)
    self._seed = int(seed)
    self._unroll = int(num_unroll)
    self._heap: List[Tuple[int, str]] = []  # (-rank, key): worst on top.
    self._lengths: Dict[str, int] = {}
    self._segments: Dict[str, Dict[int, Tuple[np.ndarray, np.ndarray]]] = {}

  def _rank(self, key: str, length: int) -> int:
    digest = hashlib.blake2b(key.encode('utf-8'), digest_size=8,
                             key=str(self._seed).encode()).digest()
    single = int(-(-length // self._unroll) <= 1)
    return (single << 64) | int.from_bytes(digest, 'big')

  def offer(self, key: str, length: int) -> None:
    """Called on a sequence's first segment: keep it if it ranks high."""
    if key in self._lengths:
      raise EvaluationError(f'sequence {key!r} starts twice in the split')
    rank = self._rank(key, length)
    if len(self._heap) < self._size:
      heapq.heappush(self._heap, (-rank, key))
    elif rank < -self._heap[0][0]:
      _, evicted = heapq.heapreplace(self._heap, (-rank, key))
      del self._lengths[evicted]
      del self._segments[evicted]
    else:
      return
    self._lengths[key] = int(length)
    self._segments[key] = {}

  def wants(self, key: str) -> bool:
    return key in self._lengths

  def add(self, key: str, segment_index: int, features: np.ndarray,
          outputs: np.ndarray) -> None:
    """Stores segment ``segment_index`` (features [T, F], outputs [T, K])."""
    self._segments[key][int(segment_index)] = (np.array(features),
                                               np.array(outputs))

  def sequences(self) -> List[SampledSequence]:
    """The sampled sequences, longest first (then by key)."""
    out = []
    for key, length in self._lengths.items():
      segs = self._segments[key]
      need = -(-length // self._unroll)
      if sorted(segs) != list(range(need)):
        raise EvaluationError(
            f'sequence {key!r} (length {length}) should have segments '
            f'0..{need - 1} in the batches; found {sorted(segs)}')
      feats = np.concatenate([segs[k][0] for k in range(need)])[:length]
      outs = np.concatenate([segs[k][1] for k in range(need)])[:length]
      out.append(SampledSequence(key=key, length=length, features=feats,
                                 chunked=outs))
    out.sort(key=lambda s: (-s.length, s.key))
    return out


# --------------------------------------------------------------------------
# The chunked stateful pass
# --------------------------------------------------------------------------


def _decode(key) -> str:
  return key.decode('utf-8') if isinstance(key, bytes) else str(key)


def run_chunked(loaded: LoadedModel, dataset: tf.data.Dataset,
                objective: objective_lib.Objective,
                sampler: Optional[SequenceSampler] = None
               ) -> metrics_lib.StepRecords:
  """Runs the model over the batches in order, state carried; collects the
  labelled steps.

  Args:
    loaded: the stateful model (state is zeroed first).
    dataset: ``read_batches`` of the eval split, in order.
    objective: gives the per-step loss of the outputs.
    sampler: optional; receives the segments of sampled sequences.

  Returns:
    ``StepRecords`` of every step with ``label_weight > 0``.
  """
  spec = loaded.spec
  unroll = int(spec.num_unroll)
  parts = {name: [] for name in ('labels', 'outputs', 'weights', 'losses',
                                 'sequence_ids', 'sequence_lengths',
                                 'segment_index', 'position')}
  key_ids: Dict[str, int] = {}
  steps = np.arange(unroll, dtype=np.int64)
  for batch, outputs in steps_lib.predict_batches(loaded.model, dataset):
    weight = batch['label_weight']
    lanes, times = np.nonzero(weight > 0)
    _check_labels(batch['labels'][lanes, times], spec)
    losses = objective.per_step_loss(tf.constant(batch['labels']),
                                     tf.constant(outputs)).numpy()
    keys = [_decode(k) for k in batch['key']]
    seg = batch['segment_index']
    if sampler is not None:
      for lane, key in enumerate(keys):
        if not key or seg[lane] < 0:
          continue
        if seg[lane] == 0:
          sampler.offer(key, int(batch['sequence_length'][lane]))
        if sampler.wants(key):
          sampler.add(key, int(seg[lane]), batch['features'][lane],
                      outputs[lane])
    if lanes.size == 0:
      continue
    ids = np.array([key_ids.setdefault(keys[i], len(key_ids)) for i in lanes],
                   np.int64)
    parts['labels'].append(batch['labels'][lanes, times])
    parts['outputs'].append(outputs[lanes, times].astype(np.float32))
    parts['weights'].append(weight[lanes, times].astype(np.float32))
    parts['losses'].append(losses[lanes, times].astype(np.float32))
    parts['sequence_ids'].append(ids)
    parts['sequence_lengths'].append(batch['sequence_length'][lanes])
    parts['segment_index'].append(seg[lanes])
    parts['position'].append(seg[lanes] * unroll + steps[times])
  if not parts['weights']:
    raise EvaluationError('the eval split has no labelled step '
                          '(label_weight is 0 everywhere)')
  arrays = {k: np.concatenate(v) for k, v in parts.items()}
  return metrics_lib.StepRecords(sequence_keys=list(key_ids), **arrays)


def _check_labels(labels: np.ndarray, spec: ms.ModelSpec) -> None:
  """Raises ``EvaluationError`` when labelled steps do not fit the task."""
  if labels.size == 0:
    return
  if spec.task == ms.CLASSIFICATION:
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= spec.num_classes:
      raise EvaluationError(
          f'class labels must be in [0, {spec.num_classes}); the eval batches '
          f'have labels in [{lo}, {hi}]')
  elif not np.all(np.isfinite(labels)):
    raise EvaluationError('regression labels contain NaN or infinity')


# --------------------------------------------------------------------------
# The chunking equivalence check
# --------------------------------------------------------------------------


@dataclasses.dataclass
class EquivalenceResult:
  """Chunked stateful outputs vs the whole-sequence model.

  Attributes:
    ok: the check ran and ``max_abs_diff <= tolerance``.
    tolerance: the allowed maximum absolute difference.
    max_abs_diff: the largest difference over every compared value (None
      when the check could not run; NaN when an output was NaN).
    compared: ``per_step`` (every real step) or ``last_step`` (the
      reference returns one prediction per sequence).
    reference: what was run on whole sequences, e.g. ``signature
      serving_default`` or ``serving twin``.
    num_sequences: sequences compared.
    num_multi_segment: of those, sequences spanning several segments.
    num_values: scalar values compared.
    sequences: per sequence: key, length, segments, max_abs_diff and, when
      above tolerance, the first differing step and its segment.
    note: why this reference was chosen, when ``auto`` had to choose.
    error: why the check could not run, if it could not.
  """
  ok: bool
  tolerance: float
  max_abs_diff: Optional[float]
  compared: Optional[str]
  reference: str
  num_sequences: int
  num_multi_segment: int
  num_values: int
  sequences: List[Dict[str, Any]]
  note: Optional[str] = None
  error: Optional[str] = None

  @property
  def message(self) -> str:
    if self.error:
      return (f'the chunking equivalence check could not run: {self.error}')
    if self.ok:
      return (f'chunked stateful outputs match the {self.reference} on '
              f'{self.num_sequences} whole sequences '
              f'({self.num_multi_segment} multi-segment): max |diff| '
              f'{self.max_abs_diff:.3g} <= tolerance {self.tolerance:.3g}')
    worst = max(self.sequences, key=lambda s: _nan_high(s['max_abs_diff']))
    where = ''
    if worst.get('first_bad_step') is not None:
      where = (f', first at step {worst["first_bad_step"]} (segment '
               f'{worst["first_bad_segment"]})')
    return (f'chunked stateful outputs differ from the {self.reference} on '
            f'whole sequences: max |diff| {self.max_abs_diff:.6g} > tolerance '
            f'{self.tolerance:.3g} (worst: sequence {worst["key"]!r}, length '
            f'{worst["length"]}, {worst["segments"]} segments{where}). The '
            'state is not carried across chunks the way the whole-sequence '
            'model carries it.')

  def to_dict(self) -> Dict[str, Any]:
    out = dataclasses.asdict(self)
    out['message'] = self.message
    return _json_safe(out)


def _nan_high(value: Optional[float]) -> float:
  if value is None:
    return -math.inf
  return math.inf if math.isnan(value) else value


def _pick_output(outputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """The raw model output among a signature's outputs."""
  for key in OUTPUT_KEYS:
    if key in outputs:
      return outputs[key]
  if len(outputs) == 1:
    return next(iter(outputs.values()))
  raise EvaluationError(
      f'the signature returns {sorted(outputs)}; expected one output or one '
      f'named {" or ".join(repr(k) for k in OUTPUT_KEYS)}')


def load_signature(serving_dir: str, name: str) -> Tuple[Any, Any]:
  """``(loaded SavedModel, concrete signature function)``, checked."""
  if not tf.io.gfile.exists(serving_dir):
    raise EvaluationError(f'no SavedModel at {serving_dir}')
  loaded = tf.saved_model.load(serving_dir)
  if name not in loaded.signatures:
    raise EvaluationError(f'the SavedModel has no signature {name!r} (it has '
                          f'{sorted(loaded.signatures)})')
  fn = loaded.signatures[name]
  inputs = fn.structured_input_signature[1]
  if set(inputs) != {'features', 'lengths'}:
    raise EvaluationError(
        f'signature {name!r} takes {sorted(inputs)}; the check needs exactly '
        "'features' float32[N, L, F] and 'lengths' int[N]")
  return loaded, fn


# The StatefulTrainer's whole-sequence signature on already-transformed
# features (see components/stateful_trainer/export.py).
TRANSFORMED_SIGNATURE = 'serving_transformed'


def embeds_transform(loaded: Any) -> bool:
  """Whether a StatefulTrainer SavedModel applies a Transform graph to its
  ``features`` input (its module then has a ``transform`` child)."""
  return getattr(loaded, 'transform', None) is not None


def _padded(group: List[SampledSequence]) -> Tuple[np.ndarray, np.ndarray]:
  """float32[N, L_max, F] zero-padded features and int64[N] lengths."""
  lmax = max(s.length for s in group)
  feats = np.zeros((len(group), lmax, group[0].features.shape[1]), np.float32)
  for i, s in enumerate(group):
    feats[i, :s.length] = s.features
  return feats, np.array([s.length for s in group], np.int64)


def split_outputs(out: np.ndarray, group: List[SampledSequence],
                  num_outputs: int) -> Tuple[str, List[np.ndarray]]:
  """Cuts a whole-sequence output for ``group`` into per-sequence arrays.

  Returns:
    ``(compared, outputs)``: ``per_step`` with float[L_i, K] per sequence
    (from [N, L, K], or [N, L] when K = 1), or ``last_step`` with float[K]
    per sequence (from [N, K], or [N] when K = 1).
  """
  out = np.asarray(out, np.float64)
  n, k = len(group), num_outputs
  lmax = max(s.length for s in group)
  if out.ndim == 3 and out.shape == (n, lmax, k):
    return 'per_step', [out[i, :s.length] for i, s in enumerate(group)]
  if out.ndim == 2 and out.shape == (n, k):
    return 'last_step', [out[i] for i in range(n)]
  if k == 1 and out.ndim == 2 and out.shape == (n, lmax):
    return 'per_step', [out[i, :s.length, None] for i, s in enumerate(group)]
  if k == 1 and out.ndim == 1 and out.shape == (n,):
    return 'last_step', [out[i:i + 1] for i in range(n)]
  raise EvaluationError(
      f'the whole-sequence model returned shape {list(out.shape)} for {n} '
      f'sequences of up to {lmax} steps; expected [N, L, {k}] (per step) or '
      f'[N, {k}] (per sequence)')


def signature_runner(fn: Any) -> Callable[[np.ndarray, np.ndarray],
                                          np.ndarray]:
  """``(features, lengths) -> output`` through a serving signature."""
  inputs = fn.structured_input_signature[1]

  def run(features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return _pick_output(fn(
        features=tf.constant(features, inputs['features'].dtype),
        lengths=tf.constant(lengths, inputs['lengths'].dtype))).numpy()

  return run


def twin_runner(twin: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  """``(features, lengths) -> float32[N, L, K]`` through the Keras twin."""

  def run(features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    del lengths  # Causal: padding after a sequence does not change it.
    return twin(tf.constant(features), training=False).numpy()

  return run


def compare_sequence(sample: SampledSequence, compared: str,
                     served: np.ndarray, tolerance: float,
                     num_unroll: int) -> Dict[str, Any]:
  """One sequence's comparison figures (see ``EquivalenceResult``)."""
  chunked = sample.chunked.astype(np.float64)
  if compared == 'last_step':
    diff = np.abs(chunked[sample.length - 1] - served)[None, :]
    step_offset = sample.length - 1
  else:
    diff = np.abs(chunked - served)
    step_offset = 0
  per_step = np.max(diff, axis=1)
  bad = np.flatnonzero(~(per_step <= tolerance))  # NaN counts as bad.
  first = int(bad[0]) + step_offset if bad.size else None
  return {
      'key': sample.key, 'length': sample.length,
      'segments': -(-sample.length // num_unroll),
      'max_abs_diff': (math.nan if np.isnan(per_step).any() else
                       float(per_step.max())),
      'num_values': int(diff.size),
      'first_bad_step': first,
      'first_bad_segment': (first // num_unroll if first is not None else
                            None),
  }


def _choose_reference(serving_dir: Optional[str],
                      config: config_lib.EvalConfig,
                      twin_factory: Optional[Callable[[], Any]]
                     ) -> Tuple[Callable[[np.ndarray, np.ndarray], np.ndarray],
                                str, Optional[str]]:
  """``(runner, reference name, note)`` per ``config.equivalence_reference``."""
  choice = config.equivalence_reference
  name = config.serving_signature
  note = None
  if choice in (config_lib.AUTO, config_lib.SIGNATURE):
    if not serving_dir:
      raise EvaluationError('the model has no serving SavedModel')
    loaded, fn = load_signature(serving_dir, name)
    if choice == config_lib.SIGNATURE or not embeds_transform(loaded):
      return signature_runner(fn), f'signature {name}', None
    if TRANSFORMED_SIGNATURE in loaded.signatures:
      _, fn = load_signature(serving_dir, TRANSFORMED_SIGNATURE)
      note = (f'signature {name!r} applies the Transform graph to raw '
              'features and the eval batches hold transformed features, so '
              f'the check ran {TRANSFORMED_SIGNATURE!r}: the same exported '
              'graph without the transform')
      return (signature_runner(fn), f'signature {TRANSFORMED_SIGNATURE}',
              note)
    note = (f'signature {name!r} applies the Transform graph to raw '
            'features and the eval batches hold transformed features, so '
            'the check ran the serving twin (the Keras model inside that '
            'signature) instead')
  if twin_factory is None:
    raise EvaluationError('no serving twin to compare with')
  return twin_runner(twin_factory()), 'serving twin', note


def check_equivalence(serving_dir: Optional[str],
                      samples: List[SampledSequence], *, num_outputs: int,
                      num_unroll: int, config: config_lib.EvalConfig,
                      twin_factory: Optional[Callable[[], Any]] = None
                     ) -> EquivalenceResult:
  """Compares the chunked outputs of ``samples`` with the whole-sequence
  model (see ``EvalConfig.equivalence_reference``).

  Args:
    serving_dir: the exported SavedModel, or None.
    samples: sequences with their chunked outputs.
    num_outputs: K.
    num_unroll: T of the chunks.
    config: tolerance, signature and reference.
    twin_factory: builds the non-stateful serving twin with the trained
      weights (for the ``twin`` reference).

  Never raises for a bad or missing model: the result then has ``ok=False``
  and the reason in ``error`` (the model will not be blessed).
  """
  tol = config.equivalence_tolerance
  multi = sum(1 for s in samples if s.length > num_unroll)
  reference = config.equivalence_reference

  def failed(error: str) -> EquivalenceResult:
    return EquivalenceResult(
        ok=False, tolerance=tol, max_abs_diff=None, compared=None,
        reference=reference, num_sequences=len(samples),
        num_multi_segment=multi, num_values=0, sequences=[], error=error)

  if not samples:
    return failed('no eval sequence to compare')
  try:
    runner, reference, note = _choose_reference(serving_dir, config,
                                                twin_factory)
    served, modes = [], set()
    for start in range(0, len(samples), _SERVING_BATCH):
      group = samples[start:start + _SERVING_BATCH]
      mode, outs = split_outputs(runner(*_padded(group)), group, num_outputs)
      modes.add(mode)
      served.extend(outs)
  except Exception as e:  # pylint: disable=broad-except
    _LOG.exception('equivalence check: cannot run the %s reference (%s)',
                   reference, serving_dir)
    return failed(f'{type(e).__name__}: {e}')
  compared = modes.pop()
  rows = [compare_sequence(s, compared, out, tol, num_unroll)
          for s, out in zip(samples, served)]
  diffs = [r['max_abs_diff'] for r in rows]
  worst = math.nan if any(math.isnan(d) for d in diffs) else max(diffs)
  return EquivalenceResult(
      ok=bool(worst <= tol), tolerance=tol, max_abs_diff=float(worst),
      compared=compared, reference=reference, num_sequences=len(samples),
      num_multi_segment=multi, num_values=sum(r['num_values'] for r in rows),
      sequences=rows, note=note)


# --------------------------------------------------------------------------
# The whole evaluation
# --------------------------------------------------------------------------


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


def _json_safe(value: Any) -> Any:
  """NaN/inf as strings (JSON has neither), numpy scalars as Python."""
  if isinstance(value, dict):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if isinstance(value, (np.floating, float)):
    value = float(value)
    return value if math.isfinite(value) else str(value)
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  return value


def _evaluate_one(loaded: LoadedModel, batches_uri: str, split: str,
                  objective: objective_lib.Objective,
                  sampler: Optional[SequenceSampler]
                 ) -> metrics_lib.StepRecords:
  dataset = sb_reader.read_batches(batches_uri, split)
  return run_chunked(loaded, dataset, objective, sampler)


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
  candidate = load_model(model_uri, meta)
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
  sampler = SequenceSampler(config.equivalence_sample_size,
                            config.equivalence_seed, spec.num_unroll)
  records = _evaluate_one(candidate, batches_uri, split, objective, sampler)
  eval_seconds = clock() - started
  _LOG.info('chunked evaluation of %s: %d labelled steps of %d sequences in '
            '%.1fs', model_uri, len(records), len(records.sequence_keys),
            eval_seconds)
  equivalence = check_equivalence(
      serving_dir, sampler.sequences(), num_outputs=spec.output_units,
      num_unroll=spec.num_unroll, config=config,
      twin_factory=lambda: model_io.build_serving(
          candidate.module, spec, weights_from=candidate.model))
  _LOG.info('equivalence check: %s', equivalence.message)

  base_records = None
  base_spec = None
  if baseline_uri:
    baseline = load_model(baseline_uri, meta)
    base_spec = baseline.spec
    check_baseline(spec, base_spec)
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

  metrics_doc = _json_safe({
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
  validation_doc = _json_safe({
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
                      equivalence: EquivalenceResult) -> str:
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
