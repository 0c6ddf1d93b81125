"""The run's phase timings (issue 48, item 4): wall seconds of setup,
adapt, training, the validation carve's passes, the refit and the export,
in ``history.json``'s ``phases`` and ``RunResult.phases``, one log line
each; timing only (the trained model is the same with or without it)."""

import json
import os
import re

import pytest

from components.stateful_trainer import progress
from components.stateful_trainer import run as runner
from components.stateful_trainer import settings
from tests.components.stateful_trainer import helpers

B, T = 4, 8


@pytest.fixture(scope='module')
def batches_dir(tmp_path_factory):
  return helpers.random_train_batches(
      str(tmp_path_factory.mktemp('batches')), 40, seed=2,
      batch_size=B, num_unroll=T)


def test_run_records_its_phases(batches_dir, tmp_path, caplog):
  caplog.set_level('INFO')
  out = str(tmp_path)
  result = runner.run(runner.TrainerArgs(
      batches_uri=batches_dir, model_uri=os.path.join(out, 'm'),
      serving_model_dir=os.path.join(out, 'm', 'Format-Serving'),
      model_run_dir=os.path.join(out, 'r'), eval_split=None,
      hyperparameters={'model': 'lstm', 'units': [4]},
      train=settings.TrainConfig(epochs=2, log_every_n_steps=0,
                                 validation_fraction=0.25, refit=True)))
  with open(os.path.join(out, 'r', runner.HISTORY_FILE)) as f:
    phases = json.load(f)['phases']
  assert phases == result.phases
  assert sorted(phases) == sorted(progress.PHASES + ('total',))
  assert all(v >= 0 for v in phases.values())
  # A carve run and a refit: every phase ran.
  assert result.fit.steps > 0 and phases['refit'] > 0
  assert phases['training'] > 0 and phases['export'] > 0
  assert phases['validation'] > 0
  parts = sum(v for k, v in phases.items() if k != 'total')
  assert parts <= phases['total'] + 0.01
  assert parts >= 0.9 * phases['total']  # Nothing large left out.
  logged = re.findall(r'phase (\w+): ([\d.]+)s', caplog.text)
  # One line each (validation's once the refit's carve score is in).
  assert sorted(name for name, _ in logged) == sorted(progress.PHASES)
  for name, seconds in logged:
    assert float(seconds) == pytest.approx(phases[name], abs=0.01)
  assert 'phases (seconds): setup' in caplog.text


def test_phases_end_and_add():
  now = [10.0]
  phases = progress.Phases(clock=lambda: now[0])
  now[0] = 11.5
  phases.end('setup')
  now[0] = 15.0
  phases.end('training', less=1.0)
  phases.add('validation', 1.0, quiet=True)
  phases.add('validation', 0.5)
  now[0] = 16.0
  phases.end('export')
  assert phases.as_dict() == {
      'setup': 1.5, 'adapt': 0.0, 'training': 2.5, 'validation': 1.5,
      'refit': 0.0, 'export': 1.0, 'total': 6.0}
