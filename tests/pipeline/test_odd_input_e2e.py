"""Input that is legitimate but odd, through the whole local pipeline.

One run on CSV files as users have them: a UTF-8 byte-order mark, CRLF line
ends, a space after each comma (header and values), the columns in another
order than the defaults', one file gzipped (``.csv.gz``), a sequence whose
rows are spread over two files, odd keys (``007`` beside ``7``, non-ASCII,
a quoted key with a comma), and order values of three kinds (ISO-8601
date-times with and without zones, float Unix seconds one minute apart, which
collide in float32, and integer nanoseconds beyond 2**53), and text class
labels (``cat``, ``dog``). The run must bless and push, account for every
input row, export exactly the CSV's feature columns and serve the class
names.
"""

from __future__ import annotations

import gzip
import json
import os
import re

import numpy as np

from data import generate
from pipeline import flags as flags_lib
from pipeline import local_runner

CLASSES = ['cat', 'dog']  # Text class labels.
# Odd keys: digits with a leading zero beside the same digits without (two
# sequences), non-ASCII text, a quoted key holding a comma.
ODD_KEYS = {1: '007', 2: '7', 3: 'ключ-ü', 4: '"a,b"'}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _order_texts(kind: int, length: int):
  if kind == 0:  # ISO-8601, a zone on some rows, none (UTC) on others.
    base = np.datetime64('2026-12-07T05:18:40', 's')
    out = []
    for i in range(length):
      stamp = str(base + np.timedelta64(37 * i, 's'))
      out.append(stamp + ('Z' if i % 3 == 0 else '' if i % 3 == 1 else ''))
    return out
  if kind == 1:  # Float Unix seconds, a minute apart.
    return [f'{1700000000 + 60 * i}.0' for i in range(length)]
  return [str(1733548720123456789 + 1000 * i) for i in range(length)]


def _generated():
  return generate.generate(64, seed=5, median_length=30.0, max_length=90,
                           num_features=2)


def _write_odd_csv(root: str):
  rows = _generated()
  keys = sorted(set(rows['seq_id'].tolist()))
  os.makedirs(root)
  header = 'label, f1, t, seq_id, f0'  # Another order; spaces.
  lines = {0: [], 1: []}
  for n, key in enumerate(keys):
    sel = np.flatnonzero(rows['seq_id'] == key)
    sel = sel[np.argsort(rows['t'][sel])]
    texts = _order_texts(n % 3, len(sel))
    for j, (i, text) in enumerate(zip(sel, texts)):
      # Sequence 0 is spread over both files; the others sit in one.
      f = (j % 2) if n == 0 else n % 2
      lines[f].append(f"{CLASSES[rows['label'][i]]}, {rows['f1'][i]}, {text}, "
                      f"{ODD_KEYS.get(n, key)}, {rows['f0'][i]}")
  with open(os.path.join(root, 'part-a.csv'), 'wb') as f:
    f.write(('\ufeff' + '\r\n'.join([header] + lines[0]) + '\r\n'
             ).encode('utf-8'))
  with gzip.open(os.path.join(root, 'part-b.csv.gz'), 'wb') as f:
    f.write(('\n'.join([header] + lines[1]) + '\n').encode('utf-8'))
  return len(rows['seq_id'])


def test_odd_but_legitimate_csv_runs_end_to_end(tmp_path):
  data = str(tmp_path / 'data')
  total = _write_odd_csv(data)
  out = tmp_path / 'out'
  args, beam_args = flags_lib.build_parser().parse_known_args(
      ['--data-root', data, '--output-dir', str(out), '--batch-size', '4',
       '--num-unroll', '8', '--epochs', '2'])
  summary = local_runner.run(flags_lib.config_from_args(args), beam_args)
  batcher = summary['batcher']
  assert (batcher['train']['real_timesteps'] +
          batcher['eval']['real_timesteps']) == total
  assert summary['blessed'] is True and summary['pushed_model']
  with open(os.path.join(summary['batches_uri'], 'metadata.json')) as f:
    meta = json.load(f)
  assert meta['feature_names'] == ['f0', 'f1']
  assert (batcher['train']['num_sequences'] +
          batcher['eval']['num_sequences']) == 64  # '007' and '7' are two.
  # The evaluator reports per-class metrics by class name.
  assert set(summary['eval']['per_class']) == set(CLASSES)
  assert 'recall' in summary['eval']['per_class']['cat']
  _run_serving_guide_snippet(summary['pushed_model'], str(tmp_path))


def _run_serving_guide_snippet(pushed_model: str, tmp: str) -> None:
  """The serving guide's client code, as written, on this run's pushed model
  and a plain CSV of the same sequences (only its two paths replaced)."""
  with open(os.path.join(ROOT, 'docs', 'serving.md'), encoding='utf-8') as f:
    guide = f.read()
  section = guide[guide.index('## A client'):]
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  csv_file = os.path.join(tmp, 'plain.csv')
  generate.write_csv(_generated(), csv_file)
  code = code.replace("'outputs/local/serving_model'",
                      repr(os.path.dirname(pushed_model)))
  code = code.replace("'data/sample/part-00000.csv'", repr(csv_file))
  scope = {}
  exec(compile(code, 'docs/serving.md', 'exec'), scope)  # pylint: disable=exec-used
  whole, stream = scope['out'], scope['step']
  assert [c.decode() for c in scope['info']['class_names']] == CLASSES
  assert whole['class_names'].numpy()[0].decode() in CLASSES
  assert whole['class_names'].numpy()[0] == stream['class_names'].numpy()[
      0, -1]
  np.testing.assert_allclose(whole['probabilities'].numpy()[0],
                             stream['probabilities'].numpy()[0, -1],
                             atol=1e-5)
