"""``ModelSpec``: what a user module's ``build_model(spec)`` is told.

Plain Python (no TensorFlow, no TFX), so the evaluator, the pipeline and
tests can read and write it cheaply. ``spec.json`` in an exported model's
``stateful/`` folder is ``ModelSpec.to_json()``.

The contract of ``build_model(spec)`` (see ``default_model.py`` for an
example):

* It returns a Keras 2 model (``tf_keras``; under TFX 1.16 with TF 2.16
  ``tf.keras`` may be Keras 3, so modules should ``import tf_keras as keras``).
* Input: one tensor ``features`` float32[B, T, F] with
  ``B = spec.batch_size`` and ``T = spec.num_unroll`` (both None in the
  serving twin, i.e. when ``spec.stateful`` is False), ``F =
  spec.num_features``, in the order of ``spec.feature_names``.
* Output: per-step predictions, float32[B, T, K]:
  ``K = num_classes`` **logits** for ``classification``; ``K = output_size``
  values for ``regression``.
* When ``spec.stateful`` is True every recurrent layer must be a causal,
  ``stateful=True`` Keras RNN layer (LSTM, GRU, SimpleRNN or ``RNN`` with any
  cell, stacked allowed; no ``Bidirectional``, no ``go_backwards``). When it
  is False the same architecture must be built with ``stateful=False`` (the
  weights are copied over, so the two must have the same weights in the same
  order).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Dict, Mapping, Optional, Tuple

CLASSIFICATION = 'classification'
REGRESSION = 'regression'
TASKS = (CLASSIFICATION, REGRESSION)

PER_SEQUENCE = 'per_sequence'
PER_STEP = 'per_step'
LABEL_KINDS = (PER_SEQUENCE, PER_STEP)

SPEC_VERSION = 1


class ModelSpecError(ValueError):
  """A ModelSpec (or the settings it is built from) is invalid."""


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The shapes and task a model is built for. Frozen; validated when built.

  Attributes:
    batch_size: B, the fixed lane count of a stateful model; None for the
      serving twin (any batch size).
    num_unroll: T, steps per call of a stateful model; None for the serving
      twin (any length).
    stateful: True for training and evaluation (state carried across calls
      in the layers' state variables), False for the full-sequence serving
      twin.
    feature_names: names of the F features, in tensor order.
    label_kind: ``per_sequence`` (one label per sequence, scored on its last
      step) or ``per_step`` (a label on every step).
    task: ``classification`` or ``regression``.
    num_classes: number of classes (>= 2) for classification, else None.
    output_size: values per step for regression (>= 1), else None.
    hyperparameters: free-form settings for the module (units, dropout,
      learning_rate, ...), from ``custom_config['hyperparameters']`` and/or a
      ``HyperParameters`` artifact. JSON-serialisable.
    seed: the run's seed (random initialisers of the module).
    typical_length: the median length of the training sequences (from the
      batches' metadata), for modules that size a receptive field to the
      data; None when unknown.
  """
  batch_size: Optional[int]
  num_unroll: Optional[int]
  stateful: bool
  feature_names: Tuple[str, ...]
  label_kind: str = PER_SEQUENCE
  task: str = CLASSIFICATION
  num_classes: Optional[int] = None
  output_size: Optional[int] = None
  hyperparameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  seed: int = 0
  typical_length: Optional[int] = None
  # Regression with standardised labels (``TrainConfig.standardize_labels``):
  # the train split's label mean and standard deviation. The module's model
  # then predicts in standardised units and ``model_io`` appends the fixed
  # map back to label units (``LabelUnits``).
  label_center: Optional[float] = None
  label_spread: Optional[float] = None

  def __post_init__(self):
    # Normalise containers so that specs compare and hash sensibly.
    object.__setattr__(self, 'feature_names',
                       tuple(str(n) for n in self.feature_names))
    object.__setattr__(self, 'hyperparameters',
                       dict(self.hyperparameters or {}))
    if not self.feature_names:
      raise ModelSpecError('feature_names is empty: a model needs at least '
                           'one feature')
    if len(set(self.feature_names)) != len(self.feature_names):
      raise ModelSpecError(f'feature_names has duplicates: '
                           f'{list(self.feature_names)}')
    if not isinstance(self.stateful, bool):
      raise ModelSpecError(f'stateful must be a bool, got {self.stateful!r}')
    for name in ('batch_size', 'num_unroll'):
      value = getattr(self, name)
      if value is None:
        if self.stateful and name == 'batch_size':
          raise ModelSpecError('a stateful spec needs a batch_size')
        continue
      if not _is_int(value) or value < 1:
        raise ModelSpecError(f'{name} must be a positive int or None, got '
                             f'{value!r}')
    if self.label_kind not in LABEL_KINDS:
      raise ModelSpecError(f'label_kind must be one of {LABEL_KINDS}, got '
                           f'{self.label_kind!r}')
    if self.task not in TASKS:
      raise ModelSpecError(f'task must be one of {TASKS}, got {self.task!r}')
    if self.task == CLASSIFICATION:
      if not _is_int(self.num_classes) or self.num_classes < 2:
        raise ModelSpecError('classification needs num_classes >= 2, got '
                             f'{self.num_classes!r}')
      if self.output_size is not None:
        raise ModelSpecError('output_size is for regression; classification '
                             'uses num_classes')
    else:
      if not _is_int(self.output_size) or self.output_size < 1:
        raise ModelSpecError('regression needs output_size >= 1, got '
                             f'{self.output_size!r}')
      if self.num_classes is not None:
        raise ModelSpecError('num_classes is for classification; regression '
                             'uses output_size')
    if self.typical_length is not None and (
        not _is_int(self.typical_length) or self.typical_length < 1):
      raise ModelSpecError(f'typical_length must be a positive int or None, '
                           f'got {self.typical_length!r}')
    if (self.label_center is None) != (self.label_spread is None):
      raise ModelSpecError('label_center and label_spread are set together')
    if self.label_spread is not None:
      if self.task != REGRESSION:
        raise ModelSpecError('label_center/label_spread are for regression')
      if not (math.isfinite(float(self.label_spread)) and
              float(self.label_spread) > 0 and
              math.isfinite(float(self.label_center))):
        raise ModelSpecError(
            f'label_spread must be a positive number and label_center '
            f'finite, got {self.label_spread!r} and {self.label_center!r}')
    if not _is_int(self.seed) or self.seed < 0:
      raise ModelSpecError(f'seed must be a non-negative int, got '
                           f'{self.seed!r}')
    try:
      json.dumps(self.hyperparameters)
    except TypeError as e:
      raise ModelSpecError(f'hyperparameters must be JSON-serialisable: {e}'
                          ) from None

  @property
  def num_features(self) -> int:
    """F, the number of input features."""
    return len(self.feature_names)

  @property
  def output_units(self) -> int:
    """K, the size of the model's per-step output."""
    return (self.num_classes if self.task == CLASSIFICATION else
            self.output_size)

  def replace(self, **changes) -> 'ModelSpec':
    """A copy with some fields changed (validated again)."""
    return dataclasses.replace(self, **changes)

  def serving(self) -> 'ModelSpec':
    """The full-sequence serving twin: not stateful, any batch and length."""
    return self.replace(stateful=False, batch_size=None, num_unroll=None)

  def hparam(self, name: str, default: Any = None) -> Any:
    """``hyperparameters[name]``, or ``default`` when unset."""
    return self.hyperparameters.get(name, default)

  def to_dict(self) -> Dict[str, Any]:
    out = dataclasses.asdict(self)
    out['feature_names'] = list(self.feature_names)
    out['hyperparameters'] = dict(self.hyperparameters)
    out['num_features'] = self.num_features
    out['spec_version'] = SPEC_VERSION
    return out

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=1, sort_keys=True) + '\n'

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> 'ModelSpec':
    version = data.get('spec_version', SPEC_VERSION)
    if version != SPEC_VERSION:
      raise ModelSpecError(f'spec_version {version} is not supported (this '
                           f'code reads {SPEC_VERSION})')
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    if 'num_features' in data and len(data['feature_names']) != int(
        data['num_features']):
      raise ModelSpecError(f'num_features {data["num_features"]} != '
                           f'{len(data["feature_names"])} feature names')
    return cls(**kwargs)

  @classmethod
  def from_json(cls, text: str) -> 'ModelSpec':
    return cls.from_dict(json.loads(text))
