"""benchmarks/main_job_profile.py: the run order, ratios, tables and the
section (no pipeline run)."""

import os

import pytest

from benchmarks import harness
from benchmarks import main_job_profile as mjp
from benchmarks.harness import recorded


def _run(which, pair, wall, trainer, phases=None):
  return {'which': which, 'pair': pair, 'wall_seconds': wall,
          'pipeline_seconds': wall - 5,
          'components': {'Transform': 20.0, 'StatefulTrainer': trainer,
                         'CsvExampleGen': 1.0},
          'phases': phases}


PHASES = {'setup': 1.0, 'adapt': 5.0, 'training': 6.0, 'validation': 2.0,
          'refit': 1.5, 'export': 2.5, 'total': 18.4}
RUNS = [_run('baseline', 0, 100.0, 48.0), _run('current', 0, 40.0, 18.0,
                                                PHASES),
        _run('baseline', 1, 110.0, 50.0), _run('current', 1, 50.0, 20.0,
                                                PHASES)]


def test_interleaved_order():
  assert recorded.interleaved(2, True) == [('baseline', 0), ('current', 0),
                                      ('baseline', 1), ('current', 1)]
  assert recorded.interleaved(2, False) == [('current', 0), ('current', 1)]
  with pytest.raises(ValueError):
    recorded.interleaved(0, True)


def test_the_command_is_make_run_s():
  cmd = mjp.command('data/sample', '/tmp/x')
  assert cmd[1:] == ['-m', 'pipeline.local_runner', '--data-root',
                     'data/sample', '--output-dir', '/tmp/x']


def test_ratios_per_pair_and_overall():
  assert mjp.ratios(RUNS) == [pytest.approx(0.4), pytest.approx(50 / 110)]
  assert mjp.overall_ratio(RUNS) == pytest.approx(45 / 105)
  assert mjp.overall_ratio([r for r in RUNS if r['which'] == 'current']) is (
      None)
  assert mjp.ratios([RUNS[1]]) == [None]


def test_component_rows_in_pipeline_order_with_the_means_ratio():
  rows = mjp.component_rows(RUNS)
  assert [r[0] for r in rows] == ['CsvExampleGen', 'Transform',
                                  'StatefulTrainer',
                                  'pipeline (LocalDagRunner.run)',
                                  'process wall']
  trainer = rows[2]
  assert trainer[1:5] == ['48.0', '18.0', '50.0', '20.0']
  assert trainer[5] == f'{19 / 49:.2f}x'
  assert rows[-1][5] == f'{45 / 105:.2f}x'


def test_phase_rows_only_of_runs_that_record_them():
  rows = mjp.phase_rows(RUNS)
  assert [r[0] for r in rows] == list(mjp.PHASES) + ['trainer run (total)']
  assert rows[0][1:3] == ['1.0', '1.0'] and len(rows[0]) == 4
  assert mjp.phase_rows([RUNS[0]]) == []


def test_history_path(tmp_path):
  assert mjp.history_path(str(tmp_path)) is None
  where = tmp_path / 'pipeline_root' / 'StatefulTrainer' / 'model_run' / '7'
  os.makedirs(where)
  (where / 'history.json').write_text('{}')
  assert mjp.history_path(str(tmp_path)) == str(where / 'history.json')


def test_report_and_section(tmp_path):
  results = {
      'command': 'python -m benchmarks.main_job_profile --baseline-tree '
                 '/tmp/old', 'runs': RUNS,
      'code': {'root': '.', 'commit': 'a' * 40, 'uncommitted': []},
      'baseline_code': {'root': '/tmp/old', 'commit': 'b' * 40,
                        'uncommitted': []},
      'run': {'date': '2026-12-07 10:00 UTC', 'seconds': 300,
              'load_before': '1', 'load_after': '2', 'machine': 'm',
              'versions': 'v'},
      'notes': ['a reading']}
  text = mjp.report(results)
  assert text.startswith(mjp.TITLE)
  assert '**0.43x**' in text and '**missed**' in text
  assert '| 1 | 100.0 | 40.0 | 0.40x |' in text
  assert '* a reading' in text
  changed = dict(results, runs=[dict(RUNS[0], code_changed=True)] + RUNS[1:])
  assert 'changed during baseline 1' in mjp.report(changed)
  path = str(tmp_path / 'B.md')
  harness.write_section(path, mjp.SECTION, text)
  with open(path) as f:
    assert mjp.TITLE in f.read()
