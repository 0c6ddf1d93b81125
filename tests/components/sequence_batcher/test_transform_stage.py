"""A tf.Transform graph applied to raw tf.Example rows as they are decoded
(``transform_stage``): the graph's outputs become the rows' columns, a
feature a row lacks stays missing, and bad rows are one error. (That the
batches equal those from Transform's materialized examples:
``tests/pipeline/test_transform_once.py``.)"""

from __future__ import annotations

import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from components.sequence_batcher import read_stage
from components.sequence_batcher import sequences as seqlib
from components.sequence_batcher import transform_stage
from tests.components.sequence_batcher import helpers

COLUMNS = seqlib.ColumnConfig(key_column='seq_id', order_column='t',
                              label_column='label')
SPEC = {'seq_id': tf.io.FixedLenFeature([1], tf.string),
        't': tf.io.FixedLenFeature([1], tf.int64),
        'label': tf.io.FixedLenFeature([1], tf.int64),
        'a': tf.io.FixedLenFeature([1], tf.float32),
        'd': tf.io.VarLenFeature(tf.float32)}
SRC = 'split test'


def _preprocessing_fn(inputs):
  out = {k: inputs[k] for k in ('seq_id', 't', 'label')}
  for name in ('a', 'd'):
    out[name] = tf.cast(tft.scale_to_z_score(tf.cast(inputs[name],
                                                     tf.float64)), tf.float32)
  return out


def _rows(n=30):
  rng = np.random.default_rng(0)
  return [{'seq_id': f'k{i % 3}', 't': i, 'label': i % 3 % 2,
           'a': float(rng.normal(3.0, 2.0)),
           'd': None if i == 4 else float(rng.normal(-1.0, 0.5))}
          for i in range(n)]


def rows():
  """The raw rows: keys k0, k1, k2; ``d`` missing in the row with t = 4."""
  return _rows()


def write_graph(root) -> str:
  """A transform graph of ``rows()`` as TFX's Transform writes it, under
  ``root``: the transform function and both schemas (raw ``metadata/``,
  ``transformed_metadata/``); returns its folder."""
  out = str(root / 'transform_graph')
  feeds = [{k: ([] if v is None else [v]) for k, v in r.items()}
           for r in _rows()]
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(SPEC))
  with beam.Pipeline() as p, tft_beam.Context(temp_dir=str(root / 'tmp'),
                                              force_tf_compat_v1=False):
    raw = p | beam.Create(feeds)
    transform_fn = (raw, metadata) | tft_beam.AnalyzeDataset(
        _preprocessing_fn)
    _ = transform_fn | tft_beam.WriteTransformFn(out)
    _ = metadata | tft_beam.WriteMetadata(
        os.path.join(out, tft.TFTransformOutput.RAW_METADATA_DIR), p)
  return out


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
  return write_graph(tmp_path_factory.mktemp('graph'))


def test_graph_outputs_become_the_columns_and_holes_stay_missing(graph):
  rows = _rows()
  chunks = transform_stage.transform_examples(helpers.examples(rows), graph,
                                              COLUMNS, SRC)
  assert sorted(c.key for c in chunks) == ['k0', 'k1', 'k2']
  by_t = {}
  for chunk in chunks:
    assert set(chunk.columns) == {'t', 'label', 'a', 'd'}
    for j, t in enumerate(chunk.columns['t']):
      by_t[int(t)] = {name: (values[j], bool(chunk.missing.get(
          name, np.zeros(len(values), bool))[j]))
                      for name, values in chunk.columns.items()}
  assert sorted(by_t) == list(range(len(rows)))
  assert [by_t[i]['label'][0] for i in range(len(rows))] == [
      r['label'] for r in rows]
  a = np.array([r['a'] for r in rows], np.float32).astype(np.float64)
  np.testing.assert_allclose([by_t[i]['a'][0] for i in range(len(rows))],
                             (a - a.mean()) / a.std(), atol=1e-5)
  assert [i for i in by_t if by_t[i]['d'][1]] == [4]
  d = np.array([r['d'] for r in rows if r['d'] is not None],
               np.float32).astype(np.float64)
  np.testing.assert_allclose(
      [by_t[i]['d'][0] for i in range(len(rows)) if i != 4],
      (d - d.mean()) / d.std(), atol=1e-5)


def test_the_output_does_not_depend_on_how_rows_are_bundled(graph):
  records = helpers.examples(_rows())
  whole = transform_stage.transform_examples(records, graph, COLUMNS, SRC)
  parts = []
  for i in range(0, len(records), 7):
    parts += transform_stage.transform_examples(records[i:i + 7], graph,
                                                COLUMNS, SRC)
  for key in ('k0', 'k1', 'k2'):
    one = seqlib.merge_chunks(key, [c for c in whole if c.key == key])
    many = seqlib.merge_chunks(key, [c for c in parts if c.key == key])
    assert sorted(one.columns) == sorted(many.columns)
    assert sorted(one.missing) == sorted(many.missing)
    order_one, order_many = (np.argsort(one.columns['t']),
                             np.argsort(many.columns['t']))
    for name in one.columns:
      np.testing.assert_array_equal(one.columns[name][order_one],
                                    many.columns[name][order_many])
    for name in one.missing:
      np.testing.assert_array_equal(one.missing[name][order_one],
                                    many.missing[name][order_many])


def test_a_row_the_raw_schema_cannot_decode_is_one_error(graph):
  bad = dict(_rows()[0], a='text')
  with pytest.raises(seqlib.InputDataError, match=SRC):
    transform_stage.transform_examples(helpers.examples([bad]), graph,
                                       COLUMNS, SRC)


def test_a_graph_applies_to_tf_example_rows_only():
  with pytest.raises(ValueError, match='transform graph'):
    read_stage.DecodeRows(read_stage.SEQUENCE_EXAMPLE, COLUMNS,
                          transform_graph='/some/graph')
