"""Converts CSV time-step rows to TFRecord files of tf.SequenceExample.

One SequenceExample per sequence: the key (and a per-sequence label) in the
context; every other column as a feature list with one value per step, in
order of the order column. This is the format ImportExampleGen reads with
``--input-format sequence_example``.

  python data/to_sequence_examples.py --input 'data/sample/*.csv' --output /tmp/se

Needs TensorFlow (run it with the project's virtual environment).
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import sys
from typing import Dict, List, Optional, Sequence


def _number(text: str):
  try:
    return int(text)
  except ValueError:
    return float(text)


def read_sequences(paths: Sequence[str], key_column: str, order_column: str
                  ) -> Dict[str, List[dict]]:
  """CSV rows grouped by key and sorted by the order column."""
  seqs: Dict[str, List[dict]] = {}
  for path in paths:
    with open(path, newline='') as f:
      for row in csv.DictReader(f):
        seqs.setdefault(row[key_column], []).append(row)
  for rows in seqs.values():
    rows.sort(key=lambda r: _number(r[order_column]))
  return seqs


def to_sequence_example(key: str, rows: List[dict], *, key_column: str,
                        label_column: Optional[str], per_sequence_label: bool):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ex = tf.train.SequenceExample()
  ex.context.feature[key_column].bytes_list.value.append(key.encode())
  columns = [c for c in rows[0] if c != key_column]
  if label_column and per_sequence_label:
    ex.context.feature[label_column].int64_list.value.append(
        int(rows[0][label_column]))
    columns.remove(label_column)
  for col in columns:
    fl = ex.feature_lists.feature_list[col]
    for row in rows:
      value = _number(row[col])
      feat = fl.feature.add()
      if isinstance(value, int):
        feat.int64_list.value.append(value)
      else:
        feat.float_list.value.append(value)
  return ex


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--input', required=True, help='CSV glob')
  p.add_argument('--output', required=True, help='output directory')
  p.add_argument('--key-column', default='seq_id')
  p.add_argument('--order-column', default='t')
  p.add_argument('--label-column', default='label')
  p.add_argument('--per-step-label', action='store_true',
                 help='keep the label as a feature list (per-step labels)')
  p.add_argument('--num-shards', type=int, default=2)
  args = p.parse_args(argv)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(args.input))
  if not paths:
    print(f'error: no file matches {args.input!r}', file=sys.stderr)
    return 2
  seqs = read_sequences(paths, args.key_column, args.order_column)
  os.makedirs(args.output, exist_ok=True)
  keys = sorted(seqs)
  writers = [tf.io.TFRecordWriter(os.path.join(
      args.output, f'sequences-{i:05d}-of-{args.num_shards:05d}.tfrecord'))
             for i in range(args.num_shards)]
  for i, key in enumerate(keys):
    ex = to_sequence_example(key, seqs[key], key_column=args.key_column,
                             label_column=args.label_column,
                             per_sequence_label=not args.per_step_label)
    writers[i % args.num_shards].write(ex.SerializeToString())
  for w in writers:
    w.close()
  print(f'wrote {len(keys)} SequenceExamples to {args.output}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
