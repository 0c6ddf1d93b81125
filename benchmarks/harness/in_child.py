"""The child process of ``harness.child.call``: ``in_child.py MODULE.NAME
RESULT_JSON ARGS_JSON`` calls ``benchmarks.MODULE.NAME(*ARGS)`` and writes
its result. Run by path with the code under test's checkout on PYTHONPATH;
our ``benchmarks`` package goes before that checkout's (which may be older
or lack the script)."""

import importlib
import json
import os
import sys


def main(function: str, path: str, args: str) -> int:
  here = os.path.dirname(os.path.abspath(__file__))
  sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != here]
  sys.path.append(os.path.dirname(os.path.dirname(here)))
  import benchmarks  # pylint: disable=g-import-not-at-top
  ours = os.path.dirname(here)
  if ours not in benchmarks.__path__:
    benchmarks.__path__.insert(0, ours)
  module, name = function.rsplit('.', 1)
  result = getattr(importlib.import_module(f'benchmarks.{module}'), name)(
      *json.loads(args))
  with open(path, 'w') as f:
    json.dump(result, f)
  return 0


if __name__ == '__main__':
  sys.exit(main(*sys.argv[1:]))
