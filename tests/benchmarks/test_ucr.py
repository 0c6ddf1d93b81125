"""benchmarks/ucr.py: the .ts reader and the CSV converter (no TensorFlow).

Synthetic .ts texts written to tmp_path, plus the real GunPoint files when
aeon's data can be found (an installed aeon package, or $TSS_AEON_DATA
naming an aeon wheel or data folder); without them that check runs on a
GunPoint-shaped synthetic file instead, so nothing is skipped.
"""

import csv
import json
import os
import zipfile

import numpy as np
import pytest

from benchmarks import ucr

UNIVARIATE = """\
# A comment line
%% another comment (the UEA files use both)
@problemName Toy
@timeStamps false
@missing false
@univariate true
@equalLength true
@seriesLength 4
@classLabel true b a c
@data
1.0,2.0,3.0,4.0:a

0.5,-1e-3,5.8E-5,7:b
# a comment between cases
9,8,7,6:c
"""

MULTIVARIATE = """\
@problemName Multi
@univariate false
@dimensions 2
@equalLength true
@seriesLength 3
@classLabel true Standing Running
@data
1,2,3:4,5,6:Running
-1,-2,-3:0.25,0.5,0.75:Standing
"""

VARIABLE = """\
@PROBLEMNAME Var
@UNIVARIATE false
@DIMENSIONS 2
@EQUALLENGTH false
@CLASSLABEL true 1 2
@DATA
1,2,3,?,?:4,5,6,NaN,NaN:2
7:8:1
1,2,3,4,5:6,7,8,9,10:1
"""

REGRESSION = """\
@problemname Reg
@timestamps false
@univariate true
@equallength true
@targetlabel true
@data
0.0,1.0,2.0:0.07758620689655173
3.0,4.0,5.0:-1.5
"""


def write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def archive(tmp_path, name, train, test):
  """A data folder laid out as in the aeon wheel."""
  folder = tmp_path / 'archive' / name
  folder.mkdir(parents=True)
  (folder / f'{name}_TRAIN.ts').write_text(train)
  (folder / f'{name}_TEST.ts').write_text(test)
  return ucr.Source(str(tmp_path / 'archive'))


def read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


# --------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------


def test_univariate(tmp_path):
  d = ucr.read_ts(write(tmp_path, 'u.ts', UNIVARIATE))
  assert d.header.problem_name == 'Toy'
  assert d.header.class_labels == ['b', 'a', 'c']
  assert d.header.task == 'classification'
  assert d.header.series_length == 4 and d.header.equal_length
  assert [s.shape for s in d.series] == [(4, 1)] * 3
  np.testing.assert_array_equal(d.series[1][:, 0], [0.5, -1e-3, 5.8e-5, 7])
  assert d.labels == ['a', 'b', 'c']
  assert d.lines == [11, 13, 15]


def test_multivariate(tmp_path):
  d = ucr.read_ts(write(tmp_path, 'm.ts', MULTIVARIATE))
  assert d.num_dimensions == 2
  np.testing.assert_array_equal(d.series[0], [[1, 4], [2, 5], [3, 6]])
  assert d.labels == ['Running', 'Standing']


def test_variable_length_trailing_missing_trimmed(tmp_path):
  d = ucr.read_ts(write(tmp_path, 'v.ts', VARIABLE))
  assert list(d.lengths()) == [3, 1, 5]
  np.testing.assert_array_equal(d.series[0], [[1, 4], [2, 5], [3, 6]])
  assert d.header.equal_length is False


def test_regression_target(tmp_path):
  d = ucr.read_ts(write(tmp_path, 'r.ts', REGRESSION))
  assert d.header.task == 'regression'
  assert d.labels == ['0.07758620689655173', '-1.5']


