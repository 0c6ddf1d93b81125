"""The train split read epoch after epoch (``epoch_data.EpochBatches``)."""

import glob
import os

import numpy as np
import pytest

from components.stateful import batches as batches_lib
from components.stateful_trainer import epoch_data
from tests.components.stateful_trainer import helpers


def _batches(ds):
  return [{k: v.numpy() for k, v in b.items()} for b in ds]


def _assert_same(got, want):
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert sorted(g) == sorted(w)
    for k in w:
      np.testing.assert_array_equal(g[k], w[k], err_msg=k)


@pytest.fixture(name='source')
def _source(tmp_path):
  root = helpers.random_train_batches(str(tmp_path / 'b'), 13, seed=5,
                                      batch_size=2, num_unroll=4)
  return batches_lib.BatchSource.open(root, 'train')


ARGS = dict(seed=0, label_scoring=batches_lib.WEIGHTED,
            validation_fraction=0.3)


def _from_files(source, start=0):
  return _batches(source.dataset(start=start, **ARGS))


def test_held_in_memory_every_epoch_is_the_files_batches_and_reads_no_file(
    source):
  want = _from_files(source)
  reader = epoch_data.EpochBatches(source, shuffle_groups=False, **ARGS)
  assert reader.in_memory
  _assert_same(_batches(reader.epoch(0)), want)
  files = glob.glob(os.path.join(source.path, 'Split-train', '*.tfrecord'))
  assert files
  for f in files:  # Later epochs come from memory: the files are not read.
    os.remove(f)
  _assert_same(_batches(reader.epoch(1)), want)
  _assert_same(_batches(reader.epoch(2, start=3)), want[3:])


def test_over_the_memory_bound_every_epoch_reads_the_files(source):
  want = _from_files(source)
  reader = epoch_data.EpochBatches(source, shuffle_groups=False,
                                   in_memory_bytes=0, **ARGS)
  assert not reader.in_memory
  _assert_same(_batches(reader.epoch(0)), want)
  _assert_same(_batches(reader.epoch(1, start=2)), want[2:])
  for f in glob.glob(os.path.join(source.path, 'Split-train', '*.tfrecord')):
    os.remove(f)
  with pytest.raises(Exception, match='tfrecord'):
    _batches(reader.epoch(2))


def test_a_resumed_first_epoch_starts_at_its_batch_then_epochs_are_whole(
    source):
  want = _from_files(source)
  reader = epoch_data.EpochBatches(source, shuffle_groups=False, **ARGS)
  _assert_same(_batches(reader.epoch(4, start=5)), want[5:])
  _assert_same(_batches(reader.epoch(5)), want)


def test_decoded_bytes_counts_every_step_and_lane(source, tmp_path):
  meta = source.meta
  steps = meta['num_batches'] * meta['batch_size'] * meta['num_unroll']
  lanes = meta['num_batches'] * meta['batch_size']
  assert epoch_data.decoded_bytes(source, 0.0) == steps * (
      4 * 2 + 8 + 4 + 4) + 8 * lanes
  assert epoch_data.decoded_bytes(source, 0.2) == steps * (
      4 * 2 + 8 + 4 + 4 + 4) + 8 * lanes
  dense = batches_lib.BatchSource.open(helpers.write_batches(
      str(tmp_path / 'd'), {'train': helpers.random_sequences(
          [5, 9, 3], 2, float_labels=True)}, batch_size=2, num_unroll=4,
      mode='dense'), 'train')
  steps = (dense.meta['num_batches'] * dense.meta['batch_size'] *
           dense.meta['num_unroll'])
  assert epoch_data.decoded_bytes(dense, 0.0) == steps * (
      4 * 2 + 4 + 4 + 4 + 8)
