#!/usr/bin/env python3
"""Generate synthetic long, variable-length sequences for stateful RNN training.

The output is CSV with one row per time step::

    seq_id,t,f0,f1,...,f{K-1},label

Rows of one sequence share ``seq_id`` and are numbered ``t = 0 .. L-1``.
Sequence lengths are long-tailed (a mixture of short sequences and a clipped
log-normal), so a single dataset contains sequences that fit in one truncated
BPTT segment as well as sequences that span dozens of segments.

Two targets are available:

``cue`` (default)
    Per-sequence binary classification. The label (constant over the
    sequence) is only visible in ``f0`` during the first ``CUE_STEPS`` steps
    (``+1`` for class 1, ``-1`` for class 0, plus small noise). Every later
    value of every feature is a distractor independent of the label. A model
    that drops its recurrent state at a segment boundary therefore cannot beat
    chance after the first segment; a correctly stateful model can.

``forecast``
    Per-step regression. ``f0`` is a noisy signal ``x`` (a sinusoid with a
    per-sequence period/phase/amplitude plus an AR(1) process) and
    ``label[t] = x[t + 1]``. The signal is generated one step beyond the end
    of the sequence, so the last step's label is ``x[L]``.

All randomness comes from ``numpy.random.default_rng(seed)`` with an explicit
seed; the same arguments always produce byte-identical files. Floating-point
values are rounded to 4 decimals inside :func:`generate`, so the in-memory
columns equal what is written to (and read back from) the CSV.

The generator is split by role: ``data/synthetic.py`` (lengths, signals and
``generate``) and ``data/csv_output.py`` (``write_csv``, ``summarize``); this
module is their public face (it exports their API) and the command line.
It depends only on NumPy and can be imported by tests::

    from data.generate import generate, write_csv
    rows = generate(8, seed=0, max_length=60)
    write_csv(rows, tmp_path / "tiny.csv")

Run ``python3 data/generate.py --help`` for the command-line interface.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # Run as a script (python3 data/generate.py):
    # the repository root, where the ``data`` package is, on the path.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data.csv_output import summarize, write_csv  # noqa: E402
from data.synthetic import (  # noqa: E402
    CUE_STEPS,
    TARGETS,
    Columns,
    Lengths,
    generate,
    sample_lengths,
)

__all__ = [
    "CUE_STEPS",
    "TARGETS",
    "Columns",
    "Lengths",
    "generate",
    "sample_lengths",
    "summarize",
    "write_csv",
    "main",
]


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #
def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generate.py",
        description=(
            "Generate synthetic long, variable-length sequences as CSV "
            "(one row per step: seq_id,t,f0..f{K-1},label) for testing "
            "stateful RNN training with truncated BPTT."
        ),
        epilog=(
            "Example: python3 data/generate.py --num-sequences 300 --seed 42 "
            "--num-shards 3 --output data/sample"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--num-sequences", type=int, default=300, help="number of sequences")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help="output .csv file, or a directory receiving part-XXXXX.csv shards",
    )
    parser.add_argument(
        "--num-shards",
        type=int,
        default=1,
        help="number of CSV files (each holds whole sequences); needs a directory --output if > 1",
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="cue",
        help="cue: per-sequence binary label from an early cue; forecast: per-step label x[t+1]",
    )
    parser.add_argument("--num-features", type=int, default=5, help="number of feature columns")
    lengths = Lengths()
    parser.add_argument("--min-length", type=int, default=lengths.min_length, help="minimum sequence length")
    parser.add_argument("--max-length", type=int, default=lengths.max_length, help="maximum sequence length")
    parser.add_argument(
        "--median-length",
        type=float,
        default=lengths.median_length,
        help="median of the log-normal (long) length component",
    )
    parser.add_argument(
        "--short-fraction",
        type=float,
        default=lengths.short_fraction,
        help=f"fraction of short sequences, uniform in [min-length, {lengths.short_max_length}]",
    )
    parser.add_argument(
        "--shuffle-rows",
        action="store_true",
        help="shuffle row order within each file (readers must sort by t)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not print summary statistics")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        rows = generate(
            args.num_sequences,
            seed=args.seed,
            target=args.target,
            min_length=args.min_length,
            max_length=args.max_length,
            median_length=args.median_length,
            short_fraction=args.short_fraction,
            num_features=args.num_features,
        )
        paths = write_csv(
            rows,
            args.output,
            num_shards=args.num_shards,
            shuffle_rows=args.shuffle_rows,
            seed=args.seed,
        )
    except ValueError as err:
        parser.error(str(err))
    if not args.quiet:
        for path in paths:
            print(f"wrote {path}", file=sys.stderr)
        for key, value in summarize(rows).items():
            print(f"{key}: {value}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
