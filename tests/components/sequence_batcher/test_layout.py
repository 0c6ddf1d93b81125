"""The planning maths (``layout.py``) without Beam or TensorFlow."""

import collections

import numpy as np
import pytest

from components.sequence_batcher import layout
from components.sequence_batcher import segments as segments_lib
from components.sequence_batcher import statistics

from tests.components.sequence_batcher import helpers

MODES = layout.MODES
LABEL_KINDS = (layout.PER_SEQUENCE, layout.PER_STEP)


def _config(mode=layout.PACKED, label_kind=layout.PER_SEQUENCE, **kwargs):
  kwargs.setdefault('batch_size', helpers.B)
  kwargs.setdefault('num_unroll', helpers.T)
  return layout.LayoutConfig(mode=mode, label_kind=label_kind, **kwargs)


def _random_pairs(n, seed, longest=200):
  rng = np.random.default_rng(seed)
  lengths = np.minimum(rng.zipf(1.6, size=n) * 3, longest)
  return [(f'k{i:03d}', int(n_)) for i, n_ in enumerate(lengths)]


def _lane_intervals(plan):
  """lane -> sorted [(start_batch, end_batch, key)]."""
  lanes = collections.defaultdict(list)
  for i, key in enumerate(plan.keys):
    start = int(plan.starts[i])
    lanes[int(plan.lanes[i])].append(
        (start, start + int(plan.segments[i]), key))
  return {lane: sorted(iv) for lane, iv in lanes.items()}


# --- Configuration ------------------------------------------------------------


@pytest.mark.parametrize('field', ['batch_size', 'num_unroll'])
@pytest.mark.parametrize('value', [0, -1, -32])
def test_config_rejects_sizes_below_one(field, value):
  with pytest.raises(layout.LayoutError,
                     match=rf'{field} must be at least 1, got {value}'):
    layout.LayoutConfig(**{field: value})


@pytest.mark.parametrize('field', ['batch_size', 'num_unroll'])
@pytest.mark.parametrize('value', [1.5, '4', True, None])
def test_config_rejects_non_integer_sizes(field, value):
  with pytest.raises(layout.LayoutError, match=rf'{field} must be an integer'):
    layout.LayoutConfig(**{field: value})


def test_config_errors_are_value_errors():
  assert issubclass(layout.LayoutError, ValueError)


@pytest.mark.parametrize('kwargs, pattern', [
    ({'mode': 'interleaved'}, r"mode must be one of .*'interleaved'"),
    ({'label_kind': 'per_token'}, r"label_kind must be one of .*'per_token'"),
    ({'max_sequence_length': 0}, r'max_sequence_length must be at least 1'),
    ({'truncate': True}, r'truncate=True needs max_sequence_length'),
    ({'shard_bytes': 0}, r'shard_bytes must be positive'),
])
def test_config_rejects_bad_options(kwargs, pattern):
  with pytest.raises(layout.LayoutError, match=pattern):
    layout.LayoutConfig(**kwargs)


def test_config_accepts_smallest_sizes_and_numpy_ints():
  config = layout.LayoutConfig(batch_size=np.int64(1), num_unroll=1,
                               max_sequence_length=1, truncate=True)
  assert config.batch_size == 1 and config.num_unroll == 1


# --- plan_lanes: packed -------------------------------------------------------


