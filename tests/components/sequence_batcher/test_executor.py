"""The SequenceBatcher TFX component and executor on tiny Examples artifacts."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import channel_utils

from components.sequence_batcher import component as component_lib
from components.sequence_batcher import executor as executor_lib
from components.sequence_batcher import layout
from components.sequence_batcher import layout_rule
from components.sequence_batcher import read_batches
from components.sequence_batcher import sequences as seqlib


def _row(key: str, t: int, x: float, label: int) -> bytes:
  ex = tf.train.Example()
  ex.features.feature['seq_id'].bytes_list.value.append(key.encode())
  ex.features.feature['t'].int64_list.value.append(t)
  ex.features.feature['x'].float_list.value.append(x)
  ex.features.feature['label'].int64_list.value.append(label)
  return ex.SerializeToString()


def _seq_example(key: str, xs, label: int) -> bytes:
  ex = tf.train.SequenceExample()
  ex.context.feature['seq_id'].bytes_list.value.append(key.encode())
  ex.context.feature['label'].int64_list.value.append(label)
  fl = ex.feature_lists.feature_list['x']
  for x in xs:
    fl.feature.add().float_list.value.append(x)
  return ex.SerializeToString()


def _write_gz_tfrecord(path: str, records) -> None:
  # ExampleGen writes gzipped TFRecord files; do the same.
  with tf.io.TFRecordWriter(path, options='GZIP') as w:
    for r in records:
      w.write(r)


def _examples_artifact(root: str, splits: dict, payload=None):
  art = standard_artifacts.Examples()
  art.uri = os.path.join(root, 'examples')
  art.split_names = artifact_utils.encode_split_names(sorted(splits))
  if payload is not None:
    art.set_string_custom_property(
        'payload_format', example_gen_pb2.PayloadFormat.Name(payload))
  for split, records in splits.items():
    d = os.path.join(art.uri, f'Split-{split}')
    os.makedirs(d)
    _write_gz_tfrecord(os.path.join(d, 'data_tfrecord-00000-of-00001.gz'),
                       records)
  return art


def _run(tmp_path, examples, **props):
  out = component_lib.SequenceBatches()
  out.uri = str(tmp_path / 'batches')
  exec_properties = {
      'key_column': 'seq_id', 'order_column': 't', 'label_column': 'label',
      'label_kind': 'per_sequence', 'batch_size': 2, 'num_unroll': 3,
      'mode': 'packed', 'feature_columns': None,
      'exclude_columns': json.dumps([]),
  }
  exec_properties.update(props)
  executor_lib.Executor().Do({'examples': [examples]}, {'batches': [out]},
                             exec_properties)
  return out


def test_executor_batches_every_split_of_row_examples(tmp_path):
  lengths = {'train': {'a': 7, 'b': 2, 'c': 4}, 'eval': {'d': 5}}
  splits = {}
  for split, seqs in lengths.items():
    rows = [_row(k, t, 10.0 * i + t, i % 2)
            for i, (k, n) in enumerate(sorted(seqs.items()))
            for t in range(n)]
    splits[split] = rows[::-1]  # Any row order: the batcher sorts by t.
  out = _run(tmp_path, _examples_artifact(str(tmp_path), splits))

  assert artifact_utils.decode_split_names(out.split_names) == ['eval',
                                                                'train']
  with open(os.path.join(out.uri, 'metadata.json')) as f:
    meta = json.load(f)
  assert sorted(meta['splits']) == ['eval', 'train']
  assert meta['feature_names'] == ['x']
  for split, seqs in lengths.items():
    stats = meta['splits'][split]
    assert stats['num_sequences'] == len(seqs)
    assert stats['real_timesteps'] == sum(seqs.values())
    batches = list(read_batches(out.uri, split).as_numpy_iterator())
    assert len(batches) == stats['num_batches']
    assert sum(b['mask'].sum() for b in batches) == sum(seqs.values())
    # Values come back in time order, per lane.
    for i, key in enumerate(sorted(seqs)):
      steps = [
          b['features'][lane, :, 0][b['mask'][lane] > 0]
          for b in batches for lane in range(2)
          if b['key'][lane] == key.encode()
      ]
      got = np.concatenate(steps)
      assert got.tolist() == [10.0 * i + t for t in range(seqs[key])]
  stats = out.get_json_value_custom_property('train_statistics')
  assert stats['num_sequences'] == 3


def test_executor_reads_sequence_examples(tmp_path):
  records = [_seq_example('p', [1.0, 2.0, 3.0, 4.0], 1),
             _seq_example('q', [5.0], 0)]
  examples = _examples_artifact(
      str(tmp_path), {'train': records},
      payload=example_gen_pb2.PayloadFormat.FORMAT_TF_SEQUENCE_EXAMPLE)
  out = _run(tmp_path, examples)
  batches = list(read_batches(out.uri, 'train').as_numpy_iterator())
  assert sum(b['mask'].sum() for b in batches) == 5
  first = batches[0]
  lane_p = list(first['key']).index(b'p')
  assert first['features'][lane_p, :, 0].tolist() == [1.0, 2.0, 3.0]
  assert first['reset'][lane_p] == 1
  assert batches[1]['features'][lane_p, 0, 0] == 4.0
  assert batches[1]['reset'][lane_p] == 0
  # Per-sequence label weight: only on the last real step (step 3 of 'p').
  assert batches[1]['label_weight'][lane_p].tolist() == [1.0, 0.0, 0.0]


def test_executor_rejects_empty_split(tmp_path):
  examples = _examples_artifact(
      str(tmp_path), {'train': [_row('a', 0, 1.0, 0)], 'eval': []})
  with pytest.raises(Exception, match="split 'eval'.*no rows"):
    _run(tmp_path, examples)


def test_executor_names_split_and_key_on_bad_rows(tmp_path):
  rows = [_row('a', 0, 1.0, 0), _row('a', 0, 2.0, 0)]
  examples = _examples_artifact(str(tmp_path), {'train': rows})
  with pytest.raises(Exception, match=r"split 'train'.*'a'.*duplicate"):
    _run(tmp_path, examples)


def test_component_validates_arguments_when_built():
  examples = channel_utils.as_channel([standard_artifacts.Examples()])
  with pytest.raises(ValueError, match='batch_size'):
    component_lib.SequenceBatcher(examples=examples, key_column='k',
                                  order_column='t', batch_size=0)
  with pytest.raises(ValueError, match='mode'):
    component_lib.SequenceBatcher(examples=examples, key_column='k',
                                  order_column='t', mode='shuffled')
  with pytest.raises(ValueError, match='feature'):
    component_lib.SequenceBatcher(examples=examples, key_column='k',
                                  order_column='t', feature_columns=['k'])
  c = component_lib.SequenceBatcher(examples=examples, key_column='k',
                                    order_column='t', label_column='y',
                                    feature_columns=['a', 'b'])
  assert json.loads(c.exec_properties['feature_columns']) == ['a', 'b']
  assert c.outputs['batches'].type is component_lib.SequenceBatches


# The component's parameters and their types, as pipelines and the Kubeflow
# compile know them.
PUBLIC_PARAMETERS = {
    'key_column': str, 'order_column': str, 'label_column': str,
    'feature_columns': str, 'exclude_columns': str, 'batch_size': int,
    'num_unroll': int, 'mode': str, 'label_kind': str,
    'max_sequence_length': int, 'truncate': int, 'shard_bytes': int,
    'lane_multiple': int}

# A value of every batcher setting other than its declared default.
OTHER_VALUES = dict(
    key_column='k', order_column='o', label_column='y',
    feature_columns=('b', 'a'), exclude_columns=('z',), batch_size=4,
    num_unroll=5, mode=layout.BUCKETED, label_kind=layout.PER_STEP,
    max_sequence_length=9, truncate=True, shard_bytes=1234, lane_multiple=2)


def test_component_parameters_are_the_declared_settings():
  declared_fields = [f for cls in (seqlib.ColumnConfig, layout.LayoutConfig)
                     for f in dataclasses.fields(cls)]
  params = component_lib.SequenceBatcherSpec.PARAMETERS
  assert list(params) == [f.name for f in declared_fields]
  assert {name: p.type for name, p in params.items()} == PUBLIC_PARAMETERS
  assert sorted(OTHER_VALUES) == sorted(params)
  for field in declared_fields:
    assert OTHER_VALUES[field.name] != field.default, field.name


def test_every_setting_reaches_the_executor():
  examples = channel_utils.as_channel([standard_artifacts.Examples()])
  c = component_lib.SequenceBatcher(examples=examples, **OTHER_VALUES)
  assert c.exec_properties['feature_columns'] == '["b", "a"]'
  assert c.exec_properties['truncate'] == 1
  columns, config, auto = executor_lib.settings_from(c.exec_properties)
  assert auto == (False, False)
  got = {**dataclasses.asdict(columns), **dataclasses.asdict(config)}
  assert got == OTHER_VALUES

  # Unset: the declared defaults; the layout from the data; no order or
  # label column unless named.
  c = component_lib.SequenceBatcher(examples=examples, key_column='k')
  columns, config, auto = executor_lib.settings_from(c.exec_properties)
  assert auto == (True, True)
  assert config == layout.LayoutConfig(batch_size=1, num_unroll=1)
  assert columns == seqlib.ColumnConfig(key_column='k', order_column=None,
                                        label_column=None)
  # As an orchestrator may pass "unset".
  columns, config, auto = executor_lib.settings_from(
      {'key_column': 'k', 'order_column': '', 'label_column': '',
       'feature_columns': '', 'exclude_columns': '', 'batch_size': 0,
       'num_unroll': 0, 'max_sequence_length': 0, 'mode': ''})
  assert auto == (True, True)
  assert config == layout.LayoutConfig(batch_size=1, num_unroll=1)
  assert columns == seqlib.ColumnConfig(key_column='k', order_column=None,
                                        label_column=None)


def test_executor_chooses_one_layout_from_the_train_split(tmp_path):
  """batch_size / num_unroll unset: the train split's lengths choose them
  (``layout_rule.choose_layout``) and every split is laid out the same way."""
  train_lengths = [40, 36, 44, 38, 41, 39, 42, 37, 35, 43, 40, 36, 44, 38,
                   41, 39]
  eval_lengths = [5, 90]  # Alone these would choose another layout.
  splits = {}
  for split, lengths in (('train', train_lengths), ('eval', eval_lengths)):
    splits[split] = [_row(f'{split}{i:02d}', t, float(t), i % 2)
                     for i, n in enumerate(lengths) for t in range(n)]
  out = _run(tmp_path, _examples_artifact(str(tmp_path), splits),
             batch_size=None, num_unroll=None)
  want_b, want_t = layout_rule.choose_layout(train_lengths)
  assert (want_b, want_t) != layout_rule.choose_layout(eval_lengths)
  with open(os.path.join(out.uri, 'metadata.json')) as f:
    meta = json.load(f)
  assert (meta['batch_size'], meta['num_unroll']) == (want_b, want_t)
  for split, lengths in (('train', train_lengths), ('eval', eval_lengths)):
    batches = list(read_batches(out.uri, split).as_numpy_iterator())
    assert batches[0]['features'].shape[:2] == (want_b, want_t)
    assert sum(b['mask'].sum() for b in batches) == sum(lengths)


def test_executor_rounds_the_chosen_batch_size_to_the_replicas(tmp_path,
                                                              caplog):
  caplog.set_level(logging.INFO)
  lengths = [40] * 24  # The rule alone: 4 lanes.
  splits = {'train': [_row(f'k{i:02d}', t, float(t), i % 2)
                      for i, n in enumerate(lengths) for t in range(n)]}
  assert layout_rule.choose_layout(lengths)[0] == 4
  out = _run(tmp_path, _examples_artifact(str(tmp_path), splits),
             batch_size=None, num_unroll=None, lane_multiple=3)
  with open(os.path.join(out.uri, 'metadata.json')) as f:
    assert json.load(f)['batch_size'] == 6
  assert any('rounded up to 6, a multiple of the 3 training replicas' in
             r.getMessage() for r in caplog.records)
  with pytest.raises(layout.LayoutError, match='not a multiple'):
    _run(tmp_path / 'given', _examples_artifact(str(tmp_path / 'given'),
                                                splits),
         batch_size=4, num_unroll=8, lane_multiple=3)


def test_executor_keeps_a_given_batch_size_with_a_chosen_unroll(tmp_path):
  splits = {'train': [_row(f'k{i}', t, 1.0, 0) for i in range(6)
                      for t in range(64)]}
  out = _run(tmp_path, _examples_artifact(str(tmp_path), splits),
             batch_size=3, num_unroll=None)
  with open(os.path.join(out.uri, 'metadata.json')) as f:
    meta = json.load(f)
  assert (meta['batch_size'], meta['num_unroll']) == (
      3, layout_rule.choose_layout([64] * 6)[1])
