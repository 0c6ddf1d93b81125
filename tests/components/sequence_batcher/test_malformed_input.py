"""Malformed CSV input through ``python -m components.sequence_batcher``:
each case is one ``error:`` line naming the file (and the sequence key and
row where there is one), exit code 2, no traceback, and no output written
as if the run had succeeded (no root ``metadata.json``)."""

from __future__ import annotations

import re

import pytest

from components.sequence_batcher import __main__ as cli
from tests.components.sequence_batcher import malformed


@pytest.mark.parametrize('name', sorted(malformed.CASES))
def test_cli_rejects_malformed_input_in_one_line(tmp_path, capsys, name):
  case = malformed.CASES[name]
  data = malformed.write(case, str(tmp_path / 'data'))
  out = tmp_path / 'out'
  code = cli.main(['--input', f'{data}/*.csv', '--output', str(out),
                   '--batch-size', '2', '--num-unroll', '2', *case.flags])
  line = malformed.error_line(capsys.readouterr().err)
  assert code == 2, line
  for pattern in case.expected:
    assert re.search(pattern, line), (pattern, line)
  assert not (out / 'metadata.json').exists()


def test_cli_accepts_the_table_s_good_rows(tmp_path, capsys):
  data = malformed.write(malformed.Case(
      {'a.csv': malformed.HEADER + malformed.GOOD}, ()),
                         str(tmp_path / 'data'))
  assert cli.main(['--input', f'{data}/*.csv', '--output',
                   str(tmp_path / 'out'), '--batch-size', '2',
                   '--num-unroll', '2']) == 0
  assert (tmp_path / 'out' / 'metadata.json').exists()


@pytest.mark.parametrize('flag', ['--batch_size=16', '--num_unroll=4',
                                  '--direct_num_worker=2', 'stray'])
def test_cli_rejects_a_flag_that_is_neither_ours_nor_beam_s(tmp_path, capsys,
                                                            flag):
  with pytest.raises(SystemExit) as e:
    cli.main(['--input', str(tmp_path / '*.csv'), '--output',
              str(tmp_path / 'out'), flag])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert 'unrecognized arguments' in err and flag in err
  assert not (tmp_path / 'out').exists()


def test_cli_rejects_a_bad_beam_option_value(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(['--input', str(tmp_path / '*.csv'), '--output',
              str(tmp_path / 'out'), '--direct_num_workers=many'])
  assert e.value.code == 2
  assert "--direct_num_workers: invalid int value: 'many'" in (
      capsys.readouterr().err)
