"""What the command lines share: strict flags, one-line errors.

Flags left over by a runner's own parser must be Beam's.

``parse_known_args`` hands every flag it does not know to Beam, and Beam
discards the ones it does not know either (with a log line), so a misspelled
flag such as ``--batch_size=16`` would silently do nothing. ``split_args``
parses our flags and checks that every remaining one is a known Beam pipeline
option; anything else is an argparse error (usage line, exit code 2).

Errors: ``one_line_error`` turns an exception (perhaps wrapped by a Beam
runner or TFX) into the one line a user sees: the message of the first
input or module error in its chain (it names the file, sequence key and
row), else its own first line.
"""

from __future__ import annotations

import argparse
import re
from typing import List, Optional, Sequence, Tuple

from components.sequence_batcher import sequences as seqlib

# Beam appends where an error happened, and sometimes a whole traceback.
_BEAM_SUFFIX = re.compile(r"\s*\[while running '[^']*'\]")


class _BadBeamValue(Exception):
  pass


def unknown_beam_args(args: Sequence[str]) -> List[str]:
  """The flags (and stray values) in ``args`` that no Beam pipeline options
  class declares. Abbreviations are not accepted.

  Raises:
    ValueError: a Beam flag with a value Beam rejects (argparse's message).
  """
  # pylint: disable=g-import-not-at-top,protected-access
  from apache_beam.options import pipeline_options

  class Parser(pipeline_options._BeamArgumentParser):

    def error(self, message):
      raise _BadBeamValue(message)

  parser = Parser(allow_abbrev=False, add_help=False)
  seen = set()
  for cls in pipeline_options.PipelineOptions.__subclasses__():
    if str(cls) not in seen:  # A class defined twice adds its flags once.
      seen.add(str(cls))
      cls._add_argparse_args(parser)
  try:
    _, unknown = parser.parse_known_args(list(args))
  except _BadBeamValue as e:
    raise ValueError(f'Beam pipeline option {e}') from None
  return [a for a in unknown if a != '--']


# Runners Beam knows only by their module path; --runner=DaskRunner (or
# dask, any case) means this one.
DASK_RUNNER = 'apache_beam.runners.dask.dask_runner.DaskRunner'
_SHORT_RUNNERS = {'daskrunner': DASK_RUNNER, 'dask': DASK_RUNNER}


def runner_of(beam_args: Sequence[str]) -> str:
  """The ``--runner`` in ``beam_args`` (the last one), or ``DirectRunner``."""
  runner = 'DirectRunner'
  args = list(beam_args)
  for i, arg in enumerate(args):
    if arg.startswith('--runner='):
      runner = arg.split('=', 1)[1]
    elif arg == '--runner' and i + 1 < len(args):
      runner = args[i + 1]
  return runner


def uses_dask(beam_args: Sequence[str]) -> bool:
  """True when ``beam_args`` choose Beam's DaskRunner or set a Dask option."""
  return (runner_of(beam_args) == DASK_RUNNER or
          any(a.startswith('--dask_') for a in beam_args))


def expand_runner(beam_args: Sequence[str]) -> List[str]:
  """``beam_args`` with a short runner name Beam does not map itself
  (``DaskRunner``) replaced by its module path. When Dask is used, Beam's
  Dask runner module is imported so that its options (``--dask_client_address``
  and the rest) are known to ``PipelineOptions`` in this process (otherwise
  Beam discards them as unparseable).

  Raises:
    ValueError: Dask is asked for and ``dask[distributed]`` is not installed.
  """
  out, args = [], list(beam_args)
  i = 0
  while i < len(args):
    arg = args[i]
    if arg.startswith('--runner='):
      name = arg.split('=', 1)[1]
      arg = '--runner=' + _SHORT_RUNNERS.get(name.lower(), name)
    elif arg == '--runner' and i + 1 < len(args):
      name = args[i + 1]
      out += [arg, _SHORT_RUNNERS.get(name.lower(), name)]
      i += 2
      continue
    out.append(arg)
    i += 1
  if uses_dask(out):
    try:
      import apache_beam.runners.dask.dask_runner  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:
      raise ValueError(f'--runner={runner_of(out)}: Beam\'s Dask runner '
                       f'cannot be imported ({e}); install '
                       '"dask[distributed]"') from None
  return out


def close_runner_client(result) -> None:
  """Closes the Dask client a DaskRunner result holds (Beam leaves it open,
  and it would keep reconnecting to a scheduler that has gone)."""
  client = getattr(result, 'client', None)
  if client is not None and hasattr(client, 'close'):
    client.close()


def split_args(parser: argparse.ArgumentParser,
               argv: Optional[Sequence[str]] = None
              ) -> Tuple[argparse.Namespace, List[str]]:
  """``(our args, Beam args)``; exits with code 2 (``parser.error``) naming
  any flag that is neither ours nor a known Beam pipeline option. Short
  runner names Beam does not know (``--runner=DaskRunner``) are expanded
  (``expand_runner``)."""
  args, rest = parser.parse_known_args(argv)
  try:
    rest = expand_runner(rest)
  except ValueError as e:
    parser.error(str(e))
  try:
    unknown = unknown_beam_args(rest)
  except ValueError as e:
    parser.error(str(e))
  if unknown:
    parser.error(f'unrecognized arguments: {" ".join(unknown)} (neither a '
                 'flag of this command, see --help, nor a Beam pipeline '
                 'option)')
  return args, rest


def exception_chain(exc: BaseException) -> List[BaseException]:
  """``exc`` and the exceptions it was raised from or during, in order."""
  chain, seen = [], set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    chain.append(exc)
    exc = exc.__cause__ or exc.__context__
  return chain


def one_line_error(exc: BaseException,
                   preferred: Tuple[type, ...] = (seqlib.InputDataError,)
                  ) -> str:
  """One line describing ``exc`` for the user (no traceback).

  The first exception of a ``preferred`` type in the cause chain gives the
  message; else ``exc`` itself. Beam's ``[while running ...]`` notes and
  anything after the first line are dropped.
  """
  chain = exception_chain(exc)
  chosen = next((e for e in chain if isinstance(e, preferred)), None)
  if chosen is None:
    # A worker process's error arrives as text (multi_processing runner).
    for name in (t.__name__ for t in preferred):
      found = re.search(rf'\b{name}: (.+)', str(exc))
      if found:
        return _BEAM_SUFFIX.sub('', found.group(1)).strip()
    chosen = exc
  lines = [l for l in str(chosen).strip().splitlines() if l.strip()]
  text = _BEAM_SUFFIX.sub('', lines[0]).strip() if lines else ''
  if isinstance(chosen, ValueError) or not text:  # Ours say what they are.
    return text or type(chosen).__name__
  # A library error (OSError, DataLossError, ...): its type says what it is.
  name = type(chosen).__name__
  return text if text.startswith(name) else f'{name}: {text}'


def is_user_error(exc: BaseException) -> bool:
  """True for errors about the input, a setting or a file (a ValueError,
  OSError or TensorFlow ``OpError`` such as ``DataLossError`` anywhere in
  the chain, or an input error reported as text by a worker), which the
  command lines report in one line; False for anything else (a bug: its
  traceback is kept)."""
  for e in exception_chain(exc):
    if isinstance(e, (ValueError, OSError)):
      return True
    if any(t.__name__ == 'OpError' for t in type(e).__mro__):
      return True
  return bool(re.search(r'\bInputDataError: ', str(exc)))
