"""A self-contained HTML report with inline SVG plots. Plain Python.

``render(document)`` turns ``stateful_evaluation.json`` (whose figures are
TFMA's results, read back) into one HTML page with no external resources: a
quick view beside TFMA's own notebook views. Tables: the headline metrics of
the candidate beside the no-skill predictors and the baseline, the no-skill
gate, the slices, the confusion matrix (classification), the chunking
equivalence check and TFMA's threshold verdict; figures: the primary metric
of every model, the primary metric by slice, the confusion matrix.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

CANDIDATE_COLOR = '#1f77b4'
BASELINE_COLOR = '#ff7f0e'

Series = Tuple[str, Sequence[Optional[float]], str]  # (name, values, color)


def _esc(value: Any) -> str:
  return html.escape(str(value), quote=True)


def _num(value: Any) -> Optional[float]:
  """A finite float, or None (missing, null, 'nan' strings)."""
  if value is None or isinstance(value, bool):
    return None
  try:
    value = float(value)
  except (TypeError, ValueError):
    return None
  return value if math.isfinite(value) else None


def _fmt(value: Any, digits: int = 4) -> str:
  if value is None:
    return 'n/a'
  if isinstance(value, str):
    return value
  if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
    return str(int(value))
  if isinstance(value, float):
    return f'{value:.{digits}g}'
  return str(value)


def nice_ticks(lo: float, hi: float, count: int = 5) -> List[float]:
  """Round tick values covering ``[lo, hi]``."""
  if hi <= lo:
    hi = lo + 1.0
  raw = (hi - lo) / max(1, count)
  mag = 10 ** math.floor(math.log10(raw))
  step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
  start = math.floor(lo / step) * step
  ticks = []
  t = start
  while t < hi + step * 0.999:
    ticks.append(round(t, 12))
    t += step
  return ticks


class _Frame:
  """Plot area and the mapping from data to SVG coordinates."""

  def __init__(self, width: int, height: int, y_lo: float, y_hi: float,
               left: int = 56, right: int = 16, top: int = 50,
               bottom: int = 52):
    self.width, self.height = width, height
    self.x0, self.x1 = left, width - right
    self.y0, self.y1 = height - bottom, top  # y0: bottom pixel.
    self.ticks = nice_ticks(y_lo, y_hi)
    self.lo, self.hi = self.ticks[0], self.ticks[-1]

  def y(self, value: float) -> float:
    span = (self.hi - self.lo) or 1.0
    return self.y0 - (value - self.lo) / span * (self.y0 - self.y1)

  def axes(self, title: str, ylabel: str, xlabel: str) -> List[str]:
    parts = [f'<text x="{self.width / 2:.1f}" y="18" text-anchor="middle" '
             f'font-size="13" font-weight="bold">{_esc(title)}</text>']
    for t in self.ticks:
      y = self.y(t)
      parts.append(f'<line x1="{self.x0}" x2="{self.x1}" y1="{y:.1f}" '
                   f'y2="{y:.1f}" stroke="#e6e6e6"/>')
      parts.append(f'<text x="{self.x0 - 6}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{_esc(_fmt(t, 3))}</text>')
    parts.append(f'<line x1="{self.x0}" x2="{self.x0}" y1="{self.y1}" '
                 f'y2="{self.y0}" stroke="#555"/>')
    parts.append(f'<line x1="{self.x0}" x2="{self.x1}" y1="{self.y0}" '
                 f'y2="{self.y0}" stroke="#555"/>')
    mid = (self.y0 + self.y1) / 2
    parts.append(f'<text x="14" y="{mid:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {mid:.1f})">{_esc(ylabel)}</text>')
    parts.append(f'<text x="{(self.x0 + self.x1) / 2:.1f}" '
                 f'y="{self.height - 6}" text-anchor="middle">'
                 f'{_esc(xlabel)}</text>')
    return parts


def _legend(series: Sequence[Series], x: float) -> List[str]:
  """One row of legend entries under the title, from ``x``."""
  parts = []
  for i, (name, _, color) in enumerate(series):
    left = x + 100 * i
    parts.append(f'<rect x="{left:.1f}" y="29" width="10" height="10" '
                 f'fill="{color}"/>')
    parts.append(f'<text x="{left + 14:.1f}" y="38">{_esc(name)}</text>')
  return parts


def _svg(width: int, height: int, parts: List[str], label: str) -> str:
  return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
          f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
          f'aria-label="{_esc(label)}" font-family="Helvetica, Arial, '
          f'sans-serif" font-size="11">' + ''.join(parts) + '</svg>')


def _range(series: Sequence[Series]) -> Tuple[float, float]:
  values = [v for _, vs, _ in series for v in map(_num, vs) if v is not None]
  if not values:
    return 0.0, 1.0
  return min(0.0, min(values)), max(0.0, max(values))


def bar_chart(categories: Sequence[str], series: Sequence[Series], *,
              title: str, ylabel: str, xlabel: str = '', width: int = 620,
              height: int = 300) -> str:
  """Grouped bars: one group per category, one bar per series.

  Missing values (None/NaN) are drawn as an "n/a" label instead of a bar.
  """
  frame = _Frame(width, height, *_range(series))
  parts = frame.axes(title, ylabel, xlabel)
  n = max(1, len(categories))
  group_w = (frame.x1 - frame.x0) / n
  bar_w = group_w * 0.8 / max(1, len(series))
  base = frame.y(max(frame.lo, min(0.0, frame.hi)))
  for i, cat in enumerate(categories):
    gx = frame.x0 + i * group_w + group_w * 0.1
    for j, (name, values, color) in enumerate(series):
      value = _num(values[i]) if i < len(values) else None
      x = gx + j * bar_w
      if value is None:
        parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{base - 4:.1f}" '
                     'text-anchor="middle" fill="#999">n/a</text>')
        continue
      y = frame.y(value)
      top, h = min(y, base), abs(base - y)
      parts.append(
          f'<rect x="{x:.1f}" y="{top:.1f}" width="{bar_w * 0.95:.1f}" '
          f'height="{max(h, 0.5):.1f}" fill="{color}"><title>'
          f'{_esc(name)} {_esc(cat)}: {_esc(_fmt(value, 6))}</title></rect>')
    parts.append(f'<text x="{frame.x0 + (i + 0.5) * group_w:.1f}" '
                 f'y="{frame.y0 + 16}" text-anchor="middle">{_esc(cat)}'
                 '</text>')
  parts += _legend(series, frame.x0)
  return _svg(width, height, parts, title)


_STYLE = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;
margin:24px;color:#222;max-width:1100px}h1{font-size:22px}
h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;
padding:3px 8px;font-size:13px;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}.badge{display:inline-block;padding:4px 10px;
border-radius:4px;color:#fff;font-weight:bold}.ok{background:#2ca02c}
.bad{background:#d62728}.pass{color:#2ca02c}
.fail{color:#d62728;font-weight:bold}
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}
.fig{display:inline-block;margin:6px 12px 6px 0;vertical-align:top}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]],
           left: int = 1) -> str:
  out = ['<table><tr>']
  out += [f'<th class="{"l" if i < left else ""}">{_esc(h)}</th>'
          for i, h in enumerate(header)]
  out.append('</tr>')
  for row in rows:
    out.append('<tr>')
    for i, cell in enumerate(row):
      cls = 'l' if i < left else ''
      if isinstance(cell, tuple):  # (html, css class): pre-rendered.
        out.append(f'<td class="{cls} {cell[1]}">{cell[0]}</td>')
      else:
        out.append(f'<td class="{cls}">{_esc(_fmt(cell))}</td>')
    out.append('</tr>')
  out.append('</table>')
  return ''.join(out)


def heatmap(matrix: Sequence[Sequence[float]], *, title: str,
            size: int = 300) -> str:
  """A confusion-matrix figure: rows are labels, columns predictions; the
  shade is the share of the row."""
  k = len(matrix)
  if k == 0:
    return ''
  cell = (size - 60) / k
  parts = [f'<text x="{size / 2:.1f}" y="14" text-anchor="middle">'
           f'{_esc(title)}</text>']
  for i, row in enumerate(matrix):
    total = sum(row) or 1.0
    for j, value in enumerate(row):
      share = value / total
      x, y = 50 + j * cell, 30 + i * cell
      shade = int(255 - 200 * share)
      parts.append(
          f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell:.1f}" '
          f'height="{cell:.1f}" fill="rgb({shade},{shade},255)" '
          f'stroke="#fff"><title>label {i}, predicted {j}: '
          f'{_esc(_fmt(value))}</title></rect>')
      if k <= 12:
        parts.append(f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}"'
                     f' text-anchor="middle">{_esc(_fmt(value))}</text>')
    parts.append(f'<text x="44" y="{30 + (i + 0.5) * cell + 4:.1f}" '
                 f'text-anchor="end">{i}</text>')
  for j in range(k):
    parts.append(f'<text x="{50 + (j + 0.5) * cell:.1f}" y="{size - 14}" '
                 f'text-anchor="middle">{j}</text>')
  return _svg(size, size, parts, title)


def scatter(points: Sequence[Sequence[float]], *, title: str,
            size: int = 360) -> str:
  """Predicted (y axis) against actual (x axis), with the diagonal."""
  pts = [(float(a), float(b)) for a, b in points
         if math.isfinite(a) and math.isfinite(b)]
  if not pts:
    return ''
  lo = min(min(a, b) for a, b in pts)
  hi = max(max(a, b) for a, b in pts)
  if hi <= lo:
    hi = lo + 1.0
  pad, inner = 46, size - 60

  def x(v):
    return pad + (v - lo) / (hi - lo) * inner

  def y(v):
    return size - 30 - (v - lo) / (hi - lo) * inner

  parts = [f'<line x1="{x(lo):.1f}" y1="{y(lo):.1f}" x2="{x(hi):.1f}" '
           f'y2="{y(hi):.1f}" stroke="#999" stroke-dasharray="4 3"/>']
  parts += [f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="1.6" '
            f'fill="{CANDIDATE_COLOR}" fill-opacity="0.5"/>' for a, b in pts]
  for t in nice_ticks(lo, hi, 4):
    parts.append(f'<text x="{x(t):.1f}" y="{size - 14}" '
                 f'text-anchor="middle">{_fmt(t, 3)}</text>')
    parts.append(f'<text x="{pad - 4}" y="{y(t) + 4:.1f}" '
                 f'text-anchor="end">{_fmt(t, 3)}</text>')
  parts.append(f'<text x="{size / 2:.0f}" y="12" text-anchor="middle">'
               f'{_esc(title)}</text>')
  return _svg(size, size, parts, title)


def render(document: Mapping[str, Any]) -> str:
  """The report page for one evaluation (``stateful_evaluation.json``)."""
  tfma_part = document['tfma']
  metrics: Dict[str, Dict[str, Dict[str, Any]]] = tfma_part['metrics']
  primary = document['primary_metric']
  blessed = bool(document['blessed'])
  models = [m for m in ('candidate', 'baseline', 'no_skill', 'last_value')
            if m in metrics]
  out = ['<!DOCTYPE html><html><head><meta charset="utf-8">',
         '<title>StatefulEvaluator report</title>',
         f'<style>{_STYLE}</style></head><body>',
         '<h1>StatefulEvaluator report</h1>',
         f'<p><span class="badge {"ok" if blessed else "bad"}">'
         f'{"BLESSED" if blessed else "NOT BLESSED"}</span> '
         f'{_esc(document.get("message", ""))}</p>']
  if document.get('reasons'):
    out.append('<ul>' + ''.join(f'<li class="fail">{_esc(r)}</li>'
                                for r in document['reasons']) + '</ul>')
  batches = document['batches']
  out.append(_table(['', 'value'], [
      ('candidate model', document['model']['uri']),
      ('baseline', document['baseline']['note']),
      ('no-skill predictor', document['no_skill']['predictor']),
      ('task', f'{document["task"]}, {document["label_kind"]} labels'),
      ('eval batches', f'{batches["uri"]} [{batches["split"]}]'),
      ('layout', f'B={batches["batch_size"]}, T={batches["num_unroll"]}, '
                 f'{batches.get("mode")}'),
      ('metrics', 'TensorFlow Model Analysis (tfma.load_eval_result on this '
                  'folder)'),
  ], left=2))

  out.append('<h2>Overall</h2>')
  overall = {m: metrics[m].get('overall', {}) for m in models}
  names = sorted(overall.get('candidate', {}))
  diff = metrics.get('diff', {}).get('overall', {})
  header = ['metric'] + models + (['candidate - baseline'] if diff else [])
  rows = []
  for name in names:
    row = [name] + [overall[m].get(name) for m in models]
    if diff:
      row.append(diff.get(name))
    rows.append(row)
  out.append(_table(header, rows))
  if any('/class_' in n for n in names):
    out.append('<p>What the per-class numbers are: <code>recall/class_i'
               '</code> and <code>precision/class_i</code> count a '
               'prediction for the class of its highest probability (arg-max, '
               'top-1), as the confusion matrix below does'
               + ('; <code>auc/class_i</code> is one-vs-rest over class i\'s '
                  'probability' if any(n.startswith('auc/class_')
                                       for n in names) else '')
               + '.</p>')
  if document.get('per_class'):
    out.append('<h2>Per class</h2>')
    measures = sorted({m for v in document['per_class'].values() for m in v})
    out.append(_table(['class'] + measures, [
        [name] + [values.get(m) for m in measures]
        for name, values in document['per_class'].items()]))
  gate = document['no_skill']['gate']
  out.append(f'<p>No-skill gate ({"on" if gate["required"] else "off"}): '
             f'<span class="{"ok" if gate["ok"] else "fail"}">'
             f'{_esc(gate["message"])}</span></p>')
  colors = {'candidate': CANDIDATE_COLOR, 'baseline': BASELINE_COLOR,
            'no_skill': '#7f7f7f', 'last_value': '#2ca02c'}
  out.append('<div class="fig">' + bar_chart(
      [primary], [(m, [overall[m].get(primary)], colors[m]) for m in models],
      title=f'{primary}: candidate and references', ylabel=primary,
      width=420) + '</div>')

  slices = sorted(w for w in metrics.get('candidate', {}) if w != 'overall')
  if slices:
    out.append('<h2>Slices</h2>')
    rows = [[w] + [metrics[m].get(w, {}).get(primary) for m in models]
            + [metrics['candidate'][w].get('example_count')] for w in slices]
    out.append(_table(['slice'] + [f'{m} {primary}' for m in models]
                      + ['examples'], rows))
    out.append('<div class="fig">' + bar_chart(
        slices, [(m, [metrics[m].get(w, {}).get(primary) for w in slices],
                  colors[m]) for m in models],
        title=f'{primary} by slice', ylabel=primary) + '</div>')

  view = document.get('regression_view')
  if view and view.get('points'):
    out.append('<h2>Predicted against actual (candidate)</h2>')
    out.append(f'<p>A uniform sample of {len(view["points"])} of the '
               f'{view["labelled_steps"]} labelled steps (x: label, y: '
               'prediction; dashed: prediction = label).' +
               (' The error by length bucket is in the slices table above.'
                if slices else '') + '</p>')
    out.append('<div class="fig">' + scatter(
        view['points'], title='predicted against actual') + '</div>')

  confusion = tfma_part.get('confusion_matrix') or {}
  if 'overall' in confusion:
    grid = confusion['overall']
    out.append('<h2>Confusion matrix (candidate, overall)</h2>')
    k = len(grid)
    rows = []
    for i, row in enumerate(grid):
      total = sum(row)
      rows.append([f'label {i}'] + list(row) + [
          row[i] / total if total else None])
    out.append(_table(['', *[f'pred {j}' for j in range(k)], 'recall'],
                      rows))
    out.append('<div class="fig">' + heatmap(
        grid, title='confusion matrix (row share)') + '</div>')

  eq = document['equivalence']
  out.append('<h2>Chunked == whole-sequence check</h2>')
  out.append(f'<p class="{"ok" if eq.get("ok") else "fail"}">'
             f'{_esc(eq.get("message", ""))}</p>')
  out.append('<h2>Validation (TFMA validations.tfrecord)</h2>')
  failures = tfma_part.get('failures') or []
  out.append('<p>validation_ok = '
             f'{bool(tfma_part.get("validation_ok"))} (the blessing). It '
             'holds the eval_config thresholds (' +
             ('passed' if tfma_part.get('thresholds_validation_ok', True)
              else 'failed') + '), chunked_whole_max_abs_diff and, when the '
             'gate is on, no_skill_gain and no_skill_p_value.' +
             (' Change thresholds skipped (rubber stamp): '
              f'{_esc(document["baseline"]["note"])}.'
              if tfma_part.get('rubber_stamp') else '') + '</p>')
  if failures:
    out.append('<ul>' + ''.join(f'<li class="fail">{_esc(f)}</li>'
                                for f in failures) + '</ul>')
  out.append('<h2>Settings</h2><pre>' + _esc(json.dumps(
      {'eval_config': tfma_part.get('eval_config'),
       'settings': document.get('settings')}, indent=1, sort_keys=True))
             + '</pre>')
  out.append('</body></html>')
  return '\n'.join(out)
