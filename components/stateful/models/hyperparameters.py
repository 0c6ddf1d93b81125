"""The default model module's hyperparameters, by name, for ``--help`` and
the ``--hyperparameters`` flag (plain Python: importing it loads no
TensorFlow). ``default_model.py`` reads them; a test holds the defaults
here equal to its constants.

Each entry: (name, default shown, meaning).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

DEFAULT_MODEL: List[Tuple[str, str, str]] = [
    ('model', 'conv', "'conv', 'lstm', 'gru' or 'lru'"),
    ('head', 'ridge', "conv: 'ridge' (closed form, then fine-tuned) or 'sgd'"),
    ('kernels', '448', 'conv: random kernels in all'),
    ('kernels_per_dilation', 'from kernels', 'conv: overrides kernels'),
    ('kernel_size', '9', 'conv: taps per kernel'),
    ('max_dilation', 'from the median length, <= 64', 'conv'),
    ('thresholds_per_kernel', '4 (per-step labels: 1)', 'conv: PPV features '
     'per kernel'),
    ('half_lives', '[8, 32, 128, 512]', 'conv, per-step labels: decaying pools'),
    ('lags', '16', 'conv, per-step labels: lagged inputs'),
    ('l2', '0.01', "conv, head='sgd'"),
    ('units', '32', 'lstm/gru: an int or a list (stacked); lru: an int'),
    ('dropout', '0', 'lstm/gru/lru'),
    ('head_units', 'none', 'lstm/gru: a hidden Dense layer'),
    ('state_size', '64', 'lru: complex state dimensions'),
    ('blocks', '2', 'lru: residual blocks'),
    ('first_norm', 'false', "lru: a layer norm before the first block's "
     'recurrence too'),
    ('zero_head', 'false', 'lru: the head starts at zero (the class prior '
     'or the mean label), not Glorot'),
    ('r_min', '0.9', 'lru: smallest initial eigenvalue modulus'),
    ('r_max', '0.999', 'lru: largest initial eigenvalue modulus'),
    ('max_phase', '6.283', 'lru: largest initial eigenvalue phase'),
    ('optimizer', "adam (conv head: sgd)", 'adam, sgd, rmsprop, adagrad'),
    ('learning_rate', '0.003 (conv head: 0.001)', 'the trainer reads it'),
    ('lr_schedule', 'cosine', 'constant or cosine'),
    ('clip_global_norm', '1.0', '0: no clipping'),
    ('weight_decay', '0', 'decoupled (AdamW-style) decay of the weight '
     'matrices'),
]


class HyperparametersError(ValueError):
  """The ``--hyperparameters`` text cannot be read."""


def _split(text: str) -> List[str]:
  """``a=1,b=[2,3]`` -> ``['a=1', 'b=[2,3]']`` (commas inside brackets or
  quotes stay)."""
  parts, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(text):
    if quote:
      quote = None if ch == quote else quote
    elif ch in '"\'':
      quote = ch
    elif ch in '[{(':
      depth += 1
    elif ch in ']})':
      depth -= 1
    elif ch == ',' and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  return [p.strip() for p in parts if p.strip()]


def parse(text: str) -> Dict[str, Any]:
  """A JSON object, or ``key=value,...`` where each value is read as JSON
  when it is JSON (``units=[64,64]``, ``dropout=0.1``, ``refit=true``) and
  as a string otherwise (``model=lstm``)."""
  text = (text or '').strip()
  if not text:
    return {}
  if text.startswith('{'):
    try:
      value = json.loads(text)
    except json.JSONDecodeError as e:
      raise HyperparametersError(
          f'--hyperparameters: not a JSON object: {e}') from None
    if not isinstance(value, dict):
      raise HyperparametersError('--hyperparameters: not a JSON object')
    return value
  out: Dict[str, Any] = {}
  for part in _split(text):
    key, sep, raw = part.partition('=')
    key = key.strip()
    if not sep or not key:
      raise HyperparametersError(
          f'--hyperparameters: {part!r} is not key=value (use a JSON object '
          'or key=value,key=value)')
    raw = raw.strip()
    try:
      out[key] = json.loads(raw)
    except json.JSONDecodeError:
      out[key] = raw
  return out


def help_text() -> str:
  rows = '; '.join(f'{n} ({d}: {m})' for n, d, m in DEFAULT_MODEL)
  return ('hyperparameters passed to the model module as '
          'spec.hyperparameters, as a JSON object or key=value,... '
          '(e.g. model=lstm,units=[64,64]); the default module reads: '
          + rows)
