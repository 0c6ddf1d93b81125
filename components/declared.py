"""Settings declared once: dataclass fields with their default and help.

Plain Python (no TensorFlow, no TFX). A setting is a field of a frozen
dataclass made by ``setting(default, help, ...)`` (or copied from another
declaration by ``same_as``); from these fields come the command-line flags
(``flag_specs``, ``add_flags``, ``values_from_args``), the components'
parameters (``parameter_kind``, ``to_parameter``, ``from_parameter``) and
the configuration reference (``pipeline/config_reference.py``,
docs/configuration.md). The declarations: the trainer's ``TrainConfig``
(``components/stateful_trainer/settings.py``), the evaluator's
``StatefulSettings`` (``components/stateful_evaluator/settings.py``), the
batcher's ``ColumnConfig`` and ``LayoutConfig``
(``components/sequence_batcher/sequences.py``, ``layout.py``) and the
pipeline's ``PipelineConfig`` (``pipeline/pipeline_config.py``).

A field's metadata:

* ``help``: what it means (the flag's help and the reference's text);
* ``choices``: the values allowed (the flag's choices);
* ``flag``: True (``--the-name``), a flag name of its own, or False (no
  flag: set in code or by another flag);
* ``parse``: how the flag's text is read (default: the field's type; a
  tuple of strings is comma-separated);
* ``shown``: the default in words, where the value is not what a user
  should read (a path of this machine, "from the data");
* ``off_flag``: for a bool, one more flag that turns it off (an older name);
* ``more_help``: a function giving more text for ``--help`` only (a long
  table kept beside the code it describes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, Callable, Dict, List, Optional

_NO_DEFAULT = dataclasses.MISSING


def setting(default: Any = _NO_DEFAULT, help_text: str = '', *,
            default_factory: Any = _NO_DEFAULT, choices=None,
            flag: Any = True, parse: Optional[Callable[[str], Any]] = None,
            shown: Optional[str] = None, off_flag: Optional[str] = None,
            more_help: Optional[Callable[[], str]] = None,
            **metadata) -> Any:
  """A dataclass field declaring one setting (see the module docstring);
  further ``metadata`` (e.g. the trainer's ``fingerprint``) is kept."""
  metadata = {'help': help_text, 'choices': choices, 'flag': flag,
              'parse': parse, 'shown': shown, 'off_flag': off_flag,
              'more_help': more_help, **metadata}
  if default_factory is not _NO_DEFAULT:
    return dataclasses.field(default_factory=default_factory,
                             metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def field_of(cls: type, name: str) -> dataclasses.Field:
  for field in dataclasses.fields(cls):
    if field.name == name:
      return field
  raise KeyError(f'{cls.__name__} has no setting {name!r}')


def same_as(cls: type, name: str, **changes) -> Any:
  """A field declared like ``cls``'s field ``name`` (its default and
  metadata), with ``changes`` (``default``, ``help_text``, ``flag``, ...)
  applied: a setting one component declares, taken over by another."""
  field = field_of(cls, name)
  metadata = dict(field.metadata)
  if 'help_text' in changes:
    metadata['help'] = changes.pop('help_text')
  default = changes.pop('default', field.default)
  metadata.update(changes)
  return setting(default, **{'help_text': metadata.pop('help'), **metadata})


@dataclasses.dataclass(frozen=True)
class FlagSpec:
  """One command-line flag of a declared field."""
  name: str           # the field
  flag: str           # --like-this
  kind: type          # int, float, str, bool, tuple or dict
  default: Any
  help: str
  choices: Optional[tuple]
  parse: Optional[Callable[[str], Any]] = None
  shown: Optional[str] = None
  off_flag: Optional[str] = None
  more_help: Optional[Callable[[], str]] = None


def kind_of(field: dataclasses.Field) -> type:
  """int, float, str, bool, tuple or dict, from the field's annotation."""
  text = str(field.type)
  for kind, names in ((dict, ('Dict', 'dict')), (tuple, ('Tuple', 'tuple')),
                      (bool, ('bool',)), (int, ('int',)),
                      (float, ('float',)), (str, ('str',))):
    if any(name in text for name in names):
      return kind
  raise TypeError(f'{field.name}: unsupported setting type {text}')


def may_be_none(field: dataclasses.Field) -> bool:
  """The field's type is ``Optional[...]``: None is one of its values."""
  return str(field.type).startswith(('Optional[', 'typing.Optional['))


# A component parameter is a primitive that Kubeflow V2 carries: a bool is
# an int (0/1), a tuple (a JSON list) and a dict (a JSON object) are text.
def parameter_kind(field: dataclasses.Field) -> type:
  """int, float or str: the type of the field's component parameter."""
  kind = kind_of(field)
  if kind is bool:
    return int
  return str if kind in (tuple, dict) else kind


def to_parameter(field: dataclasses.Field, value: Any) -> Any:
  """A value of the field as its component parameter (None stays None)."""
  if value is None:
    return None
  kind = kind_of(field)
  if kind is bool:
    return int(bool(value))
  if kind is tuple:
    return json.dumps(list(value))
  if kind is dict:
    return json.dumps(value)
  return value


def from_parameter(field: dataclasses.Field, value: Any) -> Any:
  """The inverse of ``to_parameter`` (None stays None)."""
  if value is None:
    return None
  kind = kind_of(field)
  if kind is bool:
    return bool(int(value))
  if kind is tuple:
    return tuple(json.loads(value))
  if kind is dict:
    return json.loads(value)
  return kind(value)


def default_of(field: dataclasses.Field) -> Any:
  if field.default_factory is not dataclasses.MISSING:
    return field.default_factory()
  return field.default


def flag_name(field: dataclasses.Field) -> Optional[str]:
  """The field's flag, or None when it has none."""
  flag = field.metadata.get('flag')
  if not flag:
    return None
  return flag if isinstance(flag, str) else '--' + field.name.replace('_',
                                                                      '-')


def flag_specs(cls: type) -> List[FlagSpec]:
  """The flags of ``cls``'s fields that have one, in declaration order."""
  out = []
  for field in dataclasses.fields(cls):
    flag = flag_name(field)
    if flag is None:
      continue
    meta = field.metadata
    out.append(FlagSpec(
        name=field.name, flag=flag, kind=kind_of(field),
        default=default_of(field), help=meta['help'],
        choices=meta.get('choices'), parse=meta.get('parse'),
        shown=meta.get('shown'), off_flag=meta.get('off_flag'),
        more_help=meta.get('more_help')))
  return out


def describe(default: Any) -> str:
  """A default as ``--help`` and the reference show it."""
  if default is None:
    return 'unset'
  if isinstance(default, bool):
    return 'on' if default else 'off'
  if isinstance(default, tuple):
    return ','.join(default) if default else 'none'
  if isinstance(default, dict):
    return '{}' if not default else str(default)
  return str(default)


def comma_separated(text: str) -> tuple:
  """A flag's comma-separated list (blanks dropped)."""
  return tuple(c.strip() for c in text.split(',') if c.strip())


def positive_int(text: str) -> int:
  """A flag's integer >= 1."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'not an integer: {text!r}') from None
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
  return value


def add_flags(parser, cls: type, *, dest_prefix: str = '',
              defaults: Any = None) -> None:
  """One flag per flagged field of ``cls`` on ``parser`` (a parser or an
  argument group), with the field's help and default (or ``defaults``'
  value of it); ``dest_prefix`` (e.g. ``trainer.``) keeps the namespaces of
  several declarations apart."""
  for spec in flag_specs(cls):
    default = (spec.default if defaults is None else
               getattr(defaults, spec.name))
    dest = dest_prefix + spec.name
    text = spec.help.replace('%', '%%')
    if spec.more_help is not None:
      text = f'{text}; {spec.more_help().replace("%", "%%")}'
    if spec.kind is bool:  # The action appends "(default: ...)" itself.
      parser.add_argument(spec.flag, dest=dest,
                          action=argparse.BooleanOptionalAction,
                          default=default, help=text)
      if spec.off_flag:
        parser.add_argument(spec.off_flag, dest=dest, action='store_false',
                            help=f'the same as --no-{spec.flag[2:]}')
      continue
    shown = spec.shown if spec.shown is not None else describe(default)
    parse = spec.parse or (comma_separated if spec.kind is tuple else
                           spec.kind)
    shown = shown.replace('%', '%%')
    parser.add_argument(spec.flag, dest=dest, type=parse, default=default,
                        choices=spec.choices, help=f'{text} (default: {shown})',
                        metavar=(None if spec.choices else
                                 spec.flag[2:].upper().replace('-', '_')))


def values_from_args(args: argparse.Namespace, cls: type, *,
                     dest_prefix: str = '') -> Dict[str, Any]:
  """The values of ``cls``'s flagged fields in parsed ``args``."""
  return {spec.name: getattr(args, dest_prefix + spec.name)
          for spec in flag_specs(cls)}
