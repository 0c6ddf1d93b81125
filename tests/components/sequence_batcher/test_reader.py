"""``read_batches``: static shapes, batch order, group order, split lookup.

The outputs are written with the single-process writer (``in_memory.py``),
which writes the same bytes as the Beam transform (see
``test_determinism.py``), so no pipeline is needed here.
"""

import pytest
import tensorflow as tf

from components.sequence_batcher import in_memory
from components.sequence_batcher import layout
from components.sequence_batcher import load_metadata
from components.sequence_batcher import read_batches
from tests.components.sequence_batcher import helpers

LENGTHS = [13, 2, 9, 7, 4, 4, 1, 5, 11, 3, 6, 8, 17]


def _write(root, mode, label_kind=layout.PER_SEQUENCE, split='train',
           shard_bytes=200, lengths=LENGTHS, seed=0):
  # 3 * 4 * 2 * 4 = 96 feature bytes a batch: 2 batches a shard.
  config = layout.LayoutConfig(batch_size=3, num_unroll=4, mode=mode,
                               label_kind=label_kind, shard_bytes=shard_bytes)
  data = helpers.make_data(lengths, label_kind, seed=seed)
  meta = in_memory.write_split(helpers.sequence_arrays(data), str(root),
                               split=split, config=config,
                               feature_names=list(helpers.FEATURES))
  return config, data, meta


@pytest.mark.parametrize('label_kind, label_dtype', [
    (layout.PER_SEQUENCE, tf.int64), (layout.PER_STEP, tf.float32)])
def test_static_shapes_and_dtypes(tmp_path, label_kind, label_dtype):
  _write(tmp_path, layout.PACKED, label_kind)
  ds = read_batches(str(tmp_path), 'train')
  spec = ds.element_spec
  expected = {
      'features': ([3, 4, 2], tf.float32),
      'labels': ([3, 4], label_dtype),
      'mask': ([3, 4], tf.float32),
      'label_weight': ([3, 4], tf.float32),
      'reset': ([3], tf.int64),
      'key': ([3], tf.string),
      'segment_index': ([3], tf.int64),
      'sequence_length': ([3], tf.int64),
      'batch_index': ([], tf.int64),
  }
  assert sorted(spec) == sorted(expected)
  for name, (shape, dtype) in expected.items():
    assert spec[name].shape.is_fully_defined(), name
    assert spec[name].shape.as_list() == shape, name
    assert spec[name].dtype == dtype, name
  # Static shapes survive batching by a trainer-like pipeline.
  for batch in ds.take(1):
    assert batch['features'].shape == (3, 4, 2)


@pytest.mark.parametrize('mode', [layout.PACKED, layout.BUCKETED])
def test_batches_come_in_order_across_shards(tmp_path, mode):
  config, data, meta = _write(tmp_path, mode)
  assert meta['num_shards'] >= 4
  batches = helpers.read_split(str(tmp_path), 'train')
  assert [int(b['batch_index']) for b in batches] == list(
      range(meta['num_batches']))
  helpers.check_layout(batches, data, config)
  helpers.check_metadata(meta, batches, data, config)
  _, expected = helpers.reference(data, config)
  helpers.assert_same_batches(batches, expected)
  # Never shuffled: a second pass gives the same sequence of batches.
  again = helpers.read_split(str(tmp_path), 'train')
  helpers.assert_same_batches(again, batches)


