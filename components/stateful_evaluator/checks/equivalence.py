"""The chunking equivalence check. TensorFlow, no TFX.

Takes a sample of eval sequences (those spanning several segments first),
puts each one back together from its segments, runs the exported
``serving_default`` signature (or, when the export applies a Transform graph
to raw features, ``serving_transformed`` or the non-stateful twin) on the
whole sequences and compares with the chunked outputs. A model whose state
handling differs between chunked and whole-sequence execution (e.g. a layer
that drops its context at chunk boundaries) shows a difference and is not
blessed.

Shapes: N sequences, L steps, F features, K outputs per step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from components.stateful_evaluator import settings as settings_lib
from components.stateful_evaluator.extraction import chunked as chunked_lib
from components.stateful_evaluator.extraction import models as models_lib

_LOG = logging.getLogger(__name__)


# Outputs the equivalence check reads, first found wins: the raw model
# output of the StatefulTrainer export (regression ``predictions``,
# classification ``logits``).
OUTPUT_KEYS = ('predictions', 'logits')


# Sampled sequences run through the serving signature this many at a time.
_SERVING_BATCH = 16


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
    return models_lib.json_safe(out)


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
  raise models_lib.EvaluationError(
      f'the signature returns {sorted(outputs)}; expected one output or one '
      f'named {" or ".join(repr(k) for k in OUTPUT_KEYS)}')


class ServedModel:
  """A SavedModel loaded the way TF Serving runs it: its MetaGraph (tag
  ``serve``) imported into a graph of its own and its SignatureDefs run in a
  session, not re-traced as Python functions (``tf.saved_model.load`` took
  2.7 s of the check on the bundled sample's model, this 1.8 s; BENCHMARKS
  section 5). The session runs with grappler's arithmetic rewrite off, as
  the chunked pass does (``steps.exact_arithmetic``): the check compares
  how state is carried, not that rewrite's rounding, which flips threshold
  features. Close it when done (or use it as a context manager).
  """

  def __init__(self, serving_dir: str):
    if not tf.io.gfile.exists(serving_dir):
      raise models_lib.EvaluationError(f'no SavedModel at {serving_dir}')
    self._graph = tf.Graph()
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.arithmetic_optimization = (
        rewriter_config_pb2.RewriterConfig.OFF)
    self._session = tf.compat.v1.Session(graph=self._graph, config=config)
    with self._graph.as_default():
      meta_graph = tf.compat.v1.saved_model.loader.load(
          self._session, [tf.saved_model.SERVING], serving_dir)
    self._signatures = dict(meta_graph.signature_def)
    self._signatures.pop('__saved_model_init_op', None)
    root = (meta_graph.object_graph_def.nodes[0]
            if meta_graph.object_graph_def.nodes else None)
    self._children = {c.local_name for c in root.children} if root else set()

  @property
  def signatures(self) -> List[str]:
    return sorted(self._signatures)

  def has_child(self, name: str) -> bool:
    """Whether the exported root object has an attribute ``name``."""
    return name in self._children

  def runner(self, name: str) -> Callable[[np.ndarray, np.ndarray],
                                           np.ndarray]:
    """``(features, lengths) -> output`` through signature ``name``, checked
    (inputs exactly ``features`` float32[N, L, F] and ``lengths`` int[N])."""
    if name not in self._signatures:
      raise models_lib.EvaluationError(
          f'the SavedModel has no signature {name!r} (it has '
          f'{self.signatures})')
    sig = self._signatures[name]
    if set(sig.inputs) != {'features', 'lengths'}:
      raise models_lib.EvaluationError(
          f'signature {name!r} takes {sorted(sig.inputs)}; the check needs '
          "exactly 'features' float32[N, L, F] and 'lengths' int[N]")
    fetch = {k: v.name for k, v in sig.outputs.items()}
    inputs = {k: (v.name, tf.as_dtype(v.dtype).as_numpy_dtype)
              for k, v in sig.inputs.items()}

    def run(features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
      feed = {inputs['features'][0]: features.astype(inputs['features'][1]),
              inputs['lengths'][0]: lengths.astype(inputs['lengths'][1])}
      return np.asarray(_pick_output(self._session.run(fetch, feed)))

    return run

  def close(self) -> None:
    self._session.close()

  def __enter__(self) -> 'ServedModel':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# The StatefulTrainer's whole-sequence signature on already-transformed
# features (see components/stateful_trainer/export.py).
TRANSFORMED_SIGNATURE = 'serving_transformed'


def embeds_transform(served: ServedModel) -> bool:
  """Whether a StatefulTrainer SavedModel applies a Transform graph to its
  ``features`` input (its module then has a ``transform`` child)."""
  return served.has_child('transform')


def _padded(group: List[chunked_lib.SampledSequence]) -> Tuple[np.ndarray, np.ndarray]:
  """float32[N, L_max, F] zero-padded features and int64[N] lengths."""
  lmax = max(s.length for s in group)
  feats = np.zeros((len(group), lmax, group[0].features.shape[1]), np.float32)
  for i, s in enumerate(group):
    feats[i, :s.length] = s.features
  return feats, np.array([s.length for s in group], np.int64)


def split_outputs(out: np.ndarray, group: List[chunked_lib.SampledSequence],
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
  raise models_lib.EvaluationError(
      f'the whole-sequence model returned shape {list(out.shape)} for {n} '
      f'sequences of up to {lmax} steps; expected [N, L, {k}] (per step) or '
      f'[N, {k}] (per sequence)')


def twin_runner(twin: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  """``(features, lengths) -> float32[N, L, K]`` through the Keras twin."""

  def run(features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    del lengths  # Causal: padding after a sequence does not change it.
    return twin(tf.constant(features), training=False).numpy()

  return run


def compare_sequence(sample: chunked_lib.SampledSequence, compared: str,
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


@dataclasses.dataclass
class Reference:
  """The whole-sequence model the check runs, as chosen and loaded.

  Attributes:
    runner: ``(features, lengths) -> output``; None when the serving twin is
      needed (built later with the trained weights, by ``twin_factory``).
    name: what is run, e.g. ``signature serving_default``.
    note: why this reference was chosen, when ``auto`` had to choose.
    served: the loaded SavedModel, if one was loaded (closed by ``close``).
  """
  runner: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]]
  name: str
  note: Optional[str] = None
  served: Optional[ServedModel] = None

  def close(self) -> None:
    if self.served is not None:
      self.served.close()


def load_reference(serving_dir: Optional[str],
                   config: settings_lib.StatefulSettings,
                   num_features: Optional[int] = None) -> Reference:
  """Chooses and loads the reference per ``config.equivalence_reference``.

  Needs no eval data, so the evaluator runs it beside the chunked pass (the
  SavedModel's load is most of the check's time). With ``num_features``,
  the chosen signature is run once on one zero step, so that its first real
  call does not pay the session's graph optimisation; a failure there is
  left for the real call to report.
  """
  choice = config.equivalence_reference
  name = config.serving_signature
  if choice not in (settings_lib.AUTO, settings_lib.SIGNATURE):
    return Reference(runner=None, name='serving twin')
  if not serving_dir:
    raise models_lib.EvaluationError('the model has no serving SavedModel')
  served = ServedModel(serving_dir)
  try:
    run = served.runner(name)  # Checked even when another one runs.
    reference = Reference(runner=run, name=f'signature {name}', served=served)
    if choice == settings_lib.AUTO and embeds_transform(served):
      if TRANSFORMED_SIGNATURE in served.signatures:
        reference = Reference(
            runner=served.runner(TRANSFORMED_SIGNATURE),
            name=f'signature {TRANSFORMED_SIGNATURE}', served=served,
            note=(f'signature {name!r} applies the Transform graph to raw '
                  'features and the eval batches hold transformed features, '
                  f'so the check ran {TRANSFORMED_SIGNATURE!r}: the same '
                  'exported graph without the transform'))
      else:
        served.close()
        return Reference(
            runner=None, name='serving twin',
            note=(f'signature {name!r} applies the Transform graph to raw '
                  'features and the eval batches hold transformed features, '
                  'so the check ran the serving twin (the Keras model inside '
                  'that signature) instead'))
  except Exception:
    served.close()
    raise
  if num_features:
    try:
      reference.runner(np.zeros((1, 1, num_features), np.float32),
                       np.ones((1,), np.int64))
    except Exception:  # pylint: disable=broad-except
      _LOG.debug('equivalence check: warm-up call failed', exc_info=True)
  return reference


def check_equivalence(serving_dir: Optional[str],
                      samples: List[chunked_lib.SampledSequence], *, num_outputs: int,
                      num_unroll: int, config: settings_lib.StatefulSettings,
                      twin_factory: Optional[Callable[[], Any]] = None,
                      loaded: Optional[Callable[[], Reference]] = None
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
    loaded: returns the reference ``load_reference`` loaded (e.g. a future's
      ``result``; it may raise what the load raised); None: loaded here.

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
    if loaded is not None:  # Loaded beside the chunked pass: close it.
      with contextlib.suppress(Exception):
        loaded().close()
    return failed('no eval sequence to compare')
  try:
    with contextlib.ExitStack() as stack:
      chosen = (loaded() if loaded is not None else
                load_reference(serving_dir, config))
      stack.callback(chosen.close)
      reference, runner = chosen.name, chosen.runner
      if runner is None:
        if twin_factory is None:
          raise models_lib.EvaluationError('no serving twin to compare with')
        runner = twin_runner(twin_factory())
      served, modes = [], set()
      for start in range(0, len(samples), _SERVING_BATCH):
        group = samples[start:start + _SERVING_BATCH]
        mode, outs = split_outputs(runner(*_padded(group)), group,
                                   num_outputs)
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
      sequences=rows, note=chosen.note)