@pytest.mark.parametrize('text,line,fragment', [
    (UNIVARIATE.replace('9,8,7,6:c', '9,?,7,6:c'), 15, 'missing value'),
    (UNIVARIATE.replace('9,8,7,6:c', '9,8,x,6:c'), 15, "not a number: 'x'"),
    (UNIVARIATE.replace('9,8,7,6:c', '9,8,7,6:d'), 15, "class label 'd'"),
    (UNIVARIATE.replace('9,8,7,6:c', '9,8,7:c'), 15, '@seriesLength is 4'),
    (UNIVARIATE.replace('9,8,7,6:c', '9,8,7,6'), 15, 'no label'),
    (UNIVARIATE.replace('9,8,7,6:c', '9,8:7,6:c'), 15, 'expected 1'),
    (UNIVARIATE.replace('9,8,7,6:c', '9,8,inf,6:c'), 15, 'not a finite'),
    (MULTIVARIATE.replace('-1,-2,-3:', '-1,-2:'), 9, 'different lengths'),
    (MULTIVARIATE.replace(':0.25,0.5,0.75', ''), 9, 'expected 2'),
    (VARIABLE.replace('1,2,3,4,5:', '1,?,3,4,5:'), 9, 'missing value'),
    (REGRESSION.replace(':-1.5', ':high'), 8, "target 'high'"),
    (UNIVARIATE.replace('@data\n', ''), 10, 'before the @data'),
    (UNIVARIATE.replace('@timeStamps false', '@timeStamps true'), 4,
     'not supported'),
    (UNIVARIATE.replace('@seriesLength 4', '@seriesLength four'), 8,
     'must be an integer'),
    (UNIVARIATE.replace('@classLabel true b a c', '@classLabel true'), 9,
     'lists no class labels'),
    (UNIVARIATE + '@missing true\n', 16, 'header line after @data'),
])
def test_bad_line_names_file_and_line(tmp_path, text, line, fragment):
  path = write(tmp_path, 'bad.ts', text)
  with pytest.raises(ucr.TsFormatError) as e:
    ucr.read_ts(path)
  assert e.value.line == line
  assert str(e.value).startswith(f'{path}:{line}: ')
  assert fragment in str(e.value)
  assert '\n' not in str(e.value)


def test_no_data(tmp_path):
  path = write(tmp_path, 'empty.ts', '@problemName X\n@data\n# nothing\n')
  with pytest.raises(ucr.TsFormatError, match='no cases after @data'):
    ucr.read_ts(path)
  path = write(tmp_path, 'nodata.ts', '@problemName X\n')
  with pytest.raises(ucr.TsFormatError, match='no @data line'):
    ucr.read_ts(path)


# --------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------


def test_convert_classification(tmp_path):
  source = archive(tmp_path, 'Toy', UNIVARIATE,
                   UNIVARIATE.replace('1.0,2.0,3.0,4.0:a', '1,1,1,1:c'))
  out = tmp_path / 'out'
  meta = ucr.convert('Toy', str(out), source)
  # Labels numbered in the declared order (b a c), not sorted.
  assert meta['classes'] == ['b', 'a', 'c']
  assert meta['class_to_index'] == {'b': 0, 'a': 1, 'c': 2}
  assert json.loads((out / 'labels.json').read_text()) == meta
  assert sorted(os.listdir(out)) == ['eval', 'labels.json', 'train']
  train = read_csv(out / 'train' / 'Toy.csv')
  assert list(train[0]) == ['seq_id', 't', 'x0', 'label']
  assert len(train) == 12
  assert [r['seq_id'] for r in train[:5]] == ['train_00000'] * 4 + [
      'train_00001']
  assert [r['t'] for r in train[:5]] == ['0', '1', '2', '3', '0']
  assert [r['label'] for r in train[::4]] == ['1', '0', '2']
  # Values read back exactly.
  assert [float(r['x0']) for r in train[4:8]] == [0.5, -1e-3, 5.8e-5, 7.0]
  evals = read_csv(out / 'eval' / 'Toy.csv')
  assert evals[0]['seq_id'] == 'eval_00000' and evals[0]['label'] == '2'
  assert meta['train']['sequences'] == 3 and meta['eval']['rows'] == 12
  assert meta['label_kind'] == 'per_sequence'


