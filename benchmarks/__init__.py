"""Benchmarks of tfx-stateful-sequences (issue 6); see BENCHMARKS.md.

Each module is one command that measures one table and writes it into
``BENCHMARKS.md`` between its own markers::

  python -m benchmarks.padding            # 1. padding efficiency
  python -m benchmarks.batcher_throughput # 2. SequenceBatcher throughput
  python -m benchmarks.training_speed     # 3. training speed vs Keras fit
  python -m benchmarks.memory_vs_length   # 4. peak memory vs sequence length
  python -m benchmarks.evaluation         # 5. chunked evaluation vs serving

``--quick`` shrinks the sizes (a smoke run of a minute or two) and writes to
a scratch file instead of ``BENCHMARKS.md`` unless ``--output`` is given.
``make bench`` runs them all (``make bench QUICK=1``).
"""
