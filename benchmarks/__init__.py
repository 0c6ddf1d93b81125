"""Benchmarks of tfx-stateful-sequences: one script a section of
BENCHMARKS.md (``make bench``; ``--quick`` for a smoke run), all through
``benchmarks/harness``."""
