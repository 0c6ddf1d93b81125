"""``python -m components.sequence_batcher`` on CSV files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from components.sequence_batcher import __main__ as cli
from components.sequence_batcher import read_batches

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def _write(path, text):
  with open(path, 'w') as f:
    f.write(text)


def test_cli_help_lists_the_flags():
  out = subprocess.run([sys.executable, '-m', 'components.sequence_batcher',
                        '--help'], cwd=ROOT, capture_output=True, text=True,
                       check=True).stdout
  for flag in ('--input', '--key-column', '--order-column', '--label-column',
               '--label-kind', '--batch-size', '--num-unroll', '--mode',
               '--output'):
    assert flag in out


def test_cli_batches_csv_files(tmp_path, capsys):
  _write(tmp_path / 'a.csv', 'id,step,v,y\nx,1,0.5,1\nx,0,0.25,1\nz,0,3,0\n')
  _write(tmp_path / 'b.csv', 'id,step,v,y\nw,0,1,0\nw,1,2,0\nw,2,3,0\n')
  out = tmp_path / 'out'
  code = cli.main(['--input', str(tmp_path / '*.csv'), '--output', str(out),
                   '--key-column', 'id', '--order-column', 'step',
                   '--label-column', 'y', '--batch-size', '2',
                   '--num-unroll', '2'])
  assert code == 0
  printed = json.loads(capsys.readouterr().out)
  assert printed['num_sequences'] == 3
  assert printed['real_timesteps'] == 6
  batches = list(read_batches(str(out)).as_numpy_iterator())
  assert sum(b['mask'].sum() for b in batches) == 6
  by_key = {}
  for b in batches:
    for lane in range(2):
      k = b['key'][lane]
      if k:
        by_key.setdefault(k, []).extend(
            b['features'][lane, :, 0][b['mask'][lane] > 0].tolist())
  assert by_key == {b'x': [0.25, 0.5], b'z': [3.0], b'w': [1.0, 2.0, 3.0]}


def test_cli_reports_bad_data_in_one_line(tmp_path, capsys):
  _write(tmp_path / 'bad.csv', 'id,step,v,y\nx,0,abc,1\n')
  code = cli.main(['--input', str(tmp_path / 'bad.csv'), '--output',
                   str(tmp_path / 'out'), '--key-column', 'id',
                   '--order-column', 'step', '--label-column', 'y'])
  assert code == 2
  err = capsys.readouterr().err
  assert "'x'" in err and 'non-numeric' in err and "'v'" in err


def test_cli_reports_missing_column(tmp_path, capsys):
  _write(tmp_path / 'a.csv', 'id,v,y\nx,1,1\n')
  code = cli.main(['--input', str(tmp_path / 'a.csv'), '--output',
                   str(tmp_path / 'out'), '--key-column', 'id',
                   '--order-column', 'step', '--label-column', 'y'])
  assert code == 2
  err = capsys.readouterr().err
  assert 'a.csv' in err and "'step'" in err


def test_cli_reports_missing_and_nan_values(tmp_path, capsys):
  _write(tmp_path / 'gap.csv', 'id,step,v,y\nx,0,1.5,1\nx,1,,1\n')
  code = cli.main(['--input', str(tmp_path / 'gap.csv'), '--output',
                   str(tmp_path / 'out1'), '--key-column', 'id',
                   '--order-column', 'step', '--label-column', 'y'])
  assert code == 2
  err = capsys.readouterr().err
  assert 'gap.csv' in err and "'x'" in err and 'no value' in err
  assert 'order value 1' in err
  _write(tmp_path / 'nan.csv', 'id,step,v,y\nx,0,1.5,1\nx,1,nan,1\n')
  code = cli.main(['--input', str(tmp_path / 'nan.csv'), '--output',
                   str(tmp_path / 'out2'), '--key-column', 'id',
                   '--order-column', 'step', '--label-column', 'y'])
  assert code == 2
  err = capsys.readouterr().err
  assert 'nan.csv' in err and 'NaN' in err and "'v'" in err


def test_cli_output_is_identical_across_runner_modes(tmp_path):
  lines = ['id,step,v,y'] + [f'k{i % 7},{i},{i * 0.5},{i % 7 % 2}'
                             for i in range(300)]
  for part in range(3):
    _write(tmp_path / f'p{part}.csv', '\n'.join(
        [lines[0]] + lines[1 + part * 100:1 + (part + 1) * 100]) + '\n')
  common = ['--input', str(tmp_path / 'p*.csv'), '--key-column', 'id',
            '--order-column', 'step', '--label-column', 'y',
            '--batch-size', '3', '--num-unroll', '5']
  assert cli.main(common + ['--output', str(tmp_path / 'a')]) == 0
  assert cli.main(common + ['--output', str(tmp_path / 'b'),
                            '--direct_running_mode=multi_processing',
                            '--direct_num_workers=2']) == 0
  for rel in ('metadata.json', 'Split-train/metadata.json',
              'Split-train/batches-00000-of-00001.tfrecord'):
    assert (tmp_path / 'a' / rel).read_bytes() == (tmp_path / 'b' /
                                                   rel).read_bytes(), rel


def test_cli_keeps_keys_as_text(tmp_path):
  # '007' and '7' are two sequences, not one.
  _write(tmp_path / 'k.csv', 'id,step,v,y\n007,0,1,0\n7,1,2,1\n7,0,3,1\n')
  out = tmp_path / 'out'
  assert cli.main(['--input', str(tmp_path / 'k.csv'), '--output', str(out),
                   '--key-column', 'id', '--order-column', 'step',
                   '--label-column', 'y', '--batch-size', '2',
                   '--num-unroll', '4']) == 0
  batches = list(read_batches(str(out)).as_numpy_iterator())
  assert sorted(k for b in batches for k in b['key'] if k) == [b'007', b'7']
