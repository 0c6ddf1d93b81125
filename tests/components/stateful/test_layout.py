"""The core's layout holds: no import circles between its modules, no
module over the size bar, the sub-packages' ``__init__`` files import
nothing, and one lane rule for replicas and workers. Plain Python (reads
the sources; imports no TensorFlow)."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
CORE = os.path.join(ROOT, 'components', 'stateful')
PACKAGE = 'components.stateful'
MAX_LINES = 450


def _modules():
  """Dotted name -> path of every module of the core."""
  out = {}
  for folder, _, names in os.walk(CORE):
    for name in names:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
        out[rel[:-len('.__init__')] if rel.endswith('.__init__') else
            rel] = path
  return out


def _imports(path, modules):
  """The core modules ``path`` imports at module level (not in functions)."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read())
  found = set()
  for node in tree.body:
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      for a in node.names:
        full = f'{node.module}.{a.name}'
        found.add(full if full in modules else node.module)
  return {m for m in found if m in modules and m.startswith(PACKAGE + '.')}


def test_no_import_circles():
  modules = _modules()
  graph = {m: _imports(p, modules) for m, p in modules.items()}
  state, circles = {}, []

  def visit(m, stack):
    state[m] = 'open'
    for n in sorted(graph[m]):
      if state.get(n) == 'open':
        circles.append(stack[stack.index(n):] + [n])
      elif n not in state:
        visit(n, stack + [n])
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])
  assert not circles, ' ; '.join(' -> '.join(c) for c in circles)


def test_no_module_over_the_size_bar():
  over = {}
  for m, p in _modules().items():
    with open(p, encoding='utf-8') as f:
      n = sum(1 for _ in f)
    if n > MAX_LINES:
      over[m] = n
  assert not over, f'over {MAX_LINES} lines: {over}'


@pytest.mark.parametrize('sub', ['state', 'layers', 'models', 'distribution'])
def test_the_sub_packages_import_nothing_at_init(sub):
  with open(os.path.join(CORE, sub, '__init__.py'), encoding='utf-8') as f:
    tree = ast.parse(f.read())
  assert [type(n).__name__ for n in tree.body] == ['Expr']  # A docstring.


def test_the_package_docstring_maps_every_sub_package():
  with open(os.path.join(CORE, '__init__.py'), encoding='utf-8') as f:
    doc = ast.get_docstring(ast.parse(f.read()))
  for m in _modules():
    if m == PACKAGE:
      continue
    name = m[len(PACKAGE) + 1:]
    top, _, leaf = name.partition('.')
    assert f'``{top}/``' in doc if leaf else f'``{top}``' in doc, name
    if leaf:
      assert f'``{leaf}``' in doc, name


def test_one_lane_rule():
  from components.stateful.distribution import lanes  # pylint: disable=g-import-not-at-top
  assert [lanes.lanes_of(r, 4, 12) for r in range(4)] == [
      (0, 3), (3, 6), (6, 9), (9, 12)]
  assert lanes.lane_multiple(2, 3) == 6
  with pytest.raises(lanes.LaneLayoutError, match='cannot be shared'):
    lanes.lanes_of(0, 5, 12)
  # Nothing else in the core computes the lanes a part owns.
  for m, p in _modules().items():
    if m.endswith('.lanes'):
      continue
    with open(p, encoding='utf-8') as f:
      text = f.read()
    assert '% self.count' not in text and '% self.num_replicas' not in text, m
