"""The chunked stateful run over the eval split. TensorFlow, no TFX.

The run mirrors how the model was trained (docs/design.md, "The state
protocol"): the model, rebuilt stateful for the eval batches' lane count, is
fed the eval split's batches strictly in order, its state carried from one
batch to the next; all state is zeroed at the start, and before every batch
the state rows of lanes whose ``reset`` flag is 1 are zeroed
(``steps.predict_batches``). Owns ``SequenceSampler`` (the sequences the equivalence check replays whole) and
the label check; the pass itself is ``extracts.write_extracts``.

Shapes: B lanes, T steps per segment, F features, K outputs per step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
from typing import Dict, List, Tuple

import numpy as np

from components.stateful import model_spec as ms
from components.stateful_evaluator.extraction import models as models_lib


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
  """Keeps the steps of a bottom-k sample of sequences, in one pass.

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
      raise models_lib.EvaluationError(f'sequence {key!r} starts twice in the split')
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

  def add(self, key: str, first_step: int, features: np.ndarray,
          outputs: np.ndarray) -> None:
    """Stores the sequence's steps from ``first_step`` on (features
    [n, F], outputs [n, K]; a packed segment's padding is cut later)."""
    self._segments[key][int(first_step)] = (np.array(features),
                                            np.array(outputs))

  def sequences(self) -> List[SampledSequence]:
    """The sampled sequences, longest first (then by key)."""
    out = []
    for key, length in self._lengths.items():
      pieces = self._segments[key]
      firsts = sorted(pieces)
      expect = [0] + [f + len(pieces[f][0]) for f in firsts[:-1]]
      covered = firsts[-1] + len(pieces[firsts[-1]][0]) if firsts else 0
      if firsts != expect or covered < length:
        raise models_lib.EvaluationError(
            f'sequence {key!r} (length {length}) is not whole in the '
            f'batches: its pieces start at steps {firsts}')
      feats = np.concatenate([pieces[f][0] for f in firsts])[:length]
      outs = np.concatenate([pieces[f][1] for f in firsts])[:length]
      out.append(SampledSequence(key=key, length=length, features=feats,
                                 chunked=outs))
    out.sort(key=lambda s: (-s.length, s.key))
    return out


def check_labels(labels: np.ndarray, spec: ms.ModelSpec) -> None:
  """Raises ``models_lib.EvaluationError`` when labelled steps do not fit the task."""
  if labels.size == 0:
    return
  if spec.task == ms.CLASSIFICATION:
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= spec.num_classes:
      raise models_lib.EvaluationError(
          f'class labels must be in [0, {spec.num_classes}); the eval batches '
          f'have labels in [{lo}, {hi}]')
  elif not np.all(np.isfinite(labels)):
    raise models_lib.EvaluationError('regression labels contain NaN or infinity')

