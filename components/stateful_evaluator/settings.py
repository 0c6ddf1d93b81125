"""``StatefulSettings``: the evaluator's settings that TFMA has no place for.

Plain Python (no TensorFlow, no TFX). The metrics, slices and thresholds are
a ``tfma.EvalConfig`` (``analysis/config.py``); what is special to a stateful,
chunked evaluation is here: the chunked == whole-sequence check and the
no-skill gate. The component takes it as JSON text.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Dict, Mapping, Optional

from components.declared import setting

# What the chunking equivalence check compares with.
AUTO = 'auto'
SIGNATURE = 'signature'
TWIN = 'twin'
REFERENCES = (AUTO, SIGNATURE, TWIN)


class SettingsError(ValueError):
  """An invalid evaluator setting."""


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class StatefulSettings:
  """Frozen; validated when built. Each field's help text is in its
  metadata (``components/declared.py``): the one declaration, from which
  the flags of ``python -m pipeline.local_runner`` and the Kubeflow compiler
  and the configuration reference (docs/configuration.md) come; the
  component takes the whole as one JSON parameter (``to_json``).
  """
  equivalence_tolerance: float = setting(
      1e-4, 'the largest allowed absolute difference between the chunked '
      'stateful outputs and whole-sequence serving; above it the model is '
      'not blessed')
  equivalence_sample_size: int = setting(
      16, 'how many eval sequences the chunked == whole check replays whole '
      '(sequences spanning several segments first, then seeded at random)')
  equivalence_seed: int = setting(0, 'seed of that sample')
  serving_signature: str = setting(
      'serving_default', 'the SavedModel signature the check calls '
      '(features float32[N, L, F] and lengths int[N])')
  equivalence_reference: str = setting(
      AUTO, 'what the check compares with: signature, twin (the '
      "non-stateful twin rebuilt from the model's stateful/ folder) or auto "
      '(the signature unless the SavedModel applies a Transform graph to raw '
      'features, then the twin)', choices=REFERENCES)
  require_skill: bool = setting(
      True, 'the no-skill gate: bless only a model that beats every '
      'no-skill predictor (majority class; training mean; last observed '
      'value) on the primary metric by no_skill_margin (off: a model no '
      'better than them may be blessed; they are still reported)',
      off_flag='--allow-no-skill')
  no_skill_margin: float = setting(
      0.0, "by how much the model must beat the no-skill predictors: "
      "accuracy points for classification (the model's accuracy at least "
      'the no-skill accuracy plus this, and above it), a fraction of the '
      "no-skill MSE for regression (the model's MSE at most (1 - margin) "
      'times it, and below it) (0: strictly better)')
  skill_significance: float = setting(
      0.05, 'the level of the one-sided test that the model beats each '
      'no-skill predictor on the same eval examples (checks/no_skill_gate.py: '
      'the exact sign test on paired correct / incorrect outcomes for '
      'per-sequence classification, else a paired t-test on blocks of '
      'paired scores or squared errors); the gate needs p <= this (1.0: no '
      'test, the margin alone decides)')
  skill_block_steps: int = setting(
      256, "the test's unit: runs of at most this many consecutive labelled "
      'steps of one sequence')
  train_split: str = setting(
      'train', 'the split of the batches the no-skill predictors are fitted '
      'on')
  tfma_in_process_max_examples: int = setting(
      100_000, "TFMA runs in the evaluator's own process "
      '(analysis/in_process.py: the same computations and files, no Beam '
      'pipeline) when the extracts hold at most this many examples and the '
      'eval_config asks for nothing only TFMA\'s Beam pipeline computes '
      '(confidence intervals, query keys, cross slices); larger extracts go '
      "to the component's Beam pipeline (its beam_pipeline_args), where a "
      'distributed runner can share them out (0: always Beam)')

  def __post_init__(self):
    for name in ('equivalence_tolerance', 'no_skill_margin'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or (
          not math.isfinite(value)) or value < 0:
        raise SettingsError(f'{name} must be a finite number >= 0, got '
                            f'{value!r}')
      object.__setattr__(self, name, float(value))
    if not _is_int(self.equivalence_sample_size) or (
        self.equivalence_sample_size < 1):
      raise SettingsError(f'equivalence_sample_size must be an int >= 1, got '
                          f'{self.equivalence_sample_size!r}')
    sig = self.skill_significance
    if isinstance(sig, bool) or not isinstance(sig, (int, float)) or not (
        0.0 < sig <= 1.0):
      raise SettingsError(f'skill_significance must be a number in (0, 1], '
                          f'got {sig!r}')
    object.__setattr__(self, 'skill_significance', float(sig))
    if not _is_int(self.skill_block_steps) or self.skill_block_steps < 1:
      raise SettingsError(f'skill_block_steps must be an int >= 1, got '
                          f'{self.skill_block_steps!r}')
    if not _is_int(self.tfma_in_process_max_examples) or (
        self.tfma_in_process_max_examples < 0):
      raise SettingsError(f'tfma_in_process_max_examples must be an int >= 0, '
                          f'got {self.tfma_in_process_max_examples!r}')
    if not _is_int(self.equivalence_seed) or self.equivalence_seed < 0:
      raise SettingsError(f'equivalence_seed must be an int >= 0, got '
                          f'{self.equivalence_seed!r}')
    for name in ('serving_signature', 'train_split'):
      if not isinstance(getattr(self, name), str) or not getattr(self, name):
        raise SettingsError(f'{name} must be a non-empty string')
    if self.equivalence_reference not in REFERENCES:
      raise SettingsError(f'equivalence_reference must be one of '
                          f'{REFERENCES}, got {self.equivalence_reference!r}')
    if not isinstance(self.require_skill, bool):
      raise SettingsError(f'require_skill must be a bool, got '
                          f'{self.require_skill!r}')

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, data: Optional[Mapping[str, Any]]) -> 'StatefulSettings':
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
      raise SettingsError(f'unknown evaluator settings {unknown}; known: '
                          f'{sorted(known)}')
    return cls(**data)

  @classmethod
  def from_json(cls, text: Optional[str]) -> 'StatefulSettings':
    return cls.from_dict(json.loads(text) if text else None)


def coerce(value: Any) -> StatefulSettings:
  """From the dataclass, its dict, its JSON text or None (defaults)."""
  if isinstance(value, StatefulSettings):
    return value
  if value is None or isinstance(value, Mapping):
    return StatefulSettings.from_dict(value)
  if isinstance(value, str):
    return StatefulSettings.from_json(value)
  raise SettingsError(f'evaluator settings must be StatefulSettings, a dict '
                      f'or JSON text, got {type(value).__name__}')
