"""The models an evaluation compares: loading them stateful, and checking
that they fit the eval batches and each other, and ``json_safe`` for the
documents. TensorFlow, no TFX.

Owns ``load_model`` (the trained model rebuilt stateful for the eval
batches' lane count, ``model_io.load_stateful_model``), the fit checks of a
candidate against the batches and of a baseline against the candidate, and
``EvaluationError``, the one error type of the evaluator's core.
"""

from __future__ import annotations

import dataclasses
import os
import math
from typing import Any, Mapping

from components.stateful import model_io
from components.stateful import model_spec as ms


class EvaluationError(ValueError):
  """The model, the baseline and the batches do not fit together."""


@dataclasses.dataclass
class LoadedModel:
  """A trained model rebuilt stateful for the eval batches.

  Attributes:
    uri: the Model artifact URI.
    model: the stateful Keras model, ``features float32[B, T, F] ->
      float32[B, T, K]``.
    spec: its ``ModelSpec`` (with the eval batch size and T).
    module: the model module stored with it (for the optional loss hook).
  """
  uri: str
  model: Any
  spec: ms.ModelSpec
  module: Any


def load_model(model_uri: str, meta: Mapping[str, Any]) -> LoadedModel:
  """Rebuilds ``model_uri`` stateful for the batch size and T of ``meta``."""
  model, spec = model_io.load_stateful_model(
      model_uri, batch_size=int(meta['batch_size']),
      num_unroll=int(meta['num_unroll']))
  module = model_io.load_module_file(
      os.path.join(model_uri, model_io.STATEFUL_DIR, model_io.MODULE_FILE))
  check_model_fits_batches(spec, meta, what=f'model {model_uri}')
  return LoadedModel(uri=model_uri, model=model, spec=spec, module=module)


def check_model_fits_batches(spec: ms.ModelSpec, meta: Mapping[str, Any],
                             what: str = 'model') -> None:
  """Raises ``EvaluationError`` unless ``spec`` reads these batches."""
  names = list(meta['feature_names'])
  if list(spec.feature_names) != names:
    raise EvaluationError(
        f'{what} was trained on features {list(spec.feature_names)}; the '
        f'eval batches have {names}')
  if spec.label_kind != meta['label_kind']:
    raise EvaluationError(
        f'{what} was trained on {spec.label_kind} labels; the eval batches '
        f'have {meta["label_kind"]} labels')
  if spec.task == ms.CLASSIFICATION and meta.get('label_dtype') != 'int64':
    raise EvaluationError(
        f'{what} is a classifier; the eval batches have '
        f'{meta.get("label_dtype")} labels (class ids must be integers)')


def check_baseline(candidate: ms.ModelSpec, baseline: ms.ModelSpec) -> None:
  """Raises ``EvaluationError`` when the two models' metrics are not
  comparable (different task or output)."""
  if (candidate.task, candidate.output_units) != (baseline.task,
                                                  baseline.output_units):
    raise EvaluationError(
        f'the baseline model is a {baseline.task} model with '
        f'{baseline.output_units} outputs; the candidate is a {candidate.task} '
        f'model with {candidate.output_units}: their metrics cannot be '
        'compared')


def json_safe(value: Any) -> Any:
  """Non-finite floats -> their names, tuples -> lists, numpy scalars ->
  Python."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if hasattr(value, 'item') and callable(value.item) and not isinstance(
      value, (str, bytes)):
    try:
      value = value.item()
    except (ValueError, TypeError):
      pass
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # 'nan', 'inf', '-inf': JSON has no such numbers.
  return value
