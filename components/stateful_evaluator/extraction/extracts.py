"""Stateful inference as the evaluation's extractor stage. TensorFlow, no TFX.

TFMA cannot run a stateful model: the predictions must come from one chunked
pass over the eval split in lane order, the state carried from batch to
batch and zeroed where a lane starts a sequence (docs/design.md, "The state
protocol"). ``write_extracts`` makes that pass (the candidate and, when there
is one, the baseline, side by side on the same batches) and streams one
``tf.Example`` per sequence into a TFRecord file that TFMA reads as
model-agnostic input (labels and predictions are features):

* ``key`` (bytes), ``length`` (int), ``length_bucket`` (bytes: the
  power-of-two bin of the length, ``"64-127"``), ``weight`` (float);
* ``label``: the sequence's label (``per_sequence``) or the labels of its
  labelled steps in order (``per_step``);
* ``prediction``, ``baseline_prediction``: class probabilities at the last
  real step (classification, ``per_sequence``) or the outputs at the labelled
  steps (regression); the baseline's only when there is a baseline;
* ``no_skill_prediction``: the majority class of the training labels (one-hot)
  or their mean; ``last_value_prediction`` (per-step regression only): the
  previous labelled step's label (the last observed value; the training mean
  on a sequence's first labelled step).

``per_step`` classification writes one example per group of a sequence's
labelled steps with the same label and the same arg-max class (and, with a
baseline, the same baseline arg-max): ``weight`` is the sum of the group's
step weights, ``steps`` its number of steps, ``prediction`` (and
``baseline_prediction``) the weight-averaged class probabilities of its
steps. A TFMA example holds one class-probability vector, and one example
per step made TFMA's cost grow with every labelled step (BENCHMARKS §5);
grouped, a stream costs about (classes seen) x (classes predicted) examples
per sequence. Weighted metrics that count arg-max outcomes are exact over
the groups: the set of probability vectors whose arg-max is class j is
convex, so a group's mean has the arg-max of its steps, and accuracy, the
confusion matrix and top-1 recall and precision per class equal their
per-step values. Metrics of the probabilities themselves (cross-entropy,
AUC) would be of the group means, so ``tfma_config.default_eval_config``
leaves them out for per-step classification. The no-skill gate's paired
test (``observe``) sees every step. A sequence is written when
its last step has been seen, so memory holds at most one open sequence per
lane, whatever the size of the split.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf

from components.sequence_batcher import reader as sb_reader
from components.stateful import batches as batches_lib
from components.stateful import model_spec as ms
from components.stateful.state import protocol as state
from components.stateful import steps as steps_lib
from components.stateful_evaluator.extraction import chunked as chunked_lib
from components.stateful_evaluator.extraction import models as models_lib

_LOG = logging.getLogger(__name__)

EXTRACTS_FILE = 'extracts.tfrecord.gz'

LABEL = 'label'
WEIGHT = 'weight'
PREDICTION = 'prediction'
BASELINE_PREDICTION = 'baseline_prediction'
NO_SKILL_PREDICTION = 'no_skill_prediction'
LAST_VALUE_PREDICTION = 'last_value_prediction'
KEY = 'key'
LENGTH = 'length'
LENGTH_BUCKET = 'length_bucket'
STEPS = 'steps'


def length_bucket(length: int) -> str:
  """The power-of-two bin of a length: ``"1-1"``, ``"2-3"``, ``"4-7"``..."""
  lo = 1 << (max(1, int(length)).bit_length() - 1)
  return f'{lo}-{2 * lo - 1}'


@dataclasses.dataclass(frozen=True)
class NoSkill:
  """The no-skill predictors, fitted on the training labels.

  Attributes:
    task: the model's task.
    num_classes: classes (classification).
    majority: the most frequent training class (ties: the smallest id).
    mean: the mean training label (regression).
    source: where the labels came from (for the report).
  """
  task: str
  num_classes: Optional[int]
  majority: Optional[int]
  mean: Optional[float]
  source: str

  @classmethod
  def from_batches(cls, batches_uri: str, split: str,
                   spec: ms.ModelSpec) -> 'NoSkill':
    """From the label statistics of ``split`` (the training split) that the
    SequenceBatcher recorded with its batches
    (``batches.label_statistics``)."""
    stats = batches_lib.label_statistics(
        batches_lib.BatchSource.open(batches_uri, split))
    n = int(stats['count'])
    if n == 0:
      raise models_lib.EvaluationError(
          f'the {split!r} split of {batches_uri} has no labelled step: no '
          'no-skill predictor can be fitted')
    source = f'{n} labelled steps of the {split!r} split'
    if spec.task == ms.CLASSIFICATION:
      if stats['class_counts'] is None:
        raise models_lib.EvaluationError(
            f'the labels of the {split!r} split of {batches_uri} are not '
            f'class ids (integers from 0; they are in [{stats["min"]:g}, '
            f'{stats["max"]:g}]): no majority class')
      counts = np.zeros(spec.num_classes, np.int64)
      recorded = np.asarray(stats['class_counts'][:spec.num_classes],
                            np.int64)
      counts[:recorded.size] = recorded
      return cls(task=spec.task, num_classes=spec.num_classes,
                 majority=int(np.argmax(counts)), mean=None, source=source)
    return cls(task=spec.task, num_classes=None, majority=None,
               mean=float(stats['mean']), source=source)

  def describe(self) -> str:
    if self.task == ms.CLASSIFICATION:
      return f'majority class {self.majority} ({self.source})'
    return f'training mean {self.mean:.6g} ({self.source})'


def _floats(values) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(
      value=np.asarray(values, np.float32).ravel()))


def _ints(values) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(
      value=np.asarray(values, np.int64).ravel()))


def _bytes(value: str) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[value.encode('utf-8')]))


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def _groups(labels: np.ndarray, probs: np.ndarray,
            base_probs: Optional[np.ndarray], per_step: bool):
  """(label, row indices) of each group of steps with the same label and
  arg-max classes (see the module docstring), in order of first step; one
  group per step unless ``per_step``."""
  if not per_step:
    return [(int(labels[i]), np.asarray([i])) for i in range(labels.size)]
  cols = [labels.astype(np.int64), np.argmax(probs, axis=-1)]
  if base_probs is not None:
    cols.append(np.argmax(base_probs, axis=-1))
  keys = np.stack(cols, axis=1)
  _, first, inverse = np.unique(keys, axis=0, return_index=True,
                                return_inverse=True)
  inverse = inverse.reshape(-1)
  out = []
  for g in np.argsort(first, kind='stable'):
    rows = np.flatnonzero(inverse == g)
    out.append((int(labels[rows[0]]), rows))
  return out


def _mean(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """The weight-averaged rows of ``probs`` (plain mean if the weights sum
  to 0)."""
  total = weights.sum()
  if total <= 0:
    return probs.astype(np.float64).mean(axis=0)
  return (probs.astype(np.float64) * weights[:, None]).sum(axis=0) / total


@dataclasses.dataclass
class _Open:
  """The labelled steps seen so far of one lane's current sequence."""
  key: str
  length: int
  labels: List[np.ndarray] = dataclasses.field(default_factory=list)
  weights: List[np.ndarray] = dataclasses.field(default_factory=list)
  outputs: List[np.ndarray] = dataclasses.field(default_factory=list)
  base: List[np.ndarray] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ExtractStats:
  """What the pass wrote."""
  path: str
  examples: int
  sequences: int
  labelled_steps: int
  batches: int
  seconds: float


