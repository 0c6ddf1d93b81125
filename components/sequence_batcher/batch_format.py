"""One batch <-> one ``tf.train.Example`` record.

Every key of a batch (see ``segments.assemble_batch``) is one feature of the
record, flattened; ``read_batches`` restores the static shapes from
``metadata.json``. Serialization is deterministic (sorted map keys), so equal
batches give equal bytes on every runner.
"""

from __future__ import annotations

import json
from typing import Dict

import numpy as np
import tensorflow as tf

LABEL_DTYPES = {'int64': np.int64, 'float32': np.float32}


def _floats(values: np.ndarray) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(
      value=np.asarray(values, np.float32).ravel().tolist()))


def _ints(values: np.ndarray) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(
      value=np.asarray(values, np.int64).ravel().tolist()))


def serialize_batch(batch: Dict[str, np.ndarray]) -> bytes:
  """Serializes a batch dict to ``tf.train.Example`` bytes."""
  labels = batch['labels']
  feature = {
      'features': _floats(batch['features']),
      'labels': (_ints(labels) if np.issubdtype(labels.dtype, np.integer) else
                 _floats(labels)),
      'mask': _floats(batch['mask']),
      'label_weight': _floats(batch['label_weight']),
      'reset': _ints(batch['reset']),
      'key': tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[bytes(k) for k in np.asarray(batch['key']).ravel()])),
      'segment_index': _ints(batch['segment_index']),
      'sequence_length': _ints(batch['sequence_length']),
      'batch_index': _ints(batch['batch_index']),
  }
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  return example.SerializeToString(deterministic=True)


def feature_spec(meta: dict) -> Dict[str, tf.io.FixedLenFeature]:
  """The parsing spec of one batch record, from a split's metadata."""
  bsz, unroll, nfeat = meta['batch_size'], meta['num_unroll'], meta[
      'num_features']
  label_dtype = tf.int64 if meta['label_dtype'] == 'int64' else tf.float32
  # Per lane, or per step in dense mode (segments.assemble_batch).
  lane = [bsz, unroll] if meta.get('mode') == 'dense' else [bsz]
  return {
      'features': tf.io.FixedLenFeature([bsz, unroll, nfeat], tf.float32),
      'labels': tf.io.FixedLenFeature([bsz, unroll], label_dtype),
      'mask': tf.io.FixedLenFeature([bsz, unroll], tf.float32),
      'label_weight': tf.io.FixedLenFeature([bsz, unroll], tf.float32),
      'reset': tf.io.FixedLenFeature(lane, tf.int64),
      'key': tf.io.FixedLenFeature(lane, tf.string),
      'segment_index': tf.io.FixedLenFeature(lane, tf.int64),
      'sequence_length': tf.io.FixedLenFeature(lane, tf.int64),
      'batch_index': tf.io.FixedLenFeature([], tf.int64),
  }


def read_json(path: str) -> dict:
  """Reads JSON through tf.io.gfile (local, GCS, S3, HDFS paths).

  A missing file raises ``FileNotFoundError`` (as ``open`` does; callers such
  as ``metadata.resolve`` catch it), not TensorFlow's ``NotFoundError``.
  """
  try:
    with tf.io.gfile.GFile(path, 'r') as f:
      return json.load(f)
  except tf.errors.NotFoundError as e:
    raise FileNotFoundError(f'{path}: no such file') from e
