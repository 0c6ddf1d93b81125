"""The pipeline's tf.Transform module: z-scores per feature, the rest as is.

Runs ``preprocessing_fn`` through tf.Transform's Beam implementation on a
few rows: dense features and a feature with a missing value (sparse) get the
z-scores NumPy computes per column; key, order and label pass through.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from pipeline import transform_module

CONFIG = {'key_column': 'seq_id', 'order_column': 't',
          'label_column': 'label'}


def _transform(rows, feature_spec, tmp_path):
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(feature_spec))
  with tft_beam.Context(temp_dir=str(tmp_path), force_tf_compat_v1=False):
    (out, _), _ = ((rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
        lambda inputs: transform_module.preprocessing_fn(inputs, CONFIG)))
  return out


def test_features_are_z_scored_per_column_and_the_rest_passes(tmp_path):
  rng = np.random.default_rng(0)
  n = 40
  a = rng.normal(3.0, 2.0, n)
  b = rng.integers(-5, 50, n).astype(float)
  c = np.full(n, 7.0)  # Constant: variance 0, so x - mean.
  d = rng.normal(-1.0, 0.5, n)  # Sparse: one row has no value.
  rows = []
  for i in range(n):
    row = {'seq_id': [f'k{i % 4}'.encode()], 't': [i], 'label': [i % 2],
           'a': [a[i]], 'b': [b[i]], 'c': [c[i]],
           'd': [] if i == 5 else [d[i]]}
    rows.append(row)
  spec = {'seq_id': tf.io.FixedLenFeature([1], tf.string),
          't': tf.io.FixedLenFeature([1], tf.int64),
          'label': tf.io.FixedLenFeature([1], tf.int64),
          'a': tf.io.FixedLenFeature([1], tf.float32),
          'b': tf.io.FixedLenFeature([1], tf.int64),
          'c': tf.io.FixedLenFeature([1], tf.float32),
          'd': tf.io.VarLenFeature(tf.float32)}
  for row in rows:
    row['b'] = [int(row['b'][0])]
  out = _transform(rows, spec, tmp_path)
  assert len(out) == n

  def column(name):
    return np.array([np.asarray(r[name]).reshape(-1)[0] if
                     np.asarray(r[name]).size else np.nan for r in out])

  for name, raw in (('a', a), ('b', b), ('c', c)):
    raw32 = raw.astype(np.float32).astype(np.float64)
    std = raw32.std()
    expected = (raw32 - raw32.mean()) / (std if std > 0 else 1.0)
    np.testing.assert_allclose(column(name), expected, atol=1e-5)
  present = np.arange(n) != 5
  d32 = d[present].astype(np.float32).astype(np.float64)
  np.testing.assert_allclose(column('d')[present],
                             (d32 - d32.mean()) / d32.std(), atol=1e-5)
  assert [r['seq_id'][0] for r in out] == [f'k{i % 4}'.encode()
                                           for i in range(n)]
  assert [int(r['t'][0]) for r in out] == list(range(n))
  assert [int(r['label'][0]) for r in out] == [i % 2 for i in range(n)]


def test_statistics_in_float64_features_rounded_once_to_float32(tmp_path):
  # Values far from zero: float32 sums of them lose about 1e-4 of the mean,
  # so float32 statistics put the z-scores many float32 steps away from the
  # exact ones (and by how much depends on the order the partial sums are
  # merged in, which the runner does not fix).
  rng = np.random.default_rng(1)
  n = 3000
  raw = (1e4 + rng.normal(0.0, 1.0, n)).astype(np.float32)
  rows = [{'seq_id': [b'k'], 't': [i], 'label': [0], 'a': [raw[i]]}
          for i in range(n)]
  spec = {'seq_id': tf.io.FixedLenFeature([1], tf.string),
          't': tf.io.FixedLenFeature([1], tf.int64),
          'label': tf.io.FixedLenFeature([1], tf.int64),
          'a': tf.io.FixedLenFeature([1], tf.float32)}
  out = _transform(rows, spec, tmp_path)
  got = np.array([np.asarray(r['a']).reshape(-1)[0] for r in out])
  assert got.dtype == np.float32
  exact = raw.astype(np.float64)
  want = ((exact - exact.mean()) / exact.std()).astype(np.float32)
  np.testing.assert_array_max_ulp(got, want, maxulp=1)


def test_a_text_feature_is_an_error(tmp_path):
  rows = [{'seq_id': [b'k'], 't': [0], 'label': [0], 'name': [b'x']}]
  spec = {'seq_id': tf.io.FixedLenFeature([1], tf.string),
          't': tf.io.FixedLenFeature([1], tf.int64),
          'label': tf.io.FixedLenFeature([1], tf.int64),
          'name': tf.io.FixedLenFeature([1], tf.string)}
  with pytest.raises(ValueError, match="feature column 'name' is not "
                     'numeric'):
    _transform(rows, spec, tmp_path)
