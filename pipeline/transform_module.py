"""tf.Transform module of the pipeline: per-feature z-score normalisation.

The key, order and label columns pass through untouched (the SequenceBatcher
needs them as they were); every other numeric column is a feature and is
scaled to zero mean and unit variance over the training split. The scaling is
part of the transform graph, so the exported model applies it when serving.

The dense features (one value per row, as ExampleGen writes CSV columns
without missing values) are scaled together: stacked into one ``[batch, F]``
tensor and z-scored per column by a single ``tft.scale_to_z_score(...,
elementwise=True)``, one mean-and-variance analyzer for all of them instead
of one per feature. The figures are the same per column; tf.Transform's
Beam graph (and so the time Beam takes to build and translate it, most of
Transform's time on small inputs) no longer grows with the number of
features. A feature that is not dense (a column with missing values arrives
sparse) gets its own ``scale_to_z_score`` as before.
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


def _is_dense_column(value) -> bool:
  """One value per row: a dense ``[batch, 1]`` tensor."""
  return (isinstance(value, tf.Tensor) and value.shape.rank == 2 and
          value.shape[1] == 1)


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
    if inputs[name].dtype == tf.string:
      raise ValueError(
          f'feature column {name!r} is not numeric; list it in '
          'exclude_columns or give feature_columns explicitly')
  dense = [name for name in features if _is_dense_column(inputs[name])]
  if len(dense) > 1:
    stacked = tf.concat([tf.cast(inputs[name], tf.float32) for name in dense],
                        axis=1)
    scaled = tft.scale_to_z_score(stacked, elementwise=True,
                                  name='scale_features_to_z_score')
    for i, name in enumerate(dense):
      outputs[name] = scaled[:, i:i + 1]
  else:
    dense = []
  for name in features:
    if name not in dense:
      outputs[name] = tft.scale_to_z_score(tf.cast(inputs[name], tf.float32))
  return outputs
