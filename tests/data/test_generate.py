"""data/generate.py: the committed sample is what the documented command
writes, byte for byte, and the generator runs as a script and as a module."""

import os
import shlex
import subprocess
import sys

from data import generate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _sample_command():
  """The arguments of data/README.md's command that regenerates the sample."""
  with open(os.path.join(ROOT, 'data', 'README.md'), encoding='utf-8') as f:
    lines = f.read().splitlines()
  at = lines.index('# Regenerate the committed sample (byte-identical output):')
  words = shlex.split(lines[at + 1])
  assert words[:2] == ['python3', 'data/generate.py'], words
  return words[2:]


def test_the_committed_sample_is_regenerated_byte_for_byte(tmp_path):
  args = _sample_command()
  args[args.index('--output') + 1] = str(tmp_path)
  assert generate.main(args + ['--quiet']) == 0
  sample = os.path.join(ROOT, 'data', 'sample')
  names = sorted(os.listdir(sample))
  assert sorted(os.listdir(tmp_path)) == names == [
      'part-00000.csv', 'part-00001.csv', 'part-00002.csv']
  for name in names:
    with open(os.path.join(sample, name), 'rb') as want, open(
        tmp_path / name, 'rb') as got:
      assert got.read() == want.read(), name


def test_runs_as_a_script_and_as_a_module(tmp_path):
  args = ['--num-sequences', '6', '--seed', '3', '--max-length', '40',
          '--target', 'forecast', '--shuffle-rows', '--quiet']
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  subprocess.run([sys.executable, 'data/generate.py', *args, '--output',
                  str(tmp_path / 'script.csv')], cwd=ROOT, env=env,
                 check=True)
  subprocess.run([sys.executable, '-m', 'data.generate', *args, '--output',
                  str(tmp_path / 'module.csv')], cwd=ROOT, env=env,
                 check=True)
  generate.main(args + ['--output', str(tmp_path / 'imported.csv')])
  script = (tmp_path / 'script.csv').read_bytes()
  assert script.startswith(b'seq_id,t,f0,f1,f2,f3,f4,label\n')
  assert (tmp_path / 'module.csv').read_bytes() == script
  assert (tmp_path / 'imported.csv').read_bytes() == script