class _Writer:
  """Turns finished sequences into examples (see the module docstring)."""

  def __init__(self, path: str, spec: ms.ModelSpec, no_skill: NoSkill,
               with_baseline: bool,
               observe: Optional[Callable[[Dict[str, np.ndarray]], None]]
               = None,
               on_record: Optional[Callable[[bytes], None]] = None):
    self._file = tf.io.TFRecordWriter(
        path, options=tf.io.TFRecordOptions(compression_type='GZIP'))
    self._spec = spec
    self._no_skill = no_skill
    self._baseline = with_baseline
    self._observe = observe
    self._on_record = on_record
    self.examples = self.sequences = self.steps = 0

  def _write(self, features: Dict[str, tf.train.Feature]) -> None:
    record = tf.train.Example(features=tf.train.Features(
        feature=features)).SerializeToString()
    self._file.write(record)
    if self._on_record is not None:
      self._on_record(record)
    self.examples += 1

  def finish(self, seq: _Open) -> None:
    if not seq.labels:
      return
    self.sequences += 1
    labels = np.concatenate(seq.labels)
    weights = np.concatenate(seq.weights)
    outputs = np.concatenate(seq.outputs)
    base = np.concatenate(seq.base) if self._baseline else None
    self.steps += int(labels.size)
    common = {KEY: _bytes(seq.key), LENGTH: _ints([seq.length]),
              LENGTH_BUCKET: _bytes(length_bucket(seq.length))}
    spec, ns = self._spec, self._no_skill
    if spec.task == ms.CLASSIFICATION:
      one_hot = np.eye(spec.num_classes, dtype=np.float32)[ns.majority]
      probs = _softmax(outputs)
      base_probs = _softmax(base) if base is not None else None
      per_step = spec.label_kind == ms.PER_STEP
      picked = (np.arange(labels.size) if per_step
                else np.asarray([labels.size - 1]))
      if self._observe is not None:
        self._observe({LABEL: labels[picked], WEIGHT: weights[picked],
                       PREDICTION: probs[picked],
                       NO_SKILL_PREDICTION: np.tile(one_hot,
                                                    (picked.size, 1))})
      for label, rows in _groups(labels[picked], probs[picked],
                                 None if base_probs is None
                                 else base_probs[picked], per_step):
        rows = picked[rows]
        w = weights[rows].astype(np.float64)
        feats = dict(common)
        feats.update({LABEL: _ints([label]),
                      WEIGHT: _floats([w.sum()]),
                      STEPS: _ints([rows.size]),
                      PREDICTION: _floats(_mean(probs[rows], w)),
                      NO_SKILL_PREDICTION: _floats(one_hot)})
        if base_probs is not None:
          feats[BASELINE_PREDICTION] = _floats(_mean(base_probs[rows], w))
        self._write(feats)
      return
    values = labels.astype(np.float64)
    feats = dict(common)
    feats.update({LABEL: _floats(values), WEIGHT: _floats(weights),
                  PREDICTION: _floats(outputs[:, 0]),
                  NO_SKILL_PREDICTION: _floats(np.full(values.size, ns.mean))})
    if base is not None:
      feats[BASELINE_PREDICTION] = _floats(base[:, 0])
    scored = {LABEL: values, WEIGHT: weights, PREDICTION: outputs[:, 0],
              NO_SKILL_PREDICTION: np.full(values.size, ns.mean)}
    if spec.label_kind == ms.PER_STEP:
      scored[LAST_VALUE_PREDICTION] = np.concatenate([[ns.mean],
                                                      values[:-1]])
      feats[LAST_VALUE_PREDICTION] = _floats(scored[LAST_VALUE_PREDICTION])
    if self._observe is not None:
      self._observe(scored)
    self._write(feats)

  def close(self) -> None:
    self._file.close()


