"""The lane layout: the configuration and the planning maths (which lane and
batch each sequence goes to), in plain Python/NumPy.

Nothing here imports Beam, TensorFlow or TFX. Cutting sequences into lane
segments and assembling batches from them is in ``segments.py``. The Beam
transform in ``beam.py`` and the single-process reference
``segments.layout_in_memory`` both call these functions, so the two always
agree.

Vocabulary (see docs/design.md, "The lane layout"):

* ``T`` (``num_unroll``) is the truncated-BPTT window. A sequence of length
  ``L`` is cut into ``ceil(L / T)`` segments; the last one is padded.
* A batch has ``B`` (``batch_size``) rows called lanes. Segment ``k + 1`` of a
  sequence sits in the same lane of the batch after the one holding segment
  ``k``, so a stateful RNN carries exactly the right state from batch to batch.
* Sequences of equal length are ordered by a fixed hash of the key
  (``order_hash``), not by the key: input files are often sorted by label
  (UCR/UEA archives are), and key order would then put sequences of one
  class side by side in every batch, so training would see one class at a
  time.
* ``packed`` mode: sequences are sorted longest first and each is put on the
  lane that currently ends earliest (longest-processing-time-first
  scheduling), so lanes end together and little tail padding is left. A lane
  runs many sequences back to back; each starts with ``reset = 1``.
* ``bucketed`` mode: sequences sorted by length form groups of ``B``; a group
  occupies ``max(segments)`` consecutive batches and every sequence in it
  starts at the group's first batch, so a plain ``model.reset_states()`` at
  each group start is correct and whole groups may be shuffled per epoch.
* ``dense`` mode: as ``packed``, but a lane is a stream of steps, not of
  segments: the next sequence starts at the step after the previous one
  ends, inside the same segment, so only each lane's tail is padded. Lanes
  are balanced by steps (longest first onto the lane with the fewest steps).
  ``reset``, ``key``, ``segment_index`` and ``sequence_length`` are then per
  step, ``[B, T]`` (see ``segments.assemble_batch``), and every stateful layer must
  honour a reset at any step (``components.stateful.state.resets.step_resets``).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import heapq
from typing import Iterable, List, Optional, Tuple

import numpy as np

from components.declared import positive_int
from components.declared import setting

PACKED = 'packed'
BUCKETED = 'bucketed'
DENSE = 'dense'
MODES = (PACKED, BUCKETED, DENSE)

PER_SEQUENCE = 'per_sequence'
PER_STEP = 'per_step'
LABEL_KINDS = (PER_SEQUENCE, PER_STEP)

# Keys of one batch, as written to disk and returned by ``read_batches``.
BATCH_KEYS = ('features', 'labels', 'mask', 'label_weight', 'reset', 'key',
              'segment_index', 'sequence_length', 'batch_index')
# The keys that are per lane ([B]) in packed / bucketed mode and per step
# ([B, T]) in dense mode.
LANE_KEYS = ('reset', 'key', 'segment_index', 'sequence_length')

# A shard holds about this many bytes of feature data by default.
DEFAULT_SHARD_BYTES = 64 << 20


class LayoutError(ValueError):
  """The input cannot be laid out (bad configuration or bad data)."""


@dataclasses.dataclass(frozen=True)
class LayoutConfig:
  """How sequences are cut and laid into batches. Each field's help text is
  in its metadata (``components/declared.py``): the one declaration of the
  layout settings, taken over by the pipeline's ``PipelineConfig``.
  """
  batch_size: int = setting(32, 'B, lanes per batch', parse=positive_int)
  num_unroll: int = setting(
      32, 'T, time steps per segment (the truncated-BPTT window)',
      parse=positive_int)
  mode: str = setting(
      PACKED, 'packed (sequences back to back on the lane that ends '
      'earliest), bucketed (groups of B sequences of similar length, each '
      'starting a group) or dense (a lane is a stream of steps)',
      choices=MODES)
  label_kind: str = setting(
      PER_SEQUENCE, 'per_sequence (constant over a sequence; label_weight '
      'is 1 only on its last real step) or per_step (label_weight equals '
      'mask)', choices=LABEL_KINDS)
  max_sequence_length: Optional[int] = setting(
      None, 'longer sequences are an error, or cut to this length with '
      'truncate', parse=positive_int, shown='no limit')
  truncate: bool = setting(
      False, 'cut sequences longer than max_sequence_length to their first '
      'steps (counted as truncated_timesteps) instead of failing')
  shard_bytes: int = setting(
      DEFAULT_SHARD_BYTES, "target size of one output shard's feature data",
      flag=False)
  lane_multiple: int = setting(
      1, "the trainer's replicas (replicas x workers): batch_size must be a "
      'multiple (replica r owns lanes [r*b, (r+1)*b) for the whole run); a '
      'batch_size the layout rule chooses is rounded up to one',
      flag='--replicas', parse=positive_int)

  def __post_init__(self):
    for name in ('batch_size', 'num_unroll'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise LayoutError(f'{name} must be an integer, got {value!r}')
      if value < 1:
        raise LayoutError(f'{name} must be at least 1, got {value}')
    if self.mode not in MODES:
      raise LayoutError(f'mode must be one of {MODES}, got {self.mode!r}')
    if self.label_kind not in LABEL_KINDS:
      raise LayoutError(
          f'label_kind must be one of {LABEL_KINDS}, got {self.label_kind!r}')
    if self.max_sequence_length is not None and self.max_sequence_length < 1:
      raise LayoutError('max_sequence_length must be at least 1, got '
                        f'{self.max_sequence_length}')
    if self.truncate and self.max_sequence_length is None:
      raise LayoutError('truncate=True needs max_sequence_length')
    if self.shard_bytes < 1:
      raise LayoutError(f'shard_bytes must be positive, got {self.shard_bytes}')
    if isinstance(self.lane_multiple, bool) or not isinstance(
        self.lane_multiple, (int, np.integer)) or self.lane_multiple < 1:
      raise LayoutError(f'lane_multiple (the trainer\'s replicas) must be an '
                        f'integer >= 1, got {self.lane_multiple!r}')

  def check_lane_multiple(self) -> None:
    """Raises unless ``batch_size`` is a multiple of ``lane_multiple``."""
    if self.batch_size % self.lane_multiple:
      raise LayoutError(
          f'batch_size {self.batch_size} is not a multiple of the '
          f'{self.lane_multiple} training replicas (each replica owns '
          f'batch_size / replicas lanes): use batch_size '
          f'{-(-self.batch_size // self.lane_multiple) * self.lane_multiple}, '
          'or leave it unset for the layout rule')


@dataclasses.dataclass
class SequenceArrays:
  """One whole sequence as arrays.

  Attributes:
    key: the sequence key (str).
    features: float32[L, F].
    labels: int64[L] or float32[L].
    truncated: how many steps were cut off by ``max_sequence_length``.
    labeled: False for unlabeled data (no label column): its
      ``label_weight`` is then zero everywhere.
  """
  key: str
  features: np.ndarray
  labels: np.ndarray
  truncated: int = 0
  labeled: bool = True

  @property
  def length(self) -> int:
    return int(self.features.shape[0])


def num_segments(length: int, num_unroll: int) -> int:
  """Segments needed for a sequence of ``length`` steps (ceil(L / T))."""
  return -(-int(length) // int(num_unroll))


@dataclasses.dataclass
class LanePlan:
  """Where every sequence goes. Computed from (key, length) pairs only.

  Attributes:
    keys: sequence keys in plan order (longest first).
    lengths: int64[N], the sequence lengths.
    lanes: int64[N], the lane of each sequence.
    starts: int64[N], where each sequence starts in its lane: the batch
      holding its segment 0 (``packed``, ``bucketed``), or the position of
      its first step in the lane's stream of steps (``dense``: step ``s``
      is step ``s % T`` of batch ``s // T``).
    segments: int64[N], the batches it spans: ``ceil(L / T)``, or in
      ``dense`` mode ``(s + L - 1) // T - s // T + 1``.
    num_batches: batches in the split.
    groups: for ``bucketed`` mode, ``(first_batch, num_batches)`` of every
      group in order; None in ``packed`` mode.
    batches_per_shard: output shard ``s`` holds batches
      ``[s * batches_per_shard, (s + 1) * batches_per_shard)``.
  """
  config: LayoutConfig
  keys: List[str]
  lengths: np.ndarray
  lanes: np.ndarray
  starts: np.ndarray
  segments: np.ndarray
  num_batches: int
  groups: Optional[List[Tuple[int, int]]]
  batches_per_shard: int

  @property
  def num_sequences(self) -> int:
    return len(self.keys)

  @property
  def num_shards(self) -> int:
    return max(1, -(-self.num_batches // self.batches_per_shard))

  @property
  def real_timesteps(self) -> int:
    return int(self.lengths.sum())

  @property
  def total_timesteps(self) -> int:
    return (self.num_batches * self.config.batch_size *
            self.config.num_unroll)

  @property
  def efficiency(self) -> float:
    total = self.total_timesteps
    return self.real_timesteps / total if total else 0.0

  def placements(self) -> Iterable[Tuple[str, Tuple[int, int]]]:
    """Yields ``(key, (lane, start))`` for every sequence (see
    ``starts``)."""
    for i, key in enumerate(self.keys):
      yield key, (int(self.lanes[i]), int(self.starts[i]))

  def shard_of(self, batch_index: int) -> int:
    return int(batch_index) // self.batches_per_shard


def _longest_first(sizes: np.ndarray, num_lanes: int, lanes: np.ndarray,
                   starts: np.ndarray) -> int:
  """Longest-processing-time-first scheduling: job ``i`` (``sizes`` sorted
  longest first) goes onto the lane with the least load so far (ties: the
  lowest lane), starting at that load. Fills ``lanes`` and ``starts``;
  returns the largest load."""
  heap = [(0, lane) for lane in range(num_lanes)]
  for i, size in enumerate(sizes):
    load, lane = heapq.heappop(heap)
    lanes[i], starts[i] = lane, load
    heapq.heappush(heap, (load + int(size), lane))
  return max(load for load, _ in heap)


def order_hash(key: str) -> int:
  """A fixed 64-bit hash of ``key`` that orders sequences of equal length
  (the same on every run, machine and Python: not ``hash``)."""
  digest = hashlib.blake2b(key.encode('utf-8'), digest_size=8,
                           person=b'tss-lanes').digest()
  return int.from_bytes(digest, 'big')


def plan_lanes(key_lengths: Iterable[Tuple[str, int]],
               config: LayoutConfig,
               num_features: int = 1) -> LanePlan:
  """Plans the lane layout from ``(key, length)`` pairs.

  The result depends only on the multiset of pairs, never on their order, so
  every runner and every parallelism gives the same plan.

  Args:
    key_lengths: ``(key, length)`` of every sequence; keys unique, lengths
      >= 1 (already truncated where asked).
    config: the layout configuration.
    num_features: F, used only to size output shards.

  Returns:
    A ``LanePlan``.
  """
  pairs = sorted(((str(k), int(n)) for k, n in key_lengths),
                 key=lambda kl: (-kl[1], order_hash(kl[0]), kl[0]))
  keys = [k for k, _ in pairs]
  if len(set(keys)) != len(keys):
    # Not only neighbours: pairs are sorted by length first, and the same key
    # may come with different lengths.
    dup = min(k for k, count in collections.Counter(keys).items() if count > 1)
    raise LayoutError(f'sequence key {dup!r} appears twice')
  lengths = np.array([n for _, n in pairs], dtype=np.int64)
  if lengths.size and lengths.min() < 1:
    bad = keys[int(np.argmin(lengths))]
    raise LayoutError(f'sequence {bad!r} has no time steps')
  bsz, unroll = config.batch_size, config.num_unroll
  segments = -(-lengths // unroll)
  lanes = np.zeros(len(keys), dtype=np.int64)
  starts = np.zeros(len(keys), dtype=np.int64)
  groups = None
  if config.mode == PACKED:
    # Segments onto the lane that ends earliest.
    num_batches = _longest_first(segments, bsz, lanes, starts)
  elif config.mode == DENSE:
    # Steps onto the lane with the fewest steps.
    num_batches = -(-_longest_first(lengths, bsz, lanes, starts) // unroll)
    segments = (starts + lengths - 1) // unroll - starts // unroll + 1
  else:
    groups = []
    first = 0
    for g in range(0, len(keys), bsz):
      lanes[g:g + bsz] = np.arange(min(bsz, len(keys) - g))
      starts[g:g + bsz] = first
      span = int(segments[g:g + bsz].max())
      groups.append((first, span))
      first += span
    num_batches = first
  bytes_per_batch = max(1, bsz * unroll * max(1, num_features) * 4)
  batches_per_shard = max(1, config.shard_bytes // bytes_per_batch)
  return LanePlan(config=config, keys=keys, lengths=lengths, lanes=lanes,
                  starts=starts, segments=segments,
                  num_batches=int(num_batches), groups=groups,
                  batches_per_shard=int(batches_per_shard))
