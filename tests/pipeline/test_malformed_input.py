"""Malformed input through ``python -m pipeline.local_runner``: the same
table as the SequenceBatcher's command line, plus what only the runner
reads (module files, TFRecord files of SequenceExamples, the hash split).

Each case stops the run before any component runs (``input_check``): one
``error:`` line naming the file, sequence key or row, exit code 2, no
traceback, and nothing trained, blessed or pushed (no pipeline root, no
serving directory, no summary). ``main()`` runs in this process.
"""

from __future__ import annotations

import os
import re

import pytest
import tensorflow as tf

from pipeline import local_runner
from pipeline import pipeline_config
from tests.components.sequence_batcher import malformed


def _run_and_check(capsys, data_root, out, *flags) -> str:
  code = local_runner.main(['--data-root', str(data_root), '--output-dir',
                            str(out), *flags])
  line = malformed.error_line(capsys.readouterr().err)
  assert code == 2, line
  for name in ('pipeline_root', 'serving_model', 'summary.json',
               'metadata.sqlite'):
    assert not os.path.exists(os.path.join(out, name)), name
  return line


@pytest.mark.parametrize('name', sorted(malformed.CASES))
def test_runner_rejects_malformed_csv_in_one_line(tmp_path, capsys, name):
  case = malformed.CASES[name]
  data = malformed.write(case, str(tmp_path / 'data'))
  line = _run_and_check(capsys, data, tmp_path / 'out', *case.flags)
  for pattern in case.expected:
    assert re.search(pattern, line), (pattern, line)


def _sequence_example(key: bytes, steps: int = 3, **context) -> bytes:
  ex = tf.train.SequenceExample()
  ex.context.feature['seq_id'].bytes_list.value.append(key)
  ex.context.feature['label'].int64_list.value.append(1)
  for name, value in context.items():
    ex.context.feature[name].float_list.value.extend(value)
  for name in ('t', 'x'):
    feats = ex.feature_lists.feature_list[name].feature
    for i in range(steps):
      feats.add().float_list.value.append(float(i))
  return ex.SerializeToString()


def _write_records(path, records):
  with tf.io.TFRecordWriter(str(path)) as w:
    for r in records:
      w.write(r)


GOOD_KEYS = [b'a', b'b', b'c', b'd', b'e', b'f', b'g']


@pytest.mark.parametrize('name, expected', [
    ('corrupt_tfrecord', (r'part\.tfrecord', 'not a readable TFRecord')),
    ('not_a_sequence_example', (r'part\.tfrecord', 'record 7',
                                'not a tf.train.SequenceExample')),
    ('key_not_utf8', (r'part\.tfrecord', 'UTF-8', r"\\xff")),
    ('duplicate_key', (r'part\.tfrecord', "'c'", 'more than one')),
    ('context_with_several_values', (r'part\.tfrecord', "'d'", "'site'")),
])
def test_runner_rejects_malformed_sequence_examples(tmp_path, capsys, name,
                                                    expected):
  data = tmp_path / 'data'
  data.mkdir()
  records = [_sequence_example(k) for k in GOOD_KEYS]
  path = data / 'part.tfrecord'
  if name == 'corrupt_tfrecord':
    _write_records(path, records)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # One flipped byte: a CRC mismatch.
    path.write_bytes(bytes(raw))
  else:
    extra = {
        'not_a_sequence_example': b'\xff\xff\xff not a proto',
        'key_not_utf8': _sequence_example(b'\xff\xfeq'),
        'duplicate_key': _sequence_example(b'c'),
        'context_with_several_values': None,
    }[name]
    if extra is None:
      records[3] = _sequence_example(b'd', site=[1.0, 2.0])
    else:
      records.append(extra)
    _write_records(path, records)
  line = _run_and_check(capsys, data, tmp_path / 'out', '--input-format',
                        'sequence_example')
  for pattern in expected:
    assert re.search(pattern, line), (pattern, line)


def test_input_check_reads_gzipped_sequence_examples(tmp_path):
  """A .gz TFRecord file is read as Beam (ImportExampleGen) reads it."""
  from pipeline import input_check  # pylint: disable=g-import-not-at-top
  from pipeline import pipeline_config  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'data'
  data.mkdir()
  path = str(data / 'part.tfrecord.gz')
  with tf.io.TFRecordWriter(path, options='GZIP') as w:
    for key in GOOD_KEYS:
      w.write(_sequence_example(key))
  counts = input_check.check_input(pipeline_config.PipelineConfig(
      data_root=str(data), input_format='sequence_example'))
  assert sum(counts.values()) == len(GOOD_KEYS)


