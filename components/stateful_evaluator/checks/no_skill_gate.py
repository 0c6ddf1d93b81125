"""The no-skill gate's significance test: does the candidate beat a no-skill
predictor on the same eval examples by more than chance? NumPy and SciPy,
no TensorFlow.

The candidate and each reference (``no_skill_prediction``: the majority
class or the training mean; ``last_value_prediction``: the last observed
value) are scored on the same labelled steps of the extracts
(``extracts.py``), paired step by step:

* classification: ``correct = argmax(prediction) == label``, the step's
  difference ``w * (correct_candidate - correct_reference)``;
* regression: ``w * (error_reference**2 - error_candidate**2)`` (paired
  squared errors).

Steps of one sequence are not independent, so the test's unit is a **block**:
a run of at most ``block_steps`` consecutive labelled steps of one sequence
(a whole sequence when it is shorter; a per-sequence label is one step, so a
block is a sequence). A block's difference is the sum over its steps; the
sum over blocks has the sign of (candidate minus reference) on the primary
metric. One-sided tests of "the candidate is better":

* every block holds one labelled step with outcomes in {-1, 0, +1}
  (per-sequence classification): the exact sign test on the discordant
  pairs (McNemar's exact test), ``p = P(Binomial(n+ + n-, 1/2) >= n+)``;
* otherwise the paired t-test on the block differences,
  ``p = P(t_{n-1} >= mean / (sd / sqrt(n)))``; with fewer than 2 blocks
  nothing can be shown (p = 1); identical positive differences give p = 0.

A candidate that carries no signal is better or worse than the reference
by chance alone, so at level ``alpha`` (``StatefulSettings.skill_significance``,
0.05 by default) it passes at most that often.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Iterable, List, Mapping, Optional

import numpy as np
from scipy import stats

CLASSIFICATION = 'classification'
REGRESSION = 'regression'
DEFAULT_BLOCK_STEPS = 256


@dataclasses.dataclass(frozen=True)
class PairedTest:
  """One reference against the candidate.

  Attributes:
    reference: the reference's extract feature (e.g. ``no_skill_prediction``).
    test: ``sign`` or ``t``.
    p_value: one-sided p-value of "the candidate is better".
    blocks: units compared.
    better, worse: blocks where the candidate is better / worse.
    mean_difference: mean block difference (candidate better: > 0).
    reference_value: the reference's primary metric on these steps
      (weighted accuracy by arg-max, or mean squared error).
  """
  reference: str
  test: str
  p_value: float
  blocks: int
  better: int
  worse: int
  mean_difference: float
  reference_value: Optional[float] = None

  def to_dict(self) -> Dict[str, object]:
    return dataclasses.asdict(self)


def step_differences(task: str, labels: np.ndarray, weights: np.ndarray,
                     candidate: np.ndarray, reference: np.ndarray
                    ) -> np.ndarray:
  """float64[n]: per labelled step, how much better the candidate is.

  Args:
    task: ``classification`` or ``regression``.
    labels: [n] class ids or values.
    weights: [n] step weights.
    candidate, reference: [n, K] class probabilities, or [n] values.
  """
  w = np.asarray(weights, np.float64)
  if task == CLASSIFICATION:
    y = np.asarray(labels).astype(np.int64)
    right_c = np.argmax(candidate, axis=-1) == y
    right_r = np.argmax(reference, axis=-1) == y
    return w * (right_c.astype(np.float64) - right_r.astype(np.float64))
  y = np.asarray(labels, np.float64)
  err_c = (np.asarray(candidate, np.float64) - y) ** 2
  err_r = (np.asarray(reference, np.float64) - y) ** 2
  return w * (err_r - err_c)


def block_sums(differences: np.ndarray, block_steps: int) -> np.ndarray:
  """The sums of consecutive runs of at most ``block_steps`` steps."""
  d = np.asarray(differences, np.float64)
  if d.size == 0:
    return d
  starts = np.arange(0, d.size, block_steps)
  return np.add.reduceat(d, starts)


def one_sided_test(blocks: np.ndarray, single_steps: bool,
                   reference: str = '') -> PairedTest:
  """The test of "the candidate is better" on block differences (see the
  module docstring). ``single_steps``: every block is one labelled step of
  a classification (the sign test applies)."""
  d = np.asarray(blocks, np.float64)
  better, worse = int(np.sum(d > 0)), int(np.sum(d < 0))
  mean = float(d.mean()) if d.size else 0.0
  if single_steps:
    n = better + worse
    p = float(stats.binom.sf(better - 1, n, 0.5)) if n else 1.0
    return PairedTest(reference, 'sign', min(1.0, p), int(d.size), better,
                      worse, mean)
  if d.size < 2:
    p = 1.0
  else:
    sd = float(d.std(ddof=1))
    if sd == 0.0:
      p = 0.0 if mean > 0 else 1.0
    else:
      t = mean / (sd / math.sqrt(d.size))
      p = float(stats.t.sf(t, d.size - 1))
  return PairedTest(reference, 't', p, int(d.size), better, worse, mean)


def reference_score(task: str, labels: np.ndarray, weights: np.ndarray,
                    reference: np.ndarray) -> float:
  """The weighted sum of the reference's per-step score: correct by
  arg-max (classification) or squared error (regression)."""
  w = np.asarray(weights, np.float64)
  if task == CLASSIFICATION:
    right = np.argmax(reference, axis=-1) == np.asarray(labels).astype(
        np.int64)
    return float(np.sum(w * right))
  return float(np.sum(w * (np.asarray(reference, np.float64)
                           - np.asarray(labels, np.float64)) ** 2))


@dataclasses.dataclass
class _Blocks:
  sums: List[np.ndarray] = dataclasses.field(default_factory=list)
  single: bool = True
  score: float = 0.0
  weight: float = 0.0


class PairedTests:
  """Accumulates the block differences sequence by sequence (``add``);
  ``results`` gives ``{reference: PairedTest}``. Memory: one float per
  block and reference.

  Args:
    task: ``classification`` or ``regression``.
    references: the reference names (keys of each sequence mapping).
    block_steps: the test's unit (see the module docstring).
  """

  def __init__(self, task: str, references: List[str],
               block_steps: int = DEFAULT_BLOCK_STEPS):
    if block_steps < 1:
      raise ValueError(f'block_steps must be >= 1, got {block_steps}')
    self._task = task
    self._block_steps = int(block_steps)
    self._acc = {r: _Blocks() for r in references}

  def add(self, seq: Mapping[str, np.ndarray]) -> None:
    """One sequence's labelled steps in order: ``label`` [n], ``weight``
    [n], ``prediction`` and one array per reference ([n, K] probabilities
    or [n] values)."""
    labels = np.asarray(seq['label'])
    if labels.size == 0:
      return
    for r, blocks in self._acc.items():
      diff = step_differences(self._task, labels, seq['weight'],
                              seq['prediction'], seq[r])
      blocks.sums.append(block_sums(diff, self._block_steps))
      blocks.score += reference_score(self._task, labels, seq['weight'],
                                      seq[r])
      blocks.weight += float(np.sum(seq['weight']))
      if not (self._task == CLASSIFICATION and labels.size == 1):
        blocks.single = False

  def results(self) -> Dict[str, PairedTest]:
    out = {}
    for r, blocks in self._acc.items():
      sums = np.concatenate(blocks.sums) if blocks.sums else np.zeros(0)
      test = one_sided_test(sums, blocks.single and sums.size > 0, r)
      out[r] = dataclasses.replace(test, reference_value=(
          blocks.score / blocks.weight if blocks.weight > 0 else None))
    return out


def paired_tests(task: str, sequences: Iterable[Mapping[str, np.ndarray]],
                 references: List[str],
                 block_steps: int = DEFAULT_BLOCK_STEPS
                ) -> Dict[str, PairedTest]:
  """``{reference: PairedTest}`` over ``sequences`` (see ``PairedTests``)."""
  tests = PairedTests(task, references, block_steps)
  for seq in sequences:
    tests.add(seq)
  return tests.results()


def worst(tests: Mapping[str, PairedTest]) -> Optional[PairedTest]:
  """The reference the candidate is least clearly better than."""
  if not tests:
    return None
  return max(tests.values(), key=lambda t: t.p_value)


class PointSample:
  """A uniform sample of at most ``size`` (label, prediction) pairs over
  every labelled step offered, in fixed memory (bottom-k of seeded random
  keys), for the report's predicted-against-actual view of regression."""

  def __init__(self, size: int = 2000, seed: int = 0):
    self._size = int(size)
    self._rng = np.random.default_rng(seed)
    self._keys = np.zeros(0)
    self._points = np.zeros((0, 2))
    self.offered = 0

  def offer(self, labels: np.ndarray, predictions: np.ndarray) -> None:
    y = np.asarray(labels, np.float64).ravel()
    p = np.asarray(predictions, np.float64).ravel()
    self.offered += y.size
    keys = np.concatenate([self._keys, self._rng.random(y.size)])
    points = np.concatenate([self._points, np.stack([y, p], axis=1)])
    if keys.size > self._size:
      keep = np.argpartition(keys, self._size - 1)[:self._size]
      keys, points = keys[keep], points[keep]
    self._keys, self._points = keys, points

  def points(self) -> List[List[float]]:
    order = np.argsort(self._keys)
    return self._points[order].tolist()
