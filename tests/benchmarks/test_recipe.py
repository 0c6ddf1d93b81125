"""benchmarks/recipe.py's pure functions: the floor test and the reading."""

from benchmarks import real_data
from benchmarks import recipe


def _case(name):
  c = real_data.Case(name)
  c.meta = {'task': 'classification', 'label_kind': 'per_sequence'}
  return c


def test_level_within_the_spread_counts_as_at_or_above():
  floor = recipe.summarize([0.80, 0.90])
  assert recipe.at_or_above(recipe.summarize([0.75, 0.78]), floor)
  assert not recipe.at_or_above(recipe.summarize([0.70, 0.71]), floor)
  assert recipe.at_or_above(recipe.summarize([None]), floor) is None


def test_compare_and_reading():
  cases = [_case('A'), _case('B'), _case('C')]
  runs = lambda *v: [{'accuracy': x} for x in v]  # pylint: disable=unnecessary-lambda-assignment
  res = {'A': {'keras': runs(0.8, 0.8), 'plain': runs(0.5, 0.6),
               'plain nocarve': runs(0.8, 0.82)},
         'B': {'keras': runs(0.9, 0.9), 'plain': runs(0.9, 0.91),
               'plain nocarve': runs(0.7, 0.71)},
         'C': {'keras': runs(0.5, 0.5), 'plain': runs(0.6, 0.6),
               'plain nocarve': runs(0.6, 0.61)}}
  cmp = recipe.compare(cases, res, 'plain nocarve', 'plain')
  assert cmp == {'better': ['A'], 'worse': ['B'], 'level': ['C']}
  lines = recipe.reading(cases, res, ['plain', 'plain nocarve'])
  assert lines[0] == '* plain: at or above the Keras floor on 2 of 3 sets.'
  assert 'better beyond the spread on 1 (A)' in lines[2]


def test_a_variant_names_the_longest_training_sequence():
  import numpy as np  # pylint: disable=g-import-not-at-top
  train = [(np.zeros((n, 1)), np.zeros(n)) for n in (5, 12, 7)]
  assert recipe.with_longest(['--num-unroll', '{longest}', '--seed', '3'],
                             train) == ['--num-unroll', '12', '--seed', '3']


def test_the_gru_is_also_read_against_a_keras_gru():
  cases = [_case('A'), _case('B')]
  runs = lambda *v: [{'accuracy': x} for x in v]  # pylint: disable=unnecessary-lambda-assignment
  res = {'A': {'keras': runs(0.8, 0.8), 'keras_gru': runs(0.4, 0.4),
               'gru': runs(0.5, 0.5)},
         'B': {'keras': runs(0.5, 0.5), 'keras_gru': runs(0.9, 0.9),
               'gru': runs(0.6, 0.6)}}
  lines = recipe.reading(cases, res, ['gru', 'keras_gru'])
  assert lines[0] == '* gru: at or above the Keras floor on 1 of 2 sets.'
  assert lines[2] == ("* gru against its own architecture's floor "
                      '(keras_gru): at or above on 1 of 2 sets (below: B).')


def test_a_variant_of_a_variant_is_read_against_its_own_base():
  cases = [_case('A')]
  runs = lambda *v: [{'accuracy': x} for x in v]  # pylint: disable=unnecessary-lambda-assignment
  res = {'A': {'keras': runs(0.5, 0.5), 'plain': runs(0.9, 0.9),
               'plain refit': runs(0.6, 0.6),
               'plain refit loss': runs(0.7, 0.7)}}
  lines = recipe.reading(cases, res, ['plain', 'plain refit',
                                      'plain refit loss'])
  assert '* plain refit against plain: better beyond the spread on 0' in (
      lines[3])
  assert lines[4].startswith('* plain refit loss against plain refit: '
                             'better beyond the spread on 1 (A)')


def test_the_run_plan_with_and_without_variants_only():
  variants = {'': [], 'e40': ['--epochs', '40']}
  plan = recipe.run_plan(['plain', 'keras', 'gru'], variants, ['plain'])
  assert plan == [('keras', 'keras', []), ('plain', 'plain', []),
                  ('plain', 'plain e40', ['--epochs', '40']),
                  ('gru', 'gru', [])]
  # --variants-only: a variant model's defaults are not run again; the
  # Keras floor and the models without variants still are.
  only = recipe.run_plan(['plain', 'keras', 'gru'], variants, ['plain'],
                         variants_only=True)
  assert only == [('keras', 'keras', []),
                  ('plain', 'plain e40', ['--epochs', '40']),
                  ('gru', 'gru', [])]


def test_results_of_several_runs_merge_by_set_and_column(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  first, second = tmp_path / 'a.json', tmp_path / 'b.json'
  first.write_text(json.dumps({'A': {'keras': [1], 'plain': [2]},
                               'B': {'keras': [3]}}))
  second.write_text(json.dumps({'A': {'plain': [5], 'gru nocarve': [6]},
                                'C': {'plain': [7]}}))
  merged = recipe.merged_results([str(first), str(second)])
  assert merged == {'A': {'keras': [1], 'plain': [5], 'gru nocarve': [6]},
                    'B': {'keras': [3]}, 'C': {'plain': [7]}}