@pytest.mark.parametrize('order', ['reversed', 'shuffled', 'identity'])
def test_group_order_yields_whole_groups_in_that_order(tmp_path, order):
  config, data, meta = _write(tmp_path, layout.BUCKETED)
  groups = meta['groups']
  assert len(groups) == 5
  # Some group crosses a shard boundary (2 batches a shard).
  assert any(first // 2 != (first + span - 1) // 2 for first, span in groups)
  perm = {'reversed': [4, 3, 2, 1, 0], 'shuffled': [2, 0, 4, 1, 3],
          'identity': [0, 1, 2, 3, 4]}[order]
  _, expected = helpers.reference(data, config)
  batches = helpers.read_split(str(tmp_path), 'train', group_order=perm)
  want = [b for g in perm
          for b in range(groups[g][0], groups[g][0] + groups[g][1])]
  assert [int(b['batch_index']) for b in batches] == want
  helpers.assert_same_batches(batches, [expected[b] for b in want])
  # Every group starts with every real lane reset, then runs its segments.
  position = 0
  for g in perm:
    first = batches[position]
    real = first['segment_index'] >= 0
    assert real.any()
    assert (first['reset'][real] == 1).all()
    assert (first['segment_index'][real] == 0).all()
    for step in range(1, groups[g][1]):
      batch = batches[position + step]
      assert not batch['reset'].any()
    position += groups[g][1]
  assert position == len(batches) == meta['num_batches']


def test_group_order_only_for_bucketed_output(tmp_path):
  _write(tmp_path, layout.PACKED)
  with pytest.raises(ValueError,
                     match="needs a bucketed-mode output.*'packed'"):
    read_batches(str(tmp_path), 'train', group_order=[0])


@pytest.mark.parametrize('perm', [[0, 1, 2, 3], [0, 1, 2, 3, 3],
                                  [0, 1, 2, 3, 5], [1, 2, 3, 4, 5]])
def test_group_order_must_be_a_permutation(tmp_path, perm):
  _write(tmp_path, layout.BUCKETED)
  with pytest.raises(ValueError,
                     match=r'group_order must be a permutation of range\(5\)'):
    read_batches(str(tmp_path), 'train', group_order=perm)


def test_split_lookup(tmp_path):
  _, _, train = _write(tmp_path, layout.PACKED, split='train')
  _, _, evals = _write(tmp_path, layout.PACKED, split='eval',
                       lengths=[3, 8, 5], seed=4)
  root = str(tmp_path)
  assert load_metadata(root, 'train')[1] == train
  assert load_metadata(root, 'eval')[1] == evals
  n_eval = len(helpers.read_split(root, 'eval'))
  assert n_eval == evals['num_batches'] != train['num_batches']
  # A split folder may be read directly, with or without its name.
  split_dir = str(tmp_path / 'Split-eval')
  assert len(helpers.read_split(split_dir)) == n_eval
  assert len(helpers.read_split(split_dir, 'eval')) == n_eval

  with pytest.raises(ValueError, match=r"has no split 'test'; it has "
                     r"\['eval', 'train'\]"):
    read_batches(root, 'test')
  with pytest.raises(ValueError, match=r"has splits \['eval', 'train'\]; "
                     'pass split='):
    read_batches(root)
  with pytest.raises(ValueError, match=r"holds split 'eval', not 'train'"):
    read_batches(split_dir, 'train')
  with pytest.raises(FileNotFoundError, match='not a SequenceBatcher output'):
    read_batches(str(tmp_path / 'nowhere'), 'train')


def test_single_split_root_needs_no_split_name(tmp_path):
  _, _, meta = _write(tmp_path, layout.BUCKETED, split='only')
  batches = helpers.read_split(str(tmp_path))
  assert len(batches) == meta['num_batches']
  with pytest.raises(ValueError, match=r"has no split 'train'; it has "
                     r"\['only'\]"):
    read_batches(str(tmp_path), 'train')


@pytest.mark.parametrize('name', [
    '../outside.tfrecord', '/etc/passwd', 'sub/batches.tfrecord',
    '..', 'a\\b.tfrecord', ''])
def test_shard_names_from_metadata_must_be_plain_file_names(tmp_path, name):
  import json  # pylint: disable=g-import-not-at-top
  _write(tmp_path, layout.PACKED, split='only')
  meta_path = tmp_path / 'Split-only' / 'metadata.json'
  meta = json.loads(meta_path.read_text())
  good = list(meta['files'])
  assert len(helpers.read_split(str(tmp_path))) == meta['num_batches']
  meta['files'] = good[:1] + [name] + good[1:]
  meta_path.write_text(json.dumps(meta))
  with pytest.raises(ValueError, match='not a plain file name') as e:
    read_batches(str(tmp_path))
  assert str(meta_path) in str(e.value)
