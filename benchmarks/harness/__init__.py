"""The benchmark harness every script in ``benchmarks/`` uses: ``report``
(shared options, run bookkeeping, results JSON, sections written from
blocks, tables), ``child`` (child processes, peak RSS, measurements in a
fresh process), ``data`` (the inputs), ``pipeline_runs`` (the local runner
in a child) and ``steps`` (compiled steps, fits and trainer runs as the
trainer does them), whose names are re-exported here; ``recorded`` (runs of
this checkout and a baseline tree kept in a results JSON) and ``speed`` (an
epoch over held batches, CSV by size, peak RSS) are imported by name."""

# pylint: disable=wildcard-import,unused-wildcard-import
from benchmarks.harness.report import *  # noqa: F401,F403
from benchmarks.harness.child import *  # noqa: F401,F403
from benchmarks.harness.data import *  # noqa: F401,F403
from benchmarks.harness.pipeline_runs import *  # noqa: F401,F403
from benchmarks.harness.steps import *  # noqa: F401,F403
from benchmarks.harness.report import HEADER, ROOT  # noqa: F401
