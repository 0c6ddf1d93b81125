"""A table of malformed CSV inputs, shared by the command-line tests of the
SequenceBatcher and of the local runner.

Each case is a set of files under a data folder and the fragments the one
error line must hold: the file, and the sequence key or row where there is
one. Columns are the runners' defaults (``seq_id``, ``t``, ``label``) plus
one feature ``x``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Sequence, Tuple, Union

HEADER = b'seq_id,t,x,label\n'
# Three sequences, enough that ExampleGen's hash split fills both splits.
GOOD = (b'a,0,1.0,1\na,1,2.0,1\nb,0,3.0,0\nb,1,4.0,0\nc,0,5.0,1\n'
        b'd,0,6.0,0\ne,0,7.0,1\nf,0,8.0,0\ng,0,9.0,1\n')


LINK = object()  # A file that is a link to nowhere.


@dataclasses.dataclass(frozen=True)
class Case:
  # None: a directory of that name; LINK: a broken symbolic link.
  files: Dict[str, Union[bytes, None, object]]
  expected: Tuple[str, ...]  # Regexes the error line must match.
  flags: Tuple[str, ...] = ()


def _one(data: bytes, *expected: str, flags: Sequence[str] = ()) -> Case:
  return Case({'a.csv': data}, ('a\\.csv',) + expected, tuple(flags))


CASES = {
    'key_column_missing': _one(b'id,t,x,label\n' + GOOD, "'seq_id'"),
    'order_column_missing': _one(b'seq_id,step,x,label\n' + GOOD, "'t'"),
    'label_column_missing': _one(b'seq_id,t,x,y\n' + GOOD, "'label'"),
    'extra_field_in_a_line': _one(HEADER + GOOD + b'a,2,2.0,1,9\n',
                                  'fields'),
    'missing_field_in_a_line': _one(HEADER + GOOD + b'a,2,2.0\n', "'a'",
                                    "'label'"),
    'duplicate_column_names': _one(b'seq_id,t,x,x,label\n', 'duplicate'),
    'empty_file': _one(b'', 'empty'),
    'header_only': _one(HEADER, ''),
    'nan_feature': _one(HEADER + GOOD + b'a,2,nan,1\n', "'a'", 'order value 2',
                        'NaN'),
    'inf_feature': _one(HEADER + GOOD + b'a,2,-inf,1\n', "'a'",
                        'order value 2', 'inf'),
    'text_in_a_number_column': _one(HEADER + GOOD + b'a,2,abc,1\n', "'a'",
                                    'order value 2', "'abc'"),
    'text_in_the_order_column': _one(HEADER + GOOD + b'a,two,2.0,1\n', "'a'",
                                     "'two'"),
    'text_among_numeric_labels': _one(HEADER + GOOD + b'a,2,2.0,yes\n',
                                      "'a'", "'yes'"),
    'missing_feature_value': _one(HEADER + GOOD + b'a,2,,1\n', "'a'",
                                  'order value 2', 'no value'),
    'missing_order_value': _one(HEADER + GOOD + b'a,,2.0,1\n', "'a'",
                                "'t'"),
    'missing_label_value': _one(HEADER + GOOD + b'a,2,2.0,\n', "'a'",
                                'order value 2', "'label'"),
    'nan_label': _one(HEADER + GOOD + b'a,2,2.0,nan\n', "'a'",
                      'order value 2', "'label'"),
    'duplicate_rows': _one(HEADER + GOOD + b'a,1,2.0,1\n', "'a'",
                           'duplicate', 't=1'),
    'label_changes_within_a_sequence': _one(HEADER + GOOD + b'a,2,2.0,0\n',
                                            "'a'", 'changes',
                                            'order value 2'),
    'key_only_whitespace': _one(HEADER + GOOD + b'   ,2,2.0,1\n', 'key'),
    'key_empty': _one(HEADER + GOOD + b',2,2.0,1\n', 'key'),
    'key_not_utf8': _one(HEADER + GOOD + b'\xff\xfe,2,2.0,1\n', 'UTF-8'),
    'header_not_utf8': _one(b'seq_id,t,x,l\xe9bel\n' + GOOD, 'UTF-8'),
    'binary_file': _one(bytes(range(256)) * 8, ''),
    'unbalanced_quote': _one(HEADER + GOOD + b'a,2,"2.0,1\n', ''),
    'sequence_too_long': _one(HEADER + GOOD, "'a'", 'max_sequence_length',
                              flags=('--max-sequence-length', '1')),
    # Values: beyond float32, words that are not numbers, order values.
    'feature_beyond_float32': _one(HEADER + GOOD + b'a,2,1e39,1\n', "'a'",
                                   'order value 2', 'float32'),
    'negative_feature_beyond_float32': _one(
        HEADER + GOOD + b'a,2,-3.5e38,1\n', "'a'", 'float32'),
    'boolean_word_in_a_feature': _one(
        HEADER + b'a,0,true,1\na,1,false,1\n' + GOOD.replace(b'a,', b'z,'),
        "'a'", "'true'"),
    'order_value_not_a_date': _one(
        HEADER + GOOD + b'a,2026-13-45T00:00:00Z,2.0,1\n', "'a'",
        "'2026-13-45T00:00:00Z'", 'ISO-8601'),
    'order_values_mix_numbers_and_dates': _one(
        HEADER + GOOD + b'a,2026-12-07T05:18:40Z,2.0,1\n', "'a'",
        'one kind per sequence'),
    'order_value_nan_text': _one(HEADER + GOOD + b'a,nan,2.0,1\n', "'a'",
                                 "'nan'", 'neither a number'),
    'order_value_inf_text': _one(HEADER + GOOD + b'a,inf,2.0,1\n', "'a'",
                                 "'inf'"),
    'float_order_values_equal_as_decimals': _one(
        HEADER + GOOD + b'a,1.0,2.0,1\n', "'a'", 'duplicate', 't=1'),
    'date_times_equal_across_zones': _one(
        HEADER + b'q,2026-12-07T05:00:00Z,1.0,1\n'
        b'q,2026-12-07T06:00:00+01:00,2.0,1\n' + GOOD, "'q'", 'duplicate'),
    'gzip_data_named_csv': _one(
        b'\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff' + bytes(range(128, 256)),
        'UTF-8'),
    'order_value_words': _one(HEADER + GOOD + b'a,later,2.0,1\n', "'a'",
                              "'later'"),
    'headers_differ_between_files': Case(
        {'a.csv': HEADER + GOOD, 'b.csv': b'seq_id,t,y,label\nz,0,1.0,1\n'},
        (r'[ab]\.csv', "'[xy]'")),
    'directory_named_like_a_file': Case(
        {'a.csv': HEADER + GOOD, 'b.csv': None}, (r'b\.csv',)),
    'broken_link': Case(
        {'a.csv': HEADER + GOOD, 'b.csv': LINK}, (r'b\.csv',)),
}


def write(case: Case, root: str) -> str:
  """Writes the case's files under ``root`` (created); returns ``root``."""
  os.makedirs(root, exist_ok=True)
  for name, data in case.files.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if data is None:
      os.makedirs(path)
    elif data is LINK:
      os.symlink(os.path.join(root, 'no-such-file'), path)
    else:
      with open(path, 'wb') as f:
        f.write(data)
  return root


def error_line(stderr: str) -> str:
  """The single ``error:`` line of ``stderr``; fails on a traceback or more
  than one error line."""
  assert 'Traceback' not in stderr, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]
