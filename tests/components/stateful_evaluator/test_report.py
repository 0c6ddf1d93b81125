"""The HTML report: self-contained, escaped, plots that match the data."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from components.stateful_evaluator import report

SVG_NS = '{http://www.w3.org/2000/svg}'


def _docs(with_baseline: bool):
  names = ['overall', 'length:short', 'length:long', 'segment:first',
           'segment:later']
  cand = {n: {'loss': 0.5, 'accuracy': 0.8, 'recall/1': 0.7,
              'weighted_count': 10.0, 'num_sequences': 4.0} for n in names}
  cand['length:long']['accuracy'] = None  # Empty bucket.
  base = {n: dict(v, accuracy=0.6) for n, v in cand.items()}
  base['length:long']['accuracy'] = None
  metrics = {
      'model': {'uri': '/m/<candidate>'},
      'baseline': {'uri': '/m/base'} if with_baseline else None,
      'batches': {'uri': '/b', 'split': 'eval', 'batch_size': 2,
                  'num_unroll': 3, 'mode': 'packed',
                  'label_kind': 'per_step'},
      'task': 'classification', 'primary_metric': 'accuracy',
      'metric_names': ['loss', 'accuracy', 'recall/1', 'weighted_count',
                       'num_sequences'],
      'slices': {'names': names, 'length_edges': [4.0],
                 'length_ranges': {'length:short': [1, 4],
                                   'length:long': [None, None]}},
      'metrics': {'candidate': cand, 'baseline': base if with_baseline else
                  None},
      'by_position': {
          'edges': [0, 2, 4, 6, 8],
          'candidate': {'error': [0.1, None, 'nan', 0.3],
                        'loss': [1, 1, 1, 1], 'weight': [1, 0, 1, 1]},
          'baseline': ({'error': [0.2, 0.2, 0.2, 0.2], 'loss': [1] * 4,
                        'weight': [1] * 4} if with_baseline else None)},
      'eval_config': {'equivalence_tolerance': 1e-4},
  }
  validation = {
      'blessed': False, 'message': 'Not blessed: <b>bad</b>',
      'reasons': ['threshold failed: accuracy <0.9'],
      'thresholds': {'checks': [{
          'metric': 'accuracy', 'slice': 'overall', 'kind': 'value',
          'passed': False, 'value': 0.8, 'baseline': None,
          'threshold': {'lower_bound': 0.9}, 'message': '0.8 < 0.9'}],
                     'skipped': []},
      'equivalence': {'ok': True, 'message': 'match',
                      'note': 'ran the <twin>', 'sequences': [{
          'key': 'k<1>', 'length': 7, 'segments': 3, 'max_abs_diff': 0.0,
          'first_bad_step': None, 'first_bad_segment': None}]},
  }
  return metrics, validation


def _svgs(page):
  return [ET.fromstring(m) for m in re.findall(r'<svg.*?</svg>', page,
                                               re.S)]


@pytest.mark.parametrize('with_baseline, figures', [(True, 3), (False, 2)])
def test_page_has_the_figures_and_escapes_text(with_baseline, figures):
  page = report.render(*_docs(with_baseline))
  svgs = _svgs(page)
  assert len(svgs) == figures
  assert '<b>bad</b>' not in page and '&lt;b&gt;bad&lt;/b&gt;' in page
  assert 'k&lt;1&gt;' in page and '/m/&lt;candidate&gt;' in page
  assert 'Note: ran the &lt;twin&gt;' in page
  assert 'NOT BLESSED' in page
  assert '(empty)' in page  # The empty length bucket is labelled.
  assert ('baseline vs candidate' in page) is with_baseline


def test_bar_chart_draws_one_bar_per_value_and_marks_missing_ones():
  metrics, validation = _docs(True)
  by_slice = _svgs(report.render(metrics, validation))[0]
  bars = by_slice.findall(f'{SVG_NS}rect[{SVG_NS}title]')
  # 4 slices x 2 models, minus the two missing long-bucket accuracies.
  assert len(bars) == 6
  titles = sorted(b.find(f'{SVG_NS}title').text for b in bars)
  assert 'candidate len short: 0.8' in titles
  assert 'baseline seg later: 0.6' in titles
  assert sum(t.text == 'n/a' for t in by_slice.iter(f'{SVG_NS}text')) == 2
  # Taller bar for the higher value.
  heights = {b.find(f'{SVG_NS}title').text.split(':')[0]:
             float(b.get('height')) for b in bars}
  assert heights['candidate len short'] > heights['baseline len short']


def test_line_chart_breaks_at_missing_values_and_marks_segments():
  metrics, validation = _docs(True)
  by_position = _svgs(report.render(metrics, validation))[1]
  lines = by_position.findall(f'{SVG_NS}polyline')
  # Candidate: points at bins 0 and 3 only, in two runs; baseline: one run.
  runs = sorted(len(p.get('points').split()) for p in lines)
  assert runs == [1, 1, 4]
  # Segment boundaries every T=3 steps inside [0, 6].
  dashed = [l for l in by_position.findall(f'{SVG_NS}line')
            if l.get('stroke-dasharray') == '4 3']
  assert len(dashed) == 2


@pytest.mark.parametrize('lo, hi', [(0, 1), (0, 0.037), (-2, 13), (0, 0),
                                    (5, 5)])
def test_nice_ticks_cover_the_range(lo, hi):
  ticks = report.nice_ticks(lo, hi)
  assert ticks[0] <= lo and ticks[-1] >= hi
  assert 2 <= len(ticks) <= 12
  steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
  assert len(steps) == 1
