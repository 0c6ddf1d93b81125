"""The layout rule: batch_size and num_unroll from a split's sequence lengths.

Plain NumPy. Used when the user leaves ``batch_size`` / ``num_unroll``
unset: the SequenceBatcher reads the train split's lengths
(``plan.ChooseLayout``) and lays every split out with the chosen pair.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from components.sequence_batcher import layout

# The layout rule (``choose_layout``), used when batch_size / num_unroll are
# left unset: T is the largest power of two <= median length / 4, within
# [UNROLL_MIN, UNROLL_MAX] (about four segments for a typical sequence, so
# the padding of its last segment stays small, and long sequences still run
# in windows a CPU steps through quickly); B is the largest power of two <=
# min(BATCH_MAX, sequences / 4, total steps / (2 x longest)) (at least four
# sequences per lane on average, and lanes long enough that the longest
# sequence does not set the number of batches alone), at least 1.
UNROLL_MIN, UNROLL_MAX = 8, 128
BATCH_MAX = 64


def _pow2_floor(value: float) -> int:
  return 1 << max(0, int(np.floor(np.log2(max(1.0, value)))))


def choose_layout(lengths: Sequence[int],
                  lane_multiple: int = 1) -> Tuple[int, int]:
  """``(batch_size, num_unroll)`` for a train split's sequence lengths.

  See the rule above; deterministic, and the same for any order of
  ``lengths``. ``lane_multiple`` (the trainer's replica count): B is
  rounded up to a multiple of it, so every replica owns ``B /
  lane_multiple`` lanes (``round_lanes``).
  """
  lengths = np.asarray(list(lengths), dtype=np.int64)
  if lengths.size == 0 or (lengths < 1).any():
    raise layout.LayoutError('choose_layout needs the lengths (>= 1) of at least one '
                      'sequence')
  median = float(np.median(lengths))
  unroll = min(UNROLL_MAX, max(UNROLL_MIN, _pow2_floor(median / 4)))
  lanes = min(BATCH_MAX, lengths.size / 4,
              float(lengths.sum()) / (2 * float(lengths.max())))
  return round_lanes(_pow2_floor(lanes), lane_multiple), unroll


def round_lanes(batch_size: int, lane_multiple: int) -> int:
  """The smallest multiple of ``lane_multiple`` >= ``batch_size``."""
  multiple = max(1, int(lane_multiple))
  return -(-int(batch_size) // multiple) * multiple