@pytest.mark.parametrize('source, expected', [
    ('def build_model(spec)\n  pass\n', r'SyntaxError: .*\(line 1\)'),
    ('import no_such_module_abc\n', "No module named 'no_such_module_abc'"),
    ('X = 1\n', 'does not define build_model'),
    ('import sys\nsys.exit(3)\n', 'exit'),
    ('def build_model(spec):\n  raise RuntimeError("no such layer")\n',
     'no such layer'),
    ('def build_model(spec):\n  return None\n', 'None'),
    ('import keras\ndef build_model(spec):\n'
     '  return keras.Sequential([keras.layers.Dense(1)])\n', 'Keras 3'),
    ('from components.stateful.models.default_model import build_model\n'
     'def default_epoch(spec):\n  return 3\n', 'default_epoch'),
])
def test_runner_rejects_a_module_file_that_does_not_load(tmp_path, capsys,
                                                         source, expected):
  data = malformed.write(malformed.Case(
      {'a.csv': malformed.HEADER + malformed.GOOD}, ()), str(tmp_path / 'd'))
  module = tmp_path / 'my_model.py'
  module.write_text(source)
  line = _run_and_check(capsys, data, tmp_path / 'out', '--module-file',
                        str(module))
  assert 'my_model.py' in line and re.search(expected, line), line


def test_runner_rejects_an_input_whose_hash_split_leaves_eval_empty(
    tmp_path, capsys):
  data = malformed.write(malformed.Case(
      {'a.csv': malformed.HEADER + b'a,0,1.0,1\na,1,2.0,1\n'}, ()),
                         str(tmp_path / 'd'))
  line = _run_and_check(capsys, data, tmp_path / 'out')
  assert 'split' in line and str(data) in line, line


@pytest.mark.parametrize('flag', ['--batch_size=16', '--num_unroll=8',
                                  '--direct_num_worker=2', 'stray'])
def test_runner_rejects_a_flag_that_is_neither_ours_nor_beam_s(
    tmp_path, capsys, flag):
  with pytest.raises(SystemExit) as e:
    local_runner.main(['--output-dir', str(tmp_path / 'out'), flag])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert 'unrecognized arguments' in err and flag in err
  assert not (tmp_path / 'out').exists()


def _split_case(train: bytes, evals: bytes, *expected: str,
                flags=()) -> malformed.Case:
  return malformed.Case({'train/a.csv': train, 'eval/a.csv': evals},
                        tuple(expected), tuple(flags))


def _rows(keys, extra=b'', extra_value=b''):
  """Three steps per key: seq_id,t,f0,f1,label (+ an extra column)."""
  head = b'seq_id,t,f0,f1,label' + extra + b'\n'
  return head + b''.join(b'%s,%d,%d.5,%d,%d%s\n' % (k, t, t, t * 2, i % 2,
                                                    extra_value)
                         for i, k in enumerate(keys) for t in range(3))


_TRAIN = _rows([b'a', b'b', b'c', b'd'])
_EVAL = _rows([b'p', b'q', b'r'])
_EVAL_NO_F1 = b'seq_id,t,f0,label\n' + b''.join(
    b'%s,%d,%d.5,%d\n' % (k, t, t, i % 2)
    for i, k in enumerate([b'p', b'q', b'r']) for t in range(3))