def test_convert_multivariate_variable_length(tmp_path):
  source = archive(tmp_path, 'Var', VARIABLE, VARIABLE)
  meta = ucr.convert('Var', str(tmp_path / 'out'), source)
  rows = read_csv(tmp_path / 'out' / 'train' / 'Var.csv')
  assert list(rows[0]) == ['seq_id', 't', 'x0', 'x1', 'label']
  assert len(rows) == 3 + 1 + 5
  assert [(r['x0'], r['x1']) for r in rows[:3]] == [
      ('1.0', '4.0'), ('2.0', '5.0'), ('3.0', '6.0')]
  assert meta['num_features'] == 2 and meta['classes'] == ['1', '2']
  assert (meta['train']['length_min'], meta['train']['length_max']) == (1, 5)


def test_convert_regression(tmp_path):
  source = archive(tmp_path, 'Reg', REGRESSION, REGRESSION)
  meta = ucr.convert('Reg', str(tmp_path / 'out'), source)
  assert meta['task'] == 'regression' and 'classes' not in meta
  rows = read_csv(tmp_path / 'out' / 'eval' / 'Reg.csv')
  assert [float(r['label']) for r in rows] == [0.07758620689655173] * 3 + [
      -1.5] * 3


def test_convert_forecast(tmp_path):
  source = archive(tmp_path, 'Var', VARIABLE, VARIABLE)
  meta = ucr.convert('Var', str(tmp_path / 'out'), source, forecast=True)
  assert meta['task'] == 'regression' and meta['label_kind'] == 'per_step'
  rows = read_csv(tmp_path / 'out' / 'train' / 'Var.csv')
  # Lengths 3, 1, 5 -> 2, (dropped), 4 rows; label[t] = x0[t+1].
  assert [r['seq_id'] for r in rows] == ['train_00000'] * 2 + [
      'train_00002'] * 4
  assert [(float(r['x0']), float(r['label'])) for r in rows] == [
      (1, 2), (2, 3), (1, 2), (2, 3), (3, 4), (4, 5)]
  assert [float(r['x1']) for r in rows[:2]] == [4.0, 5.0]
  assert meta['train']['dropped_length_1'] == 1
  assert meta['train']['sequences'] == 2 and meta['train']['rows'] == 6


def test_eval_label_not_in_train_classes(tmp_path):
  test = UNIVARIATE.replace('@classLabel true b a c', '@classLabel true b a z'
                           ).replace('9,8,7,6:c', '9,8,7,6:z')
  source = archive(tmp_path, 'Toy', UNIVARIATE, test)
  with pytest.raises(ucr.TsFormatError, match=r"Toy_TEST.ts:15: class label "
                     r"'z' is not one of the train file's"):
    ucr.convert('Toy', str(tmp_path / 'out'), source)


# --------------------------------------------------------------------------
# Finding the files; the command line
# --------------------------------------------------------------------------


def test_read_from_wheel_zip(tmp_path):
  whl = tmp_path / 'aeon-0.0-py3-none-any.whl'
  with zipfile.ZipFile(whl, 'w') as z:
    z.writestr('aeon/datasets/data/Toy/Toy_TRAIN.ts', UNIVARIATE)
    z.writestr('aeon/datasets/data/Toy/Toy_TEST.ts', UNIVARIATE)
    z.writestr('aeon/datasets/data/Half/Half_TRAIN.ts', UNIVARIATE)
  source = ucr.find_source(aeon_wheel=str(whl))
  assert source.is_wheel and source.datasets() == ['Toy']
  d = source.read('Toy', 'TEST')
  assert d.path.endswith('!aeon/datasets/data/Toy/Toy_TEST.ts')
  assert len(d.series) == 3


