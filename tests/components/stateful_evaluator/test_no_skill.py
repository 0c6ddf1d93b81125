"""The no-skill predictors come from the label statistics the batcher
recorded with the training split: the evaluator does not scan its labels
(only those of batches written before the batcher recorded them)."""

from __future__ import annotations


import numpy as np
import pytest

from components.stateful import batches as batches_lib
from components.stateful import model_spec as ms
from components.stateful_evaluator.extraction import extracts as X
from components.stateful_evaluator.extraction import models as models_lib
from tests.components.sequence_batcher import helpers as sb_helpers
from tests.components.stateful_evaluator import helpers


def _spec(task, label_kind, num_classes=None):
  return ms.ModelSpec(batch_size=3, num_unroll=4, stateful=True,
                      feature_names=tuple(helpers.FEATURES),
                      label_kind=label_kind, task=task,
                      num_classes=num_classes,
                      output_size=1 if task == ms.REGRESSION else None)


def _labelled(seqs, label_kind):
  if label_kind == ms.PER_SEQUENCE:
    return np.array([s.labels[-1] for s in seqs])
  return np.concatenate([s.labels for s in seqs])


@pytest.mark.parametrize('task, label_kind', [
    (ms.CLASSIFICATION, ms.PER_SEQUENCE), (ms.CLASSIFICATION, ms.PER_STEP),
    (ms.REGRESSION, ms.PER_STEP)])
def test_no_skill_from_the_recorded_statistics(tmp_path, monkeypatch, task,
                                               label_kind):
  train = helpers.make_sequences([5, 9, 2, 7, 4, 6, 3], label_kind=label_kind,
                                 task=task, seed=4)
  root = helpers.write_batches(str(tmp_path / 'b'), train[:2],
                               label_kind=label_kind, train=train)
  scans = []
  scan = batches_lib.scan_labels
  monkeypatch.setattr(batches_lib, 'scan_labels',
                      lambda source: scans.append(source.split) or scan(source))
  spec = _spec(task, label_kind,
               num_classes=3 if task == ms.CLASSIFICATION else None)
  no_skill = X.NoSkill.from_batches(root, 'train', spec)
  assert scans == []
  labels = _labelled(train, label_kind)
  assert no_skill.source == f'{labels.size} labelled steps of the \'train\' split'
  if task == ms.CLASSIFICATION:
    counts = np.bincount(labels, minlength=3)
    assert no_skill.majority == int(np.argmax(counts))
    assert counts[0] != counts[1]  # A majority to find.
  else:
    np.testing.assert_allclose(no_skill.mean, labels.astype(np.float64).mean(),
                               rtol=1e-12)

  # Batches of an older batcher: scanned once, the same predictors.
  sb_helpers.forget_label_statistics(root, ('train',))
  assert X.NoSkill.from_batches(root, 'train', spec) == no_skill
  assert scans == ['train']


def test_labels_that_are_not_class_ids(tmp_path):
  train = helpers.make_sequences([5, 9, 2], label_kind=ms.PER_STEP,
                                 task=ms.CLASSIFICATION, seed=4)
  train[1].labels[:] = -1
  root = helpers.write_batches(str(tmp_path / 'b'), train[:1],
                               label_kind=ms.PER_STEP, train=train)
  with pytest.raises(models_lib.EvaluationError, match='not class ids'):
    X.NoSkill.from_batches(root, 'train',
                           _spec(ms.CLASSIFICATION, ms.PER_STEP, 2))
