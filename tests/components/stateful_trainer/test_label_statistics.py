"""The trainer reads the label statistics the batcher recorded; it scans the
labels only of batches written before the batcher recorded them."""

from __future__ import annotations


import pytest

from components.stateful import batches as batches_lib
from components.stateful_trainer import run as trainer_run
from tests.components.sequence_batcher import helpers as sb_helpers
from tests.components.stateful_trainer import helpers

B, T, F = 2, 3, 2


class _CountingScan:
  """``batches.scan_labels``, counting its calls."""

  def __init__(self):
    self.splits = []
    self._scan = batches_lib.scan_labels

  def __call__(self, source):
    self.splits.append(source.split)
    return self._scan(source)


def _root(tmp_path, **kwargs):
  splits = {
      'train': helpers.random_sequences([6, 8, 3, 5], F, seed=61, **kwargs),
      'eval': helpers.random_sequences([4, 7], F, seed=62, **kwargs)}
  return helpers.write_batches(str(tmp_path / 'b'), splits, batch_size=B,
                               num_unroll=T, label_kind='per_step')


def _args(tmp_path, root):
  return trainer_run.TrainerArgs(
      batches_uri=root, model_uri=str(tmp_path / 'm'),
      serving_model_dir=str(tmp_path / 'm' / 'Format-Serving'),
      model_run_dir=str(tmp_path / 'r'), eval_split='eval')


@pytest.mark.parametrize('labels', [dict(per_step_labels=True, num_classes=3),
                                    dict(float_labels=True)])
def test_prepare_reads_the_recorded_statistics(tmp_path, monkeypatch, labels):
  root = _root(tmp_path, **labels)
  scans = _CountingScan()
  monkeypatch.setattr(batches_lib, 'scan_labels', scans)
  recorded = trainer_run.prepare(_args(tmp_path, root))
  assert scans.splits == []  # Neither split's labels were read.

  # Batches of an older batcher: each split scanned once, the same spec.
  sb_helpers.forget_label_statistics(root, ('train', 'eval'))
  scanned = trainer_run.prepare(_args(tmp_path / 'old', root))
  assert scans.splits == ['train', 'eval']
  assert scanned.spec == recorded.spec
  if not labels.get('float_labels'):  # max(label) + 1, from either.
    assert recorded.spec.num_classes == 3


def test_recorded_equals_scanned(tmp_path):
  root = _root(tmp_path, float_labels=True)
  for split in ('train', 'eval'):
    source = batches_lib.BatchSource.open(root, split)
    assert 'labels' in source.meta
    assert (batches_lib.label_statistics(source) ==
            batches_lib.scan_labels(source))