def test_find_source_from_env_and_package_layouts(tmp_path, monkeypatch):
  archive(tmp_path, 'Toy', UNIVARIATE, UNIVARIATE)
  monkeypatch.setenv(ucr.ENV_VAR, str(tmp_path / 'archive'))
  assert ucr.find_source().datasets() == ['Toy']
  # A `pip install --target DIR` folder (DIR/aeon/datasets/data).
  pkg = tmp_path / 'target' / 'aeon' / 'datasets' / 'data' / 'Toy'
  pkg.mkdir(parents=True)
  for split in ('TRAIN', 'TEST'):
    (pkg / f'Toy_{split}.ts').write_text(UNIVARIATE)
  src = ucr.find_source(data_dir=str(tmp_path / 'target'))
  assert src.path.endswith(os.path.join('aeon', 'datasets', 'data'))
  assert src.datasets() == ['Toy']


def test_cli(tmp_path, capsys):
  archive(tmp_path, 'Toy', UNIVARIATE, UNIVARIATE)
  out = tmp_path / 'out'
  assert ucr.main(['--data-dir', str(tmp_path / 'archive'), '--dataset',
                   'Toy', '--out', str(out)]) == 0
  assert (out / 'train' / 'Toy.csv').exists()
  assert (out / 'eval' / 'Toy.csv').exists()
  bad = tmp_path / 'archive' / 'Toy' / 'Toy_TEST.ts'
  bad.write_text(UNIVARIATE.replace('9,8,7,6:c', '9,?,7,6:c'))
  capsys.readouterr()
  assert ucr.main(['--data-dir', str(tmp_path / 'archive'), '--dataset',
                   'Toy', '--out', str(out)]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith(f'error: {bad}:15: missing value')
  assert '\n' not in err
  assert ucr.main(['--data-dir', str(tmp_path / 'archive'), '--dataset',
                   'Nope', '--out', str(out)]) == 1
  assert 'Nope_TRAIN.ts not found' in capsys.readouterr().err


# --------------------------------------------------------------------------
# The real GunPoint files
# --------------------------------------------------------------------------

# GunPoint_TRAIN.ts's header, as in the archive; the synthetic stand-in
# keeps it and its shape (length 150, labels 1/2) when aeon's data is absent.
GUNPOINT_HEADER = """\
#This dataset involves one female actor and one male actor making a
#motion with their hand. The two classes are: Gun-Draw and Point:
@problemName GunPoint
@timeStamps false
@missing false
@univariate true
@equalLength true
@seriesLength 150
@classLabel true 1 2
@data
"""


def _gunpoint_source(tmp_path):
  """(source, real?) : aeon's files, or a GunPoint-shaped stand-in."""
  try:
    source = ucr.find_source()
    if 'GunPoint' in source.datasets():
      return source, True
  except ValueError:
    pass
  rng = np.random.default_rng(0)
  texts = {}
  for split, n in (('TRAIN', 50), ('TEST', 150)):
    lines = [','.join(f'{v:.8g}' for v in rng.normal(size=150)) +
             f':{1 + i % 2}' for i in range(n)]
    texts[split] = GUNPOINT_HEADER + '\n'.join(lines) + '\n'
  return archive(tmp_path, 'GunPoint', texts['TRAIN'], texts['TEST']), False


def test_gunpoint(tmp_path):
  source, real = _gunpoint_source(tmp_path)
  out = tmp_path / 'gp'
  meta = ucr.convert('GunPoint', str(out), source)
  assert meta['task'] == 'classification'
  assert meta['classes'] == ['1', '2'] and meta['num_features'] == 1
  assert (meta['train']['sequences'], meta['eval']['sequences']) == (50, 150)
  assert meta['train']['rows'] == 50 * 150 and meta['eval']['rows'] == 150 * 150
  assert meta['train']['length_min'] == meta['train']['length_max'] == 150
  train = read_csv(out / 'train' / 'GunPoint.csv')
  assert {r['label'] for r in train} == {'0', '1'}
  assert train[-1]['seq_id'] == 'train_00049' and train[-1]['t'] == '149'
  if real:
    # The first value of the first training case, as in GunPoint_TRAIN.ts,
    # and the class balance of the archive's split (24 Gun / 26 Point).
    assert float(train[0]['x0']) == -0.6478854
    counts = np.bincount([int(r['label']) for r in train[::150]])
    assert list(counts) == [24, 26]
