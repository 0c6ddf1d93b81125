"""tf.Transform module of the pipeline: per-feature z-score normalisation,
class labels to indices.

The key and order columns pass through untouched (the SequenceBatcher needs
them as they were); every other numeric column is a feature and is scaled to
zero mean and unit variance over the training split. The scaling is part of
the transform graph, so the exported model applies it when serving.

Classification labels may be text (``cat``, ``dog``) or any integers: their
vocabulary is taken from the train split (``_ClassVocabulary``, an asset of
the transform graph named ``CLASS_VOCABULARY``, one class a line, ordered by
``class_order``) and each label becomes its index, so integer labels
0..K-1 keep their values. The trainer puts the names in the exported model
(``model_info``, ``class_names``). Regression labels pass through.

The statistics are accumulated in float64 and the z-scores rounded to float32
once. tf.Transform's combiners merge partial sums in whatever order the Beam
runner's bundles finish, so float32 statistics differ in their last bits from
run to run, and so did every feature written from them (and every model
trained on those); in float64 that order no longer reaches the float32
features (BENCHMARKS.md, section 6 notes: two runs of the same pipeline wrote
identical batches and trained identically).
"""

import os
from typing import Any, Dict, List, Optional

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from components.sequence_batcher import sequences as seqlib

# The class vocabulary's file name among the transform graph's assets.
CLASS_VOCABULARY = 'label_classes'


def class_order(names: List[str]) -> List[str]:
  """The classes in index order: by value when every name is an integer
  (so labels 0..K-1 keep their indices), else by text."""
  try:
    return sorted(names, key=int)
  except ValueError:
    return sorted(names)


class _ClassVocabulary(tft_beam.experimental.PTransformAnalyzer):
  """The distinct label values of the analysed (train) split, written one a
  line in ``class_order`` to an asset file; its path is the output."""

  def expand(self, pcoll):
    return (pcoll
            | 'Distinct' >> beam.FlatMap(
                lambda batch: np.unique(np.asarray(batch[0]).ravel()).tolist())
            | 'Dedup' >> beam.Distinct()
            | 'All' >> beam.combiners.ToList()
            | 'Write' >> beam.Map(self._write))

  def _write(self, values) -> bytes:
    names = class_order([v.decode('utf-8') if isinstance(v, bytes) else str(v)
                         for v in values])
    tf.io.gfile.makedirs(self.base_temp_dir)
    path = os.path.join(self.base_temp_dir, CLASS_VOCABULARY)
    with tf.io.gfile.GFile(path, 'w') as f:
      f.write(''.join(f'{n}\n' for n in names))
    return path.encode('utf-8')


def _class_indices(label: tf.Tensor) -> tf.Tensor:
  """Class labels as users have them (text, or any integers) -> indices
  into the train split's class vocabulary (``CLASS_VOCABULARY``)."""
  if label.dtype != tf.string:
    label = tf.strings.as_string(tf.cast(label, tf.int64))
  label = tf.strings.strip(label)
  path = tft.experimental.ptransform_analyzer(
      [label], _ClassVocabulary(), output_dtypes=[tf.string],
      output_shapes=[[]], output_asset_default_values=[b'?\n'],
      name='class_vocabulary')[0]
  return tft.apply_vocabulary(label, path, default_value=-1)


def _passthrough_columns(custom_config: Optional[Dict[str, Any]]):
  config = custom_config or {}
  defaults = seqlib.ColumnConfig()
  cols = [config.get('key_column', defaults.key_column),
          config.get('order_column', defaults.order_column),
          config.get('label_column', defaults.label_column)]
  cols += list(config.get('exclude_columns') or [])
  return {c for c in cols if c}


def preprocessing_fn(inputs: Dict[str, Any],
                     custom_config: Optional[Dict[str, Any]] = None
                    ) -> Dict[str, Any]:
  """z-scores every feature column; copies key, order and label.

  Args:
    inputs: raw columns, each [batch, 1] (dense) or sparse [batch, None].
    custom_config: ``key_column``, ``order_column``, ``label_column``,
      ``exclude_columns`` and optionally ``feature_columns``.

  Returns:
    The same columns; features as float32 z-scores.
  """
  config = custom_config or {}
  keep = _passthrough_columns(config)
  features = config.get('feature_columns') or sorted(
      name for name in inputs if name not in keep)
  outputs = {name: inputs[name] for name in keep if name in inputs}
  label = config.get('label_column')
  if config.get('task') == 'classification' and label in inputs:
    outputs[label] = _class_indices(inputs[label])
  for name in features:
    value = inputs[name]
    if value.dtype == tf.string:
      raise ValueError(
          f'feature column {name!r} is not numeric; list it in '
          'exclude_columns or give feature_columns explicitly')
    outputs[name] = tf.cast(tft.scale_to_z_score(tf.cast(value, tf.float64)),
                            tf.float32)
  return outputs