# What only the runner sees: the splits against each other, the labels of
# the whole training split, the flags. Each case: one error line.
SPLIT_CASES = {
    'eval_lacks_a_feature': _split_case(
        _TRAIN, _EVAL_NO_F1, r'eval/a\.csv', "'f1'", 'every split'),
    'eval_has_a_column_train_lacks': _split_case(
        _TRAIN, _rows([b'p', b'q', b'r'], b',f2', b',1'), r'eval/a\.csv',
        "'f2'", 'exclude-columns'),
    'train_lacks_a_named_feature': _split_case(
        _TRAIN, _EVAL, r'train/a\.csv', "'f9'",
        flags=('--feature-columns', 'f0,f9')),
    'key_in_both_splits': _split_case(
        _TRAIN, _EVAL.replace(b'q,', b'b,'), r'eval/a\.csv', "'b'",
        'both the train split'),
    'eval_label_not_in_train': _split_case(
        _TRAIN, _EVAL.replace(b',1\n', b',7\n'), r'eval/a\.csv', "'q'",
        "7", 'does not have'),
    'fractional_class_label': _split_case(
        _TRAIN.replace(b',1\n', b',0.5\n'), _EVAL, r'train/a\.csv', "'b'",
        '0.5', 'regression'),
    'eval_text_class_not_in_train': _split_case(
        _TRAIN.replace(b',1\n', b',cat\n').replace(b',0\n', b',dog\n'),
        _EVAL.replace(b',1\n', b',cat\n').replace(b',0\n', b',cow\n'),
        r'eval/a\.csv', "'p'", "'cow'", 'does not have'),
    'per_sequence_text_label_changes': _split_case(
        _TRAIN.replace(b'a,2,2.5,4,0\n', b'a,2,2.5,4,x\n'), _EVAL,
        r'train/a\.csv', "'a'", 'changes'),
    'text_regression_target': _split_case(
        _TRAIN.replace(b',1\n', b',cat\n'), _EVAL, r'train/a\.csv', "'b'",
        "'cat'", flags=('--task', 'regression')),
    'regression_target_beyond_float32': _split_case(
        _TRAIN.replace(b',1\n', b',5e38\n'), _EVAL, r'train/a\.csv', "'b'",
        'float32', flags=('--task', 'regression')),
    'eval_folder_header_only': _split_case(
        _TRAIN, b'seq_id,t,f0,f1,label\n', r'eval/a\.csv', 'no data rows'),
    'eval_folder_with_another_order_column': _split_case(
        _TRAIN, _EVAL.replace(b',t,', b',time,'), r'eval/a\.csv', "'t'"),
    'eval_file_compressed_without_extension': _split_case(
        _TRAIN, b'\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\xaa\xbb',
        r'eval/a\.csv', 'UTF-8'),
}


@pytest.mark.parametrize('name', sorted(SPLIT_CASES))
def test_runner_rejects_bad_splits_and_labels_in_one_line(tmp_path, capsys,
                                                          name):
  case = SPLIT_CASES[name]
  data = malformed.write(case, str(tmp_path / 'data'))
  line = _run_and_check(capsys, data, tmp_path / 'out', *case.flags)
  for pattern in case.expected:
    assert re.search(pattern, line), (pattern, line)


def test_runner_rejects_an_output_folder_inside_the_data(tmp_path, capsys):
  data = malformed.write(malformed.Case(
      {'a.csv': malformed.HEADER + malformed.GOOD}, ()), str(tmp_path / 'd'))
  line = _run_and_check(capsys, data, tmp_path / 'd' / 'out')
  assert 'inside --data-root' in line, line
  assert not os.path.exists(tmp_path / 'd' / 'out')


@pytest.mark.parametrize('hyperparameters, expected', [
    ('model=lstm,unit=64', "'unit'"),
    ('model=foo', "'foo'"),
])
def test_runner_rejects_unknown_hyperparameters(tmp_path, capsys,
                                                hyperparameters, expected):
  data = malformed.write(malformed.Case(
      {'a.csv': malformed.HEADER + malformed.GOOD}, ()), str(tmp_path / 'd'))
  line = _run_and_check(capsys, data, tmp_path / 'out', '--hyperparameters',
                        hyperparameters)
  assert re.search(expected, line), line


def test_class_labels_as_users_have_them(tmp_path):
  """Text and any integers are classes (a vocabulary of the train split, as
  Transform makes it); integers 0..K-1 keep their indices."""
  from pipeline import input_check  # pylint: disable=g-import-not-at-top
  for labels, classes in [((b'0', b'1'), 2), ((b'-1', b'1'), 2),
                          ((b'0', b'20000'), 2), ((b'cat', b'dog'), 2),
                          ((b'0', b'2'), 2)]:
    root = tmp_path / labels[1].decode()
    train = _TRAIN.replace(b',1\n', b',Y\n').replace(b',0\n', b',X\n')
    evals = _EVAL.replace(b',1\n', b',Y\n').replace(b',0\n', b',X\n')
    data = malformed.write(_split_case(
        train.replace(b',X\n', b',' + labels[0] + b'\n').replace(
            b',Y\n', b',' + labels[1] + b'\n'),
        evals.replace(b',X\n', b',' + labels[0] + b'\n').replace(
            b',Y\n', b',' + labels[1] + b'\n')), str(root))
    counts = input_check.check_input(pipeline_config.PipelineConfig(
        data_root=data, output_dir=str(tmp_path / 'out')))
    assert counts == {'train': 4, 'eval': 3}, labels
