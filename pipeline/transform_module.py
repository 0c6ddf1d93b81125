"""tf.Transform module of the pipeline: per-feature z-score normalisation.

The key, order and label columns pass through untouched (the SequenceBatcher
needs them as they were); every other numeric column is a feature and is
scaled to zero mean and unit variance over the training split. The scaling is
part of the transform graph, so the exported model applies it when serving.

The statistics are accumulated in float64 and the z-scores rounded to float32
once. tf.Transform's combiners merge partial sums in whatever order the Beam
runner's bundles finish, so float32 statistics differ in their last bits from
run to run, and so did every feature written from them (and every model
trained on those); in float64 that order no longer reaches the float32
features (BENCHMARKS.md, section 6 notes: two runs of the same pipeline wrote
identical batches and trained identically).
"""

from typing import Any, Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft


def _passthrough_columns(custom_config: Optional[Dict[str, Any]]):
  config = custom_config or {}
  cols = [config.get('key_column', 'seq_id'), config.get('order_column', 't'),
          config.get('label_column', 'label')]
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
  for name in features:
    value = inputs[name]
    if value.dtype == tf.string:
      raise ValueError(
          f'feature column {name!r} is not numeric; list it in '
          'exclude_columns or give feature_columns explicitly')
    outputs[name] = tf.cast(tft.scale_to_z_score(tf.cast(value, tf.float64)),
                            tf.float32)
  return outputs
