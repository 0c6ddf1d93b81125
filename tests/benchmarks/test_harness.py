"""benchmarks/harness: a section written from its blocks."""

import glob
import os
import re
import types

from benchmarks import harness


def test_write_report_joins_blocks_one_blank_line_apart(tmp_path):
  path = tmp_path / 'BENCHMARKS.md'
  args = types.SimpleNamespace(output=str(path), quick=False)
  harness.write_report(args, 'padding', '## 1. Title', None, 'A paragraph.',
                       ['* one', '* two'], '', harness.table(['a'], [[1]]))
  text = path.read_text()
  body = text.split('<!-- BEGIN padding -->\n')[1].split('\n<!-- END')[0]
  assert body == ('## 1. Title\n\nA paragraph.\n\n* one\n* two\n\n'
                  '| a |\n|:---|\n| 1 |')


def test_parser_adds_the_named_shared_options():
  args = harness.parser('x', 'seeds', 'keep', 'from_results').parse_args(
      ['--seeds', '2', '--keep', '--from-results', 'a.json', 'b.json'])
  assert (args.seeds, args.keep, args.from_results) == (
      2, True, ['a.json', 'b.json'])
  assert not hasattr(harness.parser('x').parse_args([]), 'seeds')


def test_trainer_args_lay_out_a_run_under_its_work_folder():
  args = harness.trainer_args('/b', '/w', {'epochs': 3}, task='regression')
  assert (args.batches_uri, args.model_uri, args.serving_model_dir,
          args.model_run_dir, args.eval_split, args.task) == (
              '/b', '/w/model', '/w/model/Format-Serving', '/w/run', None,
              'regression')
  assert (args.train.epochs, args.train.log_every_n_steps) == (3, 0)


def test_every_harness_name_a_script_uses_exists():
  """``harness.<name>`` in every benchmark script resolves (a script's
  missing name fails only when its measurement runs, minutes in)."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  modules = {os.path.basename(p)[:-3] for p in glob.glob(
      os.path.join(root, 'benchmarks', 'harness', '*.py'))}
  missing = []
  for path in glob.glob(os.path.join(root, 'benchmarks', '*.py')):
    with open(path) as f:
      names = set(re.findall(r'\bharness\.(\w+)', f.read()))
    missing += [(os.path.basename(path), n) for n in sorted(names)
                if n not in modules and not hasattr(harness, n)]
  assert not missing


def test_component_seconds_reads_the_summary():
  from benchmarks.harness import pipeline_runs  # pylint: disable=g-import-not-at-top
  summary = {'components': {'Transform': {'seconds': 1.5},
                            'StatefulTrainer': {'seconds': 2.0}}}
  assert pipeline_runs.component_seconds(summary) == {
      'Transform': 1.5, 'StatefulTrainer': 2.0}
  assert pipeline_runs.component_seconds({}) == {}
