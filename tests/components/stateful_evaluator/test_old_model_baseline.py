"""A model exported by an earlier version loads as the evaluator's baseline.

The fixture is the main job's model of commit 91548d4 (``make run`` on the
bundled sample: its ``stateful/`` folder, whose ``module.py`` is that
commit's ``default_model.py``), and ``expected.npz``: two consecutive
batches of random features and the logits that commit's code computed for
them, state carried across the batches. Loaded by today's code (through
``compat``'s table of moved names where its module copy needs one), it must
compute the same logits and be accepted as a baseline."""

from __future__ import annotations

import os

import numpy as np

from components.stateful.state import protocol as state
from components.stateful_evaluator import evaluation
from components.stateful_evaluator.extraction import models as models_lib

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'fixtures', 'model_91548d4')


def _meta():
  return {'batch_size': 8, 'num_unroll': 32,
          'feature_names': ['f0', 'f1', 'f2', 'f3', 'f4'],
          'label_kind': 'per_sequence', 'label_dtype': 'int64'}


def test_the_91548d4_model_computes_what_it_computed_then():
  loaded = models_lib.load_model(FIXTURE, _meta())
  expected = np.load(os.path.join(FIXTURE, 'expected.npz'))
  state.zero_all(loaded.model)
  for i in range(2):  # State carried from the first batch to the second.
    got = loaded.model(expected['features'][i], training=False).numpy()
    np.testing.assert_allclose(got, expected['logits'][i], rtol=1e-5,
                               atol=1e-5)


def test_the_91548d4_model_is_a_comparable_baseline(tmp_path):
  baseline, note = evaluation._baseline(  # pylint: disable=protected-access
      FIXTURE, str(tmp_path / 'candidate'), _meta(),
      models_lib.load_model(FIXTURE, _meta()).spec)
  assert baseline is not None, note
  assert note == f'baseline {FIXTURE}'
