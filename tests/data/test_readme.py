"""data/README.md states the committed sample's size: it must be the files'."""

import glob
import os
import re

DATA = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_readme_gives_the_sample_files_byte_count():
  files = glob.glob(os.path.join(DATA, 'data', 'sample', '*.csv'))
  total = sum(os.path.getsize(f) for f in files)
  with open(os.path.join(DATA, 'data', 'README.md'), encoding='utf-8') as f:
    text = f.read()
  line = next(l for l in text.splitlines() if l.startswith('| Size on disk'))
  stated = int(re.search(r'\(([\d,]+) bytes', line).group(1).replace(',', ''))
  assert stated == total
  megabytes = float(re.search(r'≈([\d.]+) MB', line).group(1))
  assert round(total / 1e6, 1) == megabytes