def write_extracts(candidate: models_lib.LoadedModel,
                   baseline: Optional[models_lib.LoadedModel],
                   batches_uri: str, split: str, no_skill: NoSkill,
                   output_dir: str,
                   sampler: Optional[chunked_lib.SequenceSampler] = None,
                   log_every: int = 1000,
                   observe: Optional[Callable[[Dict[str, np.ndarray]], None]]
                   = None,
                   on_record: Optional[Callable[[bytes], None]] = None
                  ) -> ExtractStats:
  """The chunked pass over ``split``; see the module docstring.

  Args:
    candidate: the candidate model, rebuilt stateful for the batches.
    baseline: the baseline model (same batches), or None.
    batches_uri: the SequenceBatches URI.
    split: the split to evaluate.
    no_skill: the no-skill predictors.
    output_dir: where ``EXTRACTS_FILE`` goes.
    sampler: optional; receives the candidate's segments of the sampled
      sequences (for the chunked == whole check).
    log_every: a progress line every this many batches.
    observe: optional; called once per finished sequence with what its
      examples hold, as arrays over its labelled (scored) steps in order:
      ``label`` [n], ``weight`` [n], ``prediction`` and
      ``no_skill_prediction`` ([n, K] probabilities or [n] values) and, for
      per-step regression, ``last_value_prediction`` (the no-skill gate's
      paired test reads them here, without reading the file back).
    on_record: optional; called with each serialized example as it is
      written (TFMA in process reads them there, beside the pass).

  Returns:
    ``ExtractStats``.
  """
  spec = candidate.spec
  tf.io.gfile.makedirs(output_dir)
  path = os.path.join(output_dir, EXTRACTS_FILE)
  writer = _Writer(path, spec, no_skill, baseline is not None, observe,
                   on_record)
  cand_steps = steps_lib.compile_steps(candidate.model, None, None)
  base_steps = (steps_lib.compile_steps(baseline.model, None, None)
                if baseline is not None else None)
  if baseline is not None:
    state.zero_all(baseline.model)
  open_seqs: Dict[int, _Open] = {}
  started = time.monotonic()
  n_batches = 0
  try:
    for batch, outputs in steps_lib.predict_batches(
        candidate.model, sb_reader.read_batches(batches_uri, split),
        steps=cand_steps):
      if base_steps is not None:
        base_out = base_steps.predict(tf.constant(batch['features']),
                                      tf.constant(batch['reset'])).numpy()
      n_batches += 1
      _consume(batch, outputs, base_out if base_steps is not None else None,
               spec, open_seqs, writer, sampler)
      if log_every and n_batches % log_every == 0:
        elapsed = max(time.monotonic() - started, 1e-9)
        _LOG.info('chunked evaluation: %d batches, %d sequences (%.0f '
                  'batches/s)', n_batches, writer.sequences,
                  n_batches / elapsed)
    for lane in sorted(open_seqs):
      writer.finish(open_seqs.pop(lane))
  finally:
    writer.close()
  if writer.examples == 0:
    raise models_lib.EvaluationError(
        f'the {split!r} split has no labelled step (label_weight is 0 '
        'everywhere)')
  return ExtractStats(path=path, examples=writer.examples,
                      sequences=writer.sequences,
                      labelled_steps=writer.steps, batches=n_batches,
                      seconds=time.monotonic() - started)


