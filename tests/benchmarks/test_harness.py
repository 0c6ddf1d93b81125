"""benchmarks/harness: a section written from its blocks."""

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
