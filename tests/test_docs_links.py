"""The README and docs/ hold together: every relative link reaches a file
(and a heading, where it names one), the README stays a front door, the
repository layout lists every source file, and the README's model module
and hook table are the module contract's."""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, 'README.md')
DOCS = sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))
README_MAX_LINES = 250

LINK = re.compile(r'(?<!!)\[[^\]]*\]\(([^)\s]+)\)')
FENCE = re.compile(r'^(```|~~~).*?^\1', re.S | re.M)


def _read(path):
  with open(path, encoding='utf-8') as f:
    return f.read()


def _prose(text):
  """The text without its fenced code blocks and inline code."""
  text = FENCE.sub('', text)
  return re.sub(r'`[^`\n]*`', '', text)


def _anchors(path):
  """GitHub's heading anchors of a markdown file."""
  seen, anchors = {}, set()
  for line in FENCE.sub('', _read(path)).splitlines():
    m = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
    if not m:
      continue
    slug = re.sub(r'[^\w\- ]', '', m.group(1).strip().lower()).replace(' ',
                                                                      '-')
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    anchors.add(slug if n == 0 else f'{slug}-{n}')
  return anchors


def _links(path):
  for target in LINK.findall(_prose(_read(path))):
    if re.match(r'[a-z][a-z0-9+.-]*:', target):   # http:, https:, mailto:
      continue
    yield target


@pytest.mark.parametrize('path', [README] + DOCS,
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_reach_a_file_and_heading(path):
  broken = []
  for target in _links(path):
    file_part, _, anchor = target.partition('#')
    dest = (os.path.normpath(os.path.join(os.path.dirname(path), file_part))
            if file_part else path)
    if not os.path.exists(dest):
      broken.append(f'{target}: no file {os.path.relpath(dest, ROOT)}')
    elif anchor and dest.endswith('.md') and anchor not in _anchors(dest):
      broken.append(f'{target}: no heading #{anchor}')
  assert not broken, f'{os.path.relpath(path, ROOT)}: ' + '; '.join(broken)


def test_the_readme_is_a_front_door():
  lines = _read(README).count('\n')
  assert lines <= README_MAX_LINES, (
      f'README.md has {lines} lines; at most {README_MAX_LINES}: move the '
      'detail into docs/')


def test_every_guide_is_linked_from_the_readme():
  linked = {os.path.normpath(os.path.join(ROOT, t.partition('#')[0]))
            for t in _links(README)}
  assert not [d for d in DOCS if d not in linked]


def test_the_layout_lists_every_source_file():
  layout = _read(os.path.join(ROOT, 'docs', 'layout.md'))
  files = []
  for pattern in ('components/*/*.py', 'pipeline/*.py', 'kubeflow/*',
                  'data/*.py'):
    files += glob.glob(os.path.join(ROOT, pattern))
  missing = sorted(
      os.path.relpath(f, ROOT) for f in files
      if os.path.isfile(f) and os.path.basename(f) != '__init__.py' and
      f'`{os.path.basename(f)}`' not in layout and
      os.path.basename(f) not in layout)
  # A component's subfolders: each file by its path in the component.
  for f in glob.glob(os.path.join(ROOT, 'components', '*', '*', '**', '*.py'),
                     recursive=True):
    parts = os.path.relpath(f, ROOT).split(os.sep)
    if parts[-1] != '__init__.py' and (
        f"`{'/'.join(parts[2:])}`" not in layout):
      missing.append(os.path.relpath(f, ROOT))
  assert not missing, f'docs/layout.md does not list {missing}'
  for folder in glob.glob(os.path.join(ROOT, 'components', '*', '')):
    name = os.path.relpath(folder, ROOT).rstrip('/')
    assert f'## {name}/' in layout, f'docs/layout.md has no section {name}/'


def _readme_section(heading):
  text = _read(README)
  start = text.index(f'\n## {heading}\n')
  end = text.find('\n## ', start + 1)
  return text[start:end if end >= 0 else None]


def test_the_readme_hook_table_is_the_module_contract():
  from components.stateful import module_contract  # plain Python, no TF
  section = _readme_section('A model module')
  rows = re.findall(r'^\| `(\w+)\(', section, re.M)
  assert 'build_model(spec)' in section
  assert sorted(rows) == sorted(set(module_contract.HOOKS) -
                                set(module_contract.REQUIRED))


def test_the_readme_model_module_meets_the_contract(tmp_path):
  from components.stateful_trainer import module_check
  section = _readme_section('A model module')
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  module_file = tmp_path / 'my_model.py'
  module_file.write_text(code, encoding='utf-8')
  for task, kw in (('classification', {'num_classes': 3}),
                   ('regression', {'output_size': 1})):
    hooks = module_check.check_module(str(module_file), {}, 2, task, **kw)
    assert hooks.build_model is not None
