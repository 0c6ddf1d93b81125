"""The configuration reference, generated from the settings' declarations.

  python -m pipeline.config_reference          # rewrites the tables
  python -m pipeline.config_reference --check  # exit 1 if they are stale

Plain Python (no TensorFlow, no TFX). One table per declaration (the
pipeline's ``PipelineConfig``, the trainer's ``TrainConfig``, the
evaluator's ``StatefulSettings``, the batcher's ``ColumnConfig`` and
``LayoutConfig``): each field's name, flag, default and help, as
``components/declared.py`` reads them. The tables sit between two markers
in docs/configuration.md; the text around them is written by hand.
``tests/pipeline/test_config_reference.py`` fails when the committed tables
differ from what the declarations generate, so adding a setting is adding
one field.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import List, Optional, Sequence, Tuple

from components import declared
from components.sequence_batcher import layout
from components.sequence_batcher import sequences as seqlib
from components.stateful_evaluator import settings as evaluator_settings
from components.stateful_trainer import settings as trainer_settings
from pipeline import pipeline_config

DOC = os.path.join(pipeline_config.PROJECT_ROOT, 'docs', 'configuration.md')
BEGIN = ('<!-- The tables below are generated from the declarations by '
         '`python -m pipeline.config_reference`: edit the fields, not '
         'them. -->')
END = '<!-- End of the generated tables. -->'

# (heading, what the flags belong to, the declarations).
SECTIONS: Tuple[Tuple[str, str, Tuple[type, ...]], ...] = (
    ('Pipeline settings',
     '`PipelineConfig` (`pipeline/pipeline_config.py`): flags of '
     '`python -m pipeline.local_runner` and `python -m kubeflow.compile`',
     (pipeline_config.PipelineConfig,)),
    ('Trainer settings',
     '`TrainConfig` (`components/stateful_trainer/settings.py`): '
     "`PipelineConfig.trainer`, the runners' flags and the StatefulTrainer's "
     'component parameters of the same names',
     (trainer_settings.TrainConfig,)),
    ('Evaluator settings',
     '`StatefulSettings` (`components/stateful_evaluator/settings.py`): '
     "`PipelineConfig.evaluator`, the runners' flags and the "
     "StatefulEvaluator's `settings` argument",
     (evaluator_settings.StatefulSettings,)),
    ('Batcher settings',
     '`ColumnConfig` (`components/sequence_batcher/sequences.py`) and '
     '`LayoutConfig` (`layout.py`): flags of `python -m '
     "components.sequence_batcher`, the SequenceBatcher's arguments and "
     'component parameters of the same names; the pipeline takes the '
     "columns and the layout over (above), with the lane multiple from the "
     "trainer's replicas",
     (seqlib.ColumnConfig, layout.LayoutConfig)),
)


def _cell(text: str) -> str:
  """Markdown table text: no pipes, stars or tags read as markup."""
  text = ' '.join(str(text).split())
  for char in ('\\', '|', '*', '<'):
    text = text.replace(char, '\\' + char)
  return text


def _flags(field: dataclasses.Field) -> str:
  flag = declared.flag_name(field)
  if flag is None:
    return '(none)'
  if declared.kind_of(field) is bool:
    names = [flag, '--no-' + flag[2:]]
    if field.metadata.get('off_flag'):
      names.append(field.metadata['off_flag'])
    return ', '.join(f'`{n}`' for n in names)
  return f'`{flag}`'


def _default(field: dataclasses.Field) -> str:
  shown = field.metadata.get('shown')
  if shown is not None:
    return _cell(shown)
  return f'`{declared.describe(declared.default_of(field))}`'


def _help(field: dataclasses.Field) -> str:
  text = field.metadata['help']
  choices = field.metadata.get('choices')
  if choices:
    text += ' [one of: ' + ', '.join(choices) + ']'
  return _cell(text)


def table(classes: Sequence[type]) -> List[str]:
  rows = ['| Setting | Flag | Default | Meaning |', '|---|---|---|---|']
  for cls in classes:
    for field in dataclasses.fields(cls):
      rows.append(f'| `{field.name}` | {_flags(field)} | {_default(field)} '
                  f'| {_help(field)} |')
  return rows


def generated() -> str:
  """The text between the markers."""
  lines = [BEGIN, '']
  for heading, what, classes in SECTIONS:
    lines += [f'## {heading}', '', what + '.', ''] + table(classes) + ['']
  return '\n'.join(lines + [END])


def render(text: str) -> str:
  """``text`` (docs/configuration.md) with its generated part replaced."""
  start, end = text.find(BEGIN), text.find(END)
  if start < 0 or end < start:
    raise ValueError(f'{DOC}: the markers {BEGIN!r} and {END!r} are missing')
  return text[:start] + generated() + text[end + len(END):]


def main(argv: Optional[List[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  with open(DOC) as f:
    text = f.read()
  wanted = render(text)
  if argv == ['--check']:
    if wanted != text:
      print(f'{DOC} is stale: run python -m pipeline.config_reference',
            file=sys.stderr)
      return 1
    return 0
  if argv:
    print('usage: python -m pipeline.config_reference [--check]',
          file=sys.stderr)
    return 2
  if wanted != text:
    with open(DOC, 'w') as f:
      f.write(wanted)
    print(f'wrote {DOC}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
