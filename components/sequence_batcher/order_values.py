"""Order-column values -> exact sort keys. Plain Python and NumPy.

The order column orders the rows of a sequence, and two rows with the same
order value are an error, so its values must keep their exact order and
distinctness from the user's file to the sort: never through float32 (whose
spacing near Unix seconds, 1.7e9, is 128 s) nor float64 (nanosecond
timestamps need 61 bits). The pipeline's ExampleGen and every CSV reader of
the batcher therefore keep the order column as text, and this module turns
one sequence's values into sort keys.

The rule (docs/input.md): the order values of a sequence are either

* all numbers: integers of any size (``17``, ``1700000000123456789``) or
  decimals (``1700000000.25``, ``1.7e9``), compared exactly as decimal
  numbers (``1.50`` equals ``1.5``); NaN and infinity are refused; or
* all ISO-8601 date-times: ``YYYY-MM-DD``, optionally followed by ``T`` or a
  space, ``HH:MM``, ``:SS`` and a fraction of up to 9 digits, optionally
  followed by a zone (``Z``, ``+HH:MM``, ``+HHMM`` or ``+HH``). A date-time
  without a zone is read as UTC. They are compared as nanoseconds since
  1970-01-01T00:00:00Z.

Anything else (``two``, a number mixed with a date-time in one sequence) is
an error naming the value. Numeric arrays (from ``tf.Example`` or
``SequenceExample`` int64/float features a user wrote) are used as they are.
The model never sees an order value.
"""

from __future__ import annotations

import calendar
import decimal
import re
from typing import Optional, Tuple

import numpy as np

_ISO = re.compile(
    r'(\d{4})-(\d{2})-(\d{2})'
    r'(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?'
    r'(Z|[+-]\d{2}(?::?\d{2})?)?$')
_INT = re.compile(r'[+-]?\d+$')


class OrderValueError(ValueError):
  """An order value that is neither a number nor an ISO-8601 date-time (or a
  sequence that mixes the two); ``index`` is its row in the input array."""

  def __init__(self, message: str, index: int):
    super().__init__(message)
    self.index = index


def _text(value) -> str:
  if isinstance(value, bytes):
    try:
      return value.decode('utf-8').strip()
    except UnicodeDecodeError:
      return repr(value)
  return str(value).strip()


def iso_nanoseconds(text: str) -> Optional[int]:
  """Nanoseconds since the Unix epoch of an ISO-8601 date-time (no zone:
  UTC), or None when ``text`` is not one."""
  m = _ISO.match(text)
  if not m:
    return None
  year, month, day, hour, minute, second, fraction, zone = m.groups()
  try:
    seconds = calendar.timegm((int(year), int(month), int(day),
                               int(hour or 0), int(minute or 0),
                               int(second or 0), 0, 0, 0))
  except (ValueError, OverflowError):
    return None
  if not (1 <= int(month) <= 12 and 1 <= int(day) <= calendar.monthrange(
      int(year), int(month))[1] and int(hour or 0) < 24 and
          int(minute or 0) < 60 and int(second or 0) < 61):
    return None
  if zone and zone != 'Z':
    sign = -1 if zone[0] == '-' else 1
    digits = zone[1:].replace(':', '')
    offset = int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60
    seconds -= sign * offset
  nanos = int((fraction or '').ljust(9, '0'))
  return seconds * 1_000_000_000 + nanos


def _number(text: str):
  """An exact number (``int`` or ``Decimal``) or None."""
  if _INT.match(text):
    return int(text)
  try:
    value = decimal.Decimal(text)
  except decimal.InvalidOperation:
    return None
  if not value.is_finite():
    return None
  return value


def sort_keys(values: np.ndarray) -> Tuple[np.ndarray, str]:
  """One sequence's order values -> ``(keys, kind)``.

  ``keys`` sort and compare exactly as the values do (int64 where every key
  fits, else Python ``int``/``Decimal`` objects); ``kind`` is ``number`` or
  ``date-time``. Raises ``OrderValueError`` for a value that is neither, or
  for numbers and date-times mixed.
  """
  if values.dtype != object:
    if values.dtype.kind == 'f' and not np.isfinite(values).all():
      i = int(np.argmax(~np.isfinite(values)))
      raise OrderValueError(f'the order value {values[i]!r} is not finite '
                            '(NaN or infinity)', i)
    return values, 'number'
  texts = [_text(v) for v in values]
  try:  # The common case: integers within int64, parsed in one call.
    return np.array(texts, dtype=object).astype(np.int64), 'number'
  except (ValueError, OverflowError):
    pass
  keys, kind = [], None
  for i, text in enumerate(texts):
    number = _number(text)
    if number is not None:
      this = 'number'
      key = number
    else:
      key = iso_nanoseconds(text)
      this = 'date-time'
      if key is None:
        raise OrderValueError(
            f'the order value {text!r} is neither a number nor an ISO-8601 '
            'date-time', i)
    if kind is None:
      kind = this
    elif this != kind:
      raise OrderValueError(
          f'the order value {text!r} is a {this}, and earlier values of the '
          f'sequence are {kind}s (one kind per sequence)', i)
    keys.append(key)
  if any(isinstance(k, decimal.Decimal) for k in keys):
    keys = [decimal.Decimal(k) for k in keys]  # Exact, as decimals.
  elif all(-2**63 <= k < 2**63 for k in keys):
    return np.array(keys, dtype=np.int64), kind
  out = np.empty(len(keys), dtype=object)
  out[:] = keys
  return out, kind


def display(values: np.ndarray) -> np.ndarray:
  """The values as the user wrote them, for error messages."""
  if values.dtype != object:
    return values
  out = np.empty(len(values), dtype=object)
  out[:] = [_text(v) for v in values]
  return out