def test_packed_plan_by_hand():
  # T = 2: a has 4 segments, b and c 2, d 1; B = 2 lanes.
  config = layout.LayoutConfig(batch_size=2, num_unroll=2)
  plan = layout.plan_lanes([('d', 2), ('c', 4), ('a', 8), ('b', 3)], config)
  assert plan.keys == ['a', 'c', 'b', 'd']  # Longest first, then by key.
  np.testing.assert_array_equal(plan.segments, [4, 2, 2, 1])
  # a -> lane 0 [0, 4); c -> lane 1 [0, 2); b -> lane 1 [2, 4);
  # d -> both lanes end at 4, the lowest lane wins: lane 0 [4, 5).
  np.testing.assert_array_equal(plan.lanes, [0, 1, 1, 0])
  np.testing.assert_array_equal(plan.starts, [0, 0, 2, 4])
  assert plan.num_batches == 5
  assert plan.groups is None
  assert plan.real_timesteps == 17
  assert plan.total_timesteps == 5 * 2 * 2
  assert plan.efficiency == 17 / 20
  assert dict(plan.placements()) == {'a': (0, 0), 'c': (1, 0), 'b': (1, 2),
                                     'd': (0, 4)}


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('batch_size', [1, 3, 8])
def test_packed_lpt_properties(seed, batch_size):
  pairs = _random_pairs(40, seed)
  config = layout.LayoutConfig(batch_size=batch_size, num_unroll=5)
  plan = layout.plan_lanes(pairs, config)
  lanes = _lane_intervals(plan)
  assert set(lanes) <= set(range(batch_size))
  ends = []
  for lane in range(batch_size):
    intervals = lanes.get(lane, [])
    # Back to back from batch 0: no overlap and no gap inside a lane.
    position = 0
    for start, end, _ in intervals:
      assert start == position
      assert end > start
      position = end
    ends.append(position)
  longest = int(plan.segments.max())
  # LPT: lanes end within one longest sequence of each other.
  assert max(ends) - min(ends) <= longest
  assert plan.num_batches == max(ends)
  # Never shorter than the longest sequence or the total work per lane.
  assert plan.num_batches >= max(longest,
                                 -(-int(plan.segments.sum()) // batch_size))
  assert sorted(plan.keys) == sorted(k for k, _ in pairs)
  # Longest first.
  assert list(plan.lengths) == sorted(plan.lengths, reverse=True)


@pytest.mark.parametrize('mode', MODES)
def test_sequence_segments_are_contiguous_in_one_lane(mode):
  config = _config(mode)
  data = helpers.make_data([9, 4, 1, 13, 5, 8, 2], layout.PER_STEP)
  plan = layout.plan_lanes(((s.key, s.length) for s in data), config, 2)
  for s in data:
    i = plan.keys.index(s.key)
    segs = segments_lib.cut_segments(helpers.sequence_arrays([s])[0],
                               int(plan.lanes[i]), int(plan.starts[i]),
                               config)
    first = int(plan.starts[i])
    if mode == layout.DENSE:
      first //= config.num_unroll  # starts: the lane-stream step.
    assert len(segs) == plan.segments[i]
    assert [g.segment_index for g in segs] == list(range(len(segs)))
    assert [g.batch_index for g in segs] == list(
        range(first, first + len(segs)))
    assert {g.lane for g in segs} == {plan.lanes[i]}
    assert segs[-1].batch_index < plan.num_batches


# --- plan_lanes: bucketed -----------------------------------------------------


def test_bucketed_plan_by_hand():
  config = layout.LayoutConfig(batch_size=2, num_unroll=2, mode=layout.BUCKETED)
  plan = layout.plan_lanes([('d', 2), ('c', 4), ('a', 8), ('b', 3), ('e', 1)],
                           config)
  assert plan.keys == ['a', 'c', 'b', 'd', 'e']
  np.testing.assert_array_equal(plan.lanes, [0, 1, 0, 1, 0])
  np.testing.assert_array_equal(plan.starts, [0, 0, 4, 4, 6])
  assert plan.groups == [(0, 4), (4, 2), (6, 1)]
  assert plan.num_batches == 7


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('batch_size', [1, 3, 4])
def test_bucketed_groups(seed, batch_size):
  pairs = _random_pairs(23, seed)
  config = layout.LayoutConfig(batch_size=batch_size, num_unroll=4,
                               mode=layout.BUCKETED)
  plan = layout.plan_lanes(pairs, config)
  n = len(pairs)
  assert len(plan.groups) == -(-n // batch_size)
  position = 0
  for g, (first, span) in enumerate(plan.groups):
    members = range(g * batch_size, min((g + 1) * batch_size, n))
    # Groups follow each other with no gap.
    assert first == position
    # Every sequence of a group starts at the group's first batch, lanes 0..
    assert [int(plan.starts[i]) for i in members] == [first] * len(
        members)
    assert [int(plan.lanes[i]) for i in members] == list(range(len(members)))
    # The group spans its longest member's segments.
    assert span == max(int(plan.segments[i]) for i in members)
    position = first + span
  assert plan.num_batches == position
  # Similar lengths together: groups are in descending length order.
  assert list(plan.lengths) == sorted(plan.lengths, reverse=True)


# --- plan_lanes: input order, keys, lengths -----------------------------------


@pytest.mark.parametrize('mode', MODES)
def test_plan_does_not_depend_on_input_order(mode):
  pairs = _random_pairs(30, seed=7)
  config = layout.LayoutConfig(batch_size=4, num_unroll=3, mode=mode,
                               shard_bytes=500)
  first = layout.plan_lanes(pairs, config, 2)
  rng = np.random.default_rng(0)
  for _ in range(3):
    shuffled = [pairs[i] for i in rng.permutation(len(pairs))]
    again = layout.plan_lanes(iter(shuffled), config, 2)
    assert again.keys == first.keys
    for name in ('lengths', 'lanes', 'starts', 'segments'):
      np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert again.num_batches == first.num_batches
    assert again.groups == first.groups
    assert again.batches_per_shard == first.batches_per_shard


@pytest.mark.parametrize('mode', MODES)
def test_plan_rejects_duplicate_keys(mode):
  config = _config(mode)
  with pytest.raises(layout.LayoutError, match=r"sequence key 'b' appears"):
    layout.plan_lanes([('a', 3), ('b', 5), ('c', 2), ('b', 1)], config)


def test_plan_rejects_empty_sequence():
  with pytest.raises(layout.LayoutError, match=r"sequence 'z' has no time"):
    layout.plan_lanes([('a', 3), ('z', 0)], _config())


@pytest.mark.parametrize('mode', MODES)
def test_plan_of_nothing_has_no_batches(mode):
  plan = layout.plan_lanes([], _config(mode))
  assert plan.num_batches == 0 and plan.num_sequences == 0
  assert plan.efficiency == 0.0


def test_batches_per_shard_follows_shard_bytes():
  # One batch holds B * T * F * 4 = 3 * 4 * 2 * 4 = 96 bytes of features.
  pairs = [(f'k{i}', 4) for i in range(30)]  # 10 batches (packed, B = 3).
  plan = layout.plan_lanes(pairs, _config(shard_bytes=300), num_features=2)
  assert plan.batches_per_shard == 3
  assert plan.num_batches == 10
  assert plan.num_shards == 4
  assert [plan.shard_of(b) for b in range(10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2,
                                                   3]
  big = layout.plan_lanes(pairs, _config(), num_features=2)
  assert big.num_shards == 1


# --- cut_segments / assemble_batch --------------------------------------------


@pytest.mark.parametrize('label_kind', LABEL_KINDS)
@pytest.mark.parametrize('length', [1, helpers.T - 1, helpers.T,
                                    helpers.T + 1, 3 * helpers.T])
def test_cut_segments(label_kind, length):
  config = _config(label_kind=label_kind)
  s = helpers.make_data([length], label_kind)[0]
  segs = segments_lib.cut_segments(helpers.sequence_arrays([s])[0], lane=2,
                             start=5, config=config)
  unroll = helpers.T
  assert len(segs) == -(-length // unroll)
  mask = np.concatenate([g.mask for g in segs])
  assert mask.sum() == length and mask[:length].all()
  feats = np.concatenate([g.features for g in segs])
  np.testing.assert_array_equal(feats[:length], s.features)
  assert not feats[length:].any()
  labels = np.concatenate([g.labels for g in segs])
  np.testing.assert_array_equal(labels[:length], s.labels)
  assert labels.dtype == s.labels.dtype
  weight = np.concatenate([g.label_weight for g in segs])
  if label_kind == layout.PER_STEP:
    np.testing.assert_array_equal(weight, mask)
  else:
    assert weight.sum() == 1 and weight[length - 1] == 1
  assert [g.reset for g in segs] == [1] + [0] * (len(segs) - 1)
  assert {(g.lane, g.key, g.sequence_length) for g in segs} == {
      (2, s.key, length)}
  assert [g.batch_index for g in segs] == list(range(5, 5 + len(segs)))


def test_assemble_batch_pads_empty_lanes():
  config = _config()
  s = helpers.make_data([3], layout.PER_SEQUENCE)[0]
  seg, = segments_lib.cut_segments(helpers.sequence_arrays([s])[0], 1, 0, config)
  batch = segments_lib.assemble_batch(0, [seg], config, 2, np.int64)
  np.testing.assert_array_equal(batch['segment_index'], [-1, 0, -1])
  assert list(batch['key']) == [b'', b's00', b'']
  np.testing.assert_array_equal(batch['reset'], [0, 1, 0])
  np.testing.assert_array_equal(batch['sequence_length'], [0, 3, 0])
  assert batch['mask'][[0, 2]].sum() == 0
  assert batch['labels'].dtype == np.int64


def test_assemble_batch_rejects_misplaced_segments():
  config = _config()
  a, b = helpers.sequence_arrays(helpers.make_data([3, 2], layout.PER_STEP))
  seg_a, = segments_lib.cut_segments(a, 0, 0, config)
  seg_b, = segments_lib.cut_segments(b, 0, 0, config)
  with pytest.raises(layout.LayoutError, match=r"two segments in lane 0"):
    segments_lib.assemble_batch(0, [seg_a, seg_b], config, 2, np.float32)
  with pytest.raises(layout.LayoutError, match=r"for batch 0 given to batch 1"):
    segments_lib.assemble_batch(1, [seg_a], config, 2, np.float32)


def test_dense_plan_by_hand():
  config = layout.LayoutConfig(batch_size=2, num_unroll=4, mode=layout.DENSE)
  plan = layout.plan_lanes([('a', 5), ('b', 3), ('c', 2), ('d', 2)], config)
  # Longest first onto the lane with the fewest steps (c and d, of equal
  # length, in order_hash order: d first): a -> 0 (0..4), b -> 1 (0..2),
  # d -> 1 (3..4), c -> both lanes hold 5 steps, the lowest lane wins: 0
  # (5..6).
  assert layout.order_hash('d') < layout.order_hash('c')
  assert plan.keys == ['a', 'b', 'd', 'c']
  assert plan.lanes.tolist() == [0, 1, 1, 0]
  assert plan.starts.tolist() == [0, 0, 3, 5]
  assert plan.segments.tolist() == [2, 1, 2, 1]
  assert plan.num_batches == 2
  assert plan.efficiency == 12 / 16


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('batch_size', [1, 3, 8])
def test_dense_plan_balances_steps(seed, batch_size):
  pairs = _random_pairs(40, seed=seed)
  config = layout.LayoutConfig(batch_size=batch_size, num_unroll=5,
                               mode=layout.DENSE)
  plan = layout.plan_lanes(pairs, config)
  ends = np.zeros(batch_size, np.int64)
  for lane in range(batch_size):
    mine = np.flatnonzero(plan.lanes == lane)
    order = mine[np.argsort(plan.starts[mine])]
    # Back to back: each sequence starts where the previous one ended.
    starts = plan.starts[order]
    np.testing.assert_array_equal(
        starts, np.r_[0, np.cumsum(plan.lengths[order])[:-1]])
    ends[lane] = starts[-1] + plan.lengths[order[-1]] if mine.size else 0
  assert ends.max() - ends.min() <= plan.lengths.max()
  assert plan.num_batches == -(-int(ends.max()) // 5)
  assert plan.real_timesteps == ends.sum()


def test_dense_pieces_share_a_lane_inside_one_batch():
  config = layout.LayoutConfig(batch_size=1, num_unroll=4, mode=layout.DENSE)
  a, b = helpers.sequence_arrays(helpers.make_data([3, 6], layout.PER_SEQUENCE))
  pieces_a = segments_lib.cut_segments(a, 0, 0, config)
  pieces_b = segments_lib.cut_segments(b, 0, 3, config)  # Steps 3..8 of the lane.
  assert [(p.batch_index, p.offset, len(p.mask), p.first_step)
          for p in pieces_b] == [(0, 3, 1, 0), (1, 0, 4, 1), (2, 0, 1, 5)]
  batch = segments_lib.assemble_batch(0, pieces_a + pieces_b[:1], config, 2,
                                np.int64)
  assert batch['reset'].tolist() == [[1, 0, 0, 1]]
  assert batch['key'].tolist() == [[b's00', b's00', b's00', b's01']]
  assert batch['segment_index'].tolist() == [[0, 1, 2, 0]]
  assert batch['sequence_length'].tolist() == [[3, 3, 3, 6]]
  assert batch['label_weight'].tolist() == [[0, 0, 1, 0]]
  np.testing.assert_array_equal(batch['features'][0, 3], b.features[0])
  last = segments_lib.assemble_batch(2, pieces_b[2:], config, 2, np.int64)
  assert last['mask'].tolist() == [[1, 0, 0, 0]]
  assert last['segment_index'].tolist() == [[5, -1, -1, -1]]
  assert last['label_weight'].tolist() == [[1, 0, 0, 0]]
  with pytest.raises(layout.LayoutError, match='two segments in lane 0'):
    segments_lib.assemble_batch(0, pieces_a + segments_lib.cut_segments(b, 0, 2, config)[
        :1], config, 2, np.int64)


def test_length_histogram():
  hist = statistics.length_histogram(np.array([1, 2, 3, 4, 7, 8, 100]), 4)
  assert hist['edges'] == [1, 2, 4, 8, 16, 32, 64, 128]
  assert hist['counts'] == [1, 2, 2, 1, 0, 0, 1]
  assert statistics.length_histogram(np.array([], np.int64), 4)['counts'] == [0]


# --- The in-memory reference on the boundary table ----------------------------


@pytest.mark.parametrize('label_kind', LABEL_KINDS)
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('case', sorted(helpers.BOUNDARY_CASES))
def test_reference_layout_invariants(case, mode, label_kind):
  config = _config(mode, label_kind)
  data = helpers.make_data(helpers.BOUNDARY_CASES[case], label_kind)
  plan, batches = helpers.reference(data, config)
  assert plan.num_batches == len(batches)
  assert helpers.placements_of(batches) == dict(plan.placements())
  helpers.check_layout(batches, data, config)
  real = int(sum(b['mask'].sum() for b in batches))
  assert plan.efficiency == real / (len(batches) * helpers.B * helpers.T)
  stats = statistics.split_statistics(plan)
  assert stats['padded_timesteps'] == (len(batches) * helpers.B * helpers.T -
                                       real)
  if case == 'exactly_B' or (case == 'length_T' and mode == layout.BUCKETED):
    # One group / every sequence starts at batch 0 (dense: at its step 0).
    reset = batches[0]['reset']
    assert all((reset[:, 0] if mode == layout.DENSE else reset)[:len(data)]
               == 1)


@pytest.mark.parametrize('mode', MODES)
def test_reference_rejects_no_sequences(mode):
  with pytest.raises(layout.LayoutError, match='no sequences'):
    segments_lib.layout_in_memory([], _config(mode))


def test_invariant_checker_catches_a_broken_layout():
  """The checker must be able to fail: break a correct layout in small ways."""
  config = _config(layout.PACKED, layout.PER_SEQUENCE)
  data = helpers.make_data([9, 2, 5, 6], layout.PER_SEQUENCE)
  _, batches = helpers.reference(data, config)
  breakers = [
      lambda bs: bs[0]['features'].__setitem__((0, 0, 0), 12345.0),
      lambda bs: bs[0]['reset'].__setitem__(0, 0),
      lambda bs: bs[1]['mask'].__setitem__((0, 3), 0.0),
      lambda bs: bs.__setitem__(slice(0, 2), [bs[1], bs[0]]),
      lambda bs: bs[-1]['label_weight'].__setitem__(
          (0, slice(None)), np.ones(helpers.T, np.float32)),
  ]
  for breaker in breakers:
    broken = [{k: np.copy(v) for k, v in b.items()} for b in batches]
    breaker(broken)
    with pytest.raises(AssertionError):
      helpers.check_layout(broken, data, config)


def test_dense_invariant_checker_catches_a_broken_layout():
  config = _config(layout.DENSE, layout.PER_SEQUENCE)
  data = helpers.make_data([9, 2, 5, 6, 3], layout.PER_SEQUENCE)
  _, batches = helpers.reference(data, config)
  helpers.check_layout(batches, data, config)
  breakers = [
      lambda bs: bs[0]['features'].__setitem__((0, 0, 0), 12345.0),
      lambda bs: bs[0]['reset'].__setitem__((0, 0), 0),
      # A reset in the middle of a sequence (its state would be lost).
      lambda bs: bs[1]['reset'].__setitem__((0, 1), 1),
      lambda bs: bs[1]['mask'].__setitem__((0, 3), 0.0),
      lambda bs: bs.__setitem__(slice(0, 2), [bs[1], bs[0]]),
      lambda bs: bs[0]['key'].__setitem__((1, 2), b's04'),
      lambda bs: bs[-1]['label_weight'].__setitem__(
          (0, slice(None)), np.ones(helpers.T, np.float32)),
      lambda bs: bs[0]['sequence_length'].__setitem__((2, 0), 99),
  ]
  for breaker in breakers:
    broken = [{k: np.copy(v) for k, v in b.items()} for b in batches]
    breaker(broken)
    with pytest.raises(AssertionError):
      helpers.check_layout(broken, data, config)


@pytest.mark.parametrize('mode', layout.MODES)
def test_equal_lengths_are_ordered_by_the_key_hash_not_the_key(mode):
  """Keys sorted by label (as UCR/UEA files are) must not put one label in
  every lane of a batch: equal lengths go in order_hash order."""
  keys = [f'train_{i:05d}' for i in range(40)]  # Label = i // 10.
  config = layout.LayoutConfig(batch_size=8, num_unroll=4, mode=mode)
  plan = layout.plan_lanes([(k, 6) for k in keys], config)
  assert plan.keys == sorted(keys, key=layout.order_hash)
  labels = [int(k[-5:]) // 10 for k in plan.keys]
  assert len(set(labels[:8])) >= 3  # The first batch's lanes: mixed.
  # Longer sequences still come first.
  plan = layout.plan_lanes([(k, 6 + (k == 'train_00039')) for k in keys],
                           config)
  assert plan.keys[0] == 'train_00039'
  # Fixed on every run and machine (blake2b, not Python's salted hash).
  assert layout.order_hash('x') == 11982613108758132050
