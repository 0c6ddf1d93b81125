"""The layout rule: (batch_size, num_unroll) from a table of length histograms."""

import pytest

from components.sequence_batcher import layout
from components.sequence_batcher import layout_rule


@pytest.mark.parametrize('lengths,want', [
    # (lengths, (batch_size, num_unroll)); the rule in layout_rule.py.
    ([24] * 67, (16, 8)),                 # Short, equal (ItalyPowerDemand-like).
    ([150] * 50, (8, 32)),                # GunPoint-like.
    ([1460] * 100, (16, 128)),            # Long: T capped at 128.
    (list(range(7, 30)) * 12, (64, 8)),   # Many short ones: B capped at 64.
    ([5], (1, 8)),                        # One sequence: one lane.
    ([1000] + [10] * 40, (1, 8)),         # One far longer: few lanes.
    ([100] * 8 + [3000], (1, 16)),
    ([64] * 400, (64, 16)),
])
def test_choose_layout_table(lengths, want):
  assert layout_rule.choose_layout(lengths) == want
  assert layout_rule.choose_layout(lengths[::-1]) == want  # Order-free.


def test_choose_layout_rejects_no_lengths():
  with pytest.raises(layout.LayoutError, match='at least one'):
    layout_rule.choose_layout([])


@pytest.mark.parametrize('lengths,replicas,want_batch', [
    ([24] * 67, 2, 16),        # 16 lanes already share out to 2 replicas.
    ([24] * 67, 3, 18),        # Rounded up to a multiple of 3.
    ([5], 4, 4),               # One lane chosen: one per replica.
    ([1000] + [10] * 40, 2, 2),
])
def test_the_chosen_batch_size_is_a_multiple_of_the_replicas(
    lengths, replicas, want_batch):
  batch, unroll = layout_rule.choose_layout(lengths, replicas)
  assert (batch, unroll) == (want_batch, layout_rule.choose_layout(lengths)[1])
  assert batch % replicas == 0


def test_a_given_batch_size_must_share_out_to_the_replicas():
  config = layout.LayoutConfig(batch_size=6, num_unroll=4, lane_multiple=4)
  with pytest.raises(layout.LayoutError, match='batch_size 8'):
    config.check_lane_multiple()
  layout.LayoutConfig(batch_size=8, num_unroll=4,
                      lane_multiple=4).check_lane_multiple()
  with pytest.raises(layout.LayoutError, match='lane_multiple'):
    layout.LayoutConfig(batch_size=8, num_unroll=4, lane_multiple=0)
