"""The objective of a stateful model: per-step loss and metrics for its task.

Owns what "loss" and "metric" mean for a ``ModelSpec``: the default loss
(sparse softmax cross-entropy on logits, or squared error), the default
metrics (accuracy, or MAE/RMSE), the user module's ``loss(spec)`` /
``metrics(spec)`` hooks, and the label-weighted reductions. The trainer and
the evaluator both take their objective from here.

Shapes: B lanes, T steps, K outputs per step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional

import tensorflow as tf
import tf_keras as keras

from components.stateful import model_spec as ms
from components.stateful import module_contract

Batch = Dict[str, tf.Tensor]


class ObjectiveError(ValueError):
  """A loss or metric hook returns something the loop cannot use."""


# Gradient clipping by global norm unless the hyperparameters say otherwise.
DEFAULT_CLIP_GLOBAL_NORM = 1.0


def _default_loss(spec: ms.ModelSpec) -> Callable[[tf.Tensor, tf.Tensor],
                                                  tf.Tensor]:
  if spec.task == ms.CLASSIFICATION:

    def loss(labels, outputs):
      return tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=tf.cast(labels, tf.int32), logits=outputs)

    return loss

  def squared_error(labels, outputs):
    return tf.square(outputs[..., 0] - tf.cast(labels, outputs.dtype))

  return squared_error


def _default_metrics(spec: ms.ModelSpec) -> List[keras.metrics.Metric]:
  if spec.task == ms.CLASSIFICATION:
    return [keras.metrics.SparseCategoricalAccuracy(name='accuracy')]
  return [keras.metrics.MeanAbsoluteError(name='mae'),
          keras.metrics.RootMeanSquaredError(name='rmse')]


@dataclasses.dataclass
class Objective:
  """Per-step loss and metric factory of one task.

  Attributes:
    spec: the model spec (task, classes, output size).
    loss_fn: ``(labels [B, T], outputs [B, T, K]) -> float32[B, T]``
      unreduced per-step losses; the trainer weights them by
      ``label_weight``.
    metrics_fn: ``() -> [keras.metrics.Metric]``, fresh metric objects,
      updated with ``(labels, outputs [N, K], sample_weight [N])`` over the
      N = B * T steps of a batch; labels are int [N] for classification and
      float32 [N, 1] for regression.
    clip_global_norm: gradient clipping norm, or None.
  """
  spec: ms.ModelSpec
  loss_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
  metrics_fn: Callable[[], List[keras.metrics.Metric]]
  clip_global_norm: Optional[float]

  def per_step_loss(self, labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    values = self.loss_fn(labels, outputs)
    if values.shape.rank != 2:
      raise ObjectiveError(
          'the loss must return unreduced per-step values [B, T]; got shape '
          f'{values.shape}. Return a Keras loss *function* or a Loss object '
          '(its unreduced .call is used).')
    return tf.cast(values, tf.float32)

  def new_metrics(self) -> List[keras.metrics.Metric]:
    """``[loss, *task metrics]``; the first is the weighted mean loss."""
    return [keras.metrics.Mean(name='loss')] + list(self.metrics_fn())


def make_objective(spec: ms.ModelSpec, module: Any = None) -> Objective:
  """The objective of ``spec``'s task, with the module's optional hooks.

  A module may define ``loss(spec)`` returning a Keras loss function or a
  ``keras.losses.Loss`` (applied unreduced, to [B, T] labels and [B, T, K]
  outputs), and ``metrics(spec)`` returning a list of Keras metrics.
  """
  loss_fn = _default_loss(spec)
  if spec.label_spread is not None:
    # Standardised labels: the loss in standardised units (outputs are in
    # label units after LabelUnits), so its scale does not depend on the
    # label's; the metrics stay in label units.
    raw_loss, factor = loss_fn, 1.0 / float(spec.label_spread) ** 2
    loss_fn = lambda labels, outputs: raw_loss(labels, outputs) * factor
  hooks = module_contract.hooks_of(module)
  if hooks.loss is not None:
    user = hooks.loss(spec)
    loss_fn = user.call if isinstance(user, keras.losses.Loss) else user
  metrics_fn = lambda: _default_metrics(spec)
  if hooks.metrics is not None:
    metrics_fn = lambda: list(hooks.metrics(spec))
  clip = spec.hparam('clip_global_norm', DEFAULT_CLIP_GLOBAL_NORM)
  return Objective(spec=spec, loss_fn=loss_fn, metrics_fn=metrics_fn,
                   clip_global_norm=float(clip) if clip else None)


def weighted_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  """``sum(w * v) / sum(w)``; 0 when no step is weighted."""
  return tf.math.divide_no_nan(tf.reduce_sum(values * weights),
                               tf.reduce_sum(weights))


def update_metrics(metrics: List[keras.metrics.Metric],
                   objective: Objective, batch: Batch, outputs: tf.Tensor,
                   per_step_loss: tf.Tensor) -> None:
  """Updates ``[loss, *metrics]`` with one batch, weighted by label_weight."""
  weights = tf.reshape(batch['label_weight'], [-1])
  metrics[0].update_state(tf.reshape(per_step_loss, [-1]),
                          sample_weight=weights)
  labels = tf.reshape(batch['labels'], [-1])
  k = outputs.shape[-1]
  preds = tf.reshape(outputs, [-1, k])
  if objective.spec.task == ms.REGRESSION:
    labels = tf.cast(labels, tf.float32)[:, None]  # [N, 1] vs preds [N, K].
  for metric in metrics[1:]:
    metric.update_state(labels, preds, sample_weight=weights)


def metric_results(metrics: List[keras.metrics.Metric]) -> Dict[str, float]:
  return {m.name: float(m.result()) for m in metrics}


def reset_metrics(metrics: List[keras.metrics.Metric]) -> None:
  for m in metrics:
    m.reset_state()