def _consume(batch, outputs, base_out, spec, open_seqs, writer,
             sampler) -> None:
  """Adds one batch's pieces (``batches.lane_pieces``) to their open
  sequences; finishes the ones whose last step is in this batch."""
  weight = batch['label_weight']
  for piece in batches_lib.lane_pieces(batch, int(spec.num_unroll)):
    lane, key, length = piece.lane, piece.key, piece.length
    if not key:
      continue
    if piece.starts:
      if lane in open_seqs:
        writer.finish(open_seqs.pop(lane))
      open_seqs[lane] = _Open(key=key, length=length)
      if sampler is not None:
        sampler.offer(key, length)
    current = open_seqs.get(lane)
    if current is None or current.key != key:
      raise models_lib.EvaluationError(
          f'lane {lane}: step {piece.first_step} of sequence {key!r} '
          'arrives without its first step (the batches are not in lane '
          'order)')
    steps = slice(piece.lo, piece.hi)
    if sampler is not None and sampler.wants(key):
      sampler.add(key, piece.first_step, batch['features'][lane, steps],
                  outputs[lane, steps])
    times = piece.lo + np.nonzero(weight[lane, steps] > 0)[0]
    if times.size:
      labels = batch['labels'][lane, times]
      chunked_lib.check_labels(labels, spec)
      current.labels.append(labels)
      current.weights.append(weight[lane, times].astype(np.float32))
      current.outputs.append(outputs[lane, times].astype(np.float32))
      if base_out is not None:
        current.base.append(base_out[lane, times].astype(np.float32))
    if piece.ends:
      writer.finish(open_seqs.pop(lane))

