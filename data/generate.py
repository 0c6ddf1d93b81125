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

The module depends only on NumPy and can be imported by tests::

    from data.generate import generate, write_csv
    rows = generate(8, seed=0, max_length=60)
    write_csv(rows, tmp_path / "tiny.csv")

Run ``python3 data/generate.py --help`` for the command-line interface.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "CUE_STEPS",
    "TARGETS",
    "Columns",
    "generate",
    "sample_lengths",
    "summarize",
    "write_csv",
    "main",
]

Target = Literal["cue", "forecast"]
Columns = dict[str, np.ndarray]
"""Column name -> 1-D array, all of the same length (one entry per row)."""

TARGETS: tuple[str, ...] = ("cue", "forecast")

CUE_STEPS = 3
"""Number of leading steps of a ``cue`` sequence whose ``f0`` carries the label."""

CUE_NOISE = 0.1
"""Standard deviation of the Gaussian noise added to the cue value (+1 / -1)."""

DECIMALS = 4
"""Decimals kept for floating-point columns (in memory and in the CSV)."""

_SHARD_NAME = "part-{:05d}.csv"


# --------------------------------------------------------------------------- #
# Lengths
# --------------------------------------------------------------------------- #
def sample_lengths(
    num_sequences: int,
    rng: np.random.Generator,
    *,
    min_length: int = 10,
    max_length: int = 3000,
    median_length: float = 200.0,
    short_fraction: float = 0.3,
    short_max_length: int = 48,
    length_sigma: float = 1.0,
) -> np.ndarray:
    """Draw long-tailed sequence lengths.

    Exactly ``round(short_fraction * num_sequences)`` sequences (placed at
    random positions) are "short": uniform integers in
    ``[min_length, short_max_length]`` (the upper bound is clamped into
    ``[min_length, max_length]``). The rest are log-normal with median
    ``median_length`` and log-space standard deviation ``length_sigma``,
    rounded and clipped to ``[min_length, max_length]``.

    Returns:
        ``int64`` array of shape ``(num_sequences,)``.
    """
    num_short = int(round(short_fraction * num_sequences))
    is_short = np.zeros(num_sequences, dtype=bool)
    is_short[:num_short] = True
    is_short = rng.permutation(is_short)

    short_hi = min(max(short_max_length, min_length), max_length)
    short = rng.integers(min_length, short_hi, size=num_sequences, endpoint=True)
    long_ = rng.lognormal(math.log(median_length), length_sigma, size=num_sequences)
    long_ = np.clip(np.rint(long_), min_length, max_length).astype(np.int64)
    return np.where(is_short, short, long_).astype(np.int64)


# --------------------------------------------------------------------------- #
# Per-sequence signals
# --------------------------------------------------------------------------- #
def _distractors(length: int, num_features: int, rng: np.random.Generator) -> np.ndarray:
    """Label-independent features ``f1 .. f{num_features-1}``.

    * ``f1``: Gaussian random walk (step std 0.05) starting near 0.
    * ``f2``: sinusoid with random period in [16, 128] steps and random phase,
      plus Gaussian noise (std 0.1).
    * ``f3`` and above: i.i.d. standard Gaussian noise.

    Returns:
        Array of shape ``(length, num_features - 1)``.
    """
    out = np.empty((length, num_features - 1), dtype=np.float64)
    t = np.arange(length, dtype=np.float64)
    for j in range(1, num_features):
        col = j - 1
        if j == 1:
            out[:, col] = np.cumsum(rng.normal(0.0, 0.05, size=length))
        elif j == 2:
            period = rng.uniform(16.0, 128.0)
            phase = rng.uniform(0.0, 2.0 * math.pi)
            out[:, col] = np.sin(2.0 * math.pi * t / period + phase)
            out[:, col] += rng.normal(0.0, 0.1, size=length)
        else:
            out[:, col] = rng.normal(0.0, 1.0, size=length)
    return out


def _cue_signal(length: int, label: int, rng: np.random.Generator) -> np.ndarray:
    """``f0`` for the ``cue`` target.

    Steps ``0 .. CUE_STEPS-1`` hold ``+1`` (label 1) or ``-1`` (label 0) plus
    N(0, CUE_NOISE^2) noise. Later steps are N(0, 1 + CUE_NOISE^2) noise, i.e.
    the same mean and variance as the cue region's marginal, independent of
    the label.
    """
    f0 = rng.normal(0.0, math.sqrt(1.0 + CUE_NOISE**2), size=length)
    n_cue = min(CUE_STEPS, length)
    sign = 1.0 if label == 1 else -1.0
    f0[:n_cue] = sign + rng.normal(0.0, CUE_NOISE, size=n_cue)
    return f0


def _forecast_signal(length: int, rng: np.random.Generator) -> np.ndarray:
    """Noisy signal ``x[0 .. length]`` (``length + 1`` values) for ``forecast``.

    ``x[t] = A * sin(2*pi*t / P + phi) + a[t]`` where ``A ~ U[0.5, 1.5]``,
    ``P ~ U[20, 200]``, ``phi ~ U[0, 2*pi)`` are drawn per sequence and
    ``a[t] = 0.8 * a[t-1] + N(0, 0.2^2)`` is an AR(1) process started from its
    stationary distribution.
    """
    n = length + 1
    amplitude = rng.uniform(0.5, 1.5)
    period = rng.uniform(20.0, 200.0)
    phase = rng.uniform(0.0, 2.0 * math.pi)
    phi, sigma = 0.8, 0.2
    eps = rng.normal(0.0, sigma, size=n)
    ar = np.empty(n, dtype=np.float64)
    ar[0] = eps[0] / math.sqrt(1.0 - phi**2)
    for i in range(1, n):
        ar[i] = phi * ar[i - 1] + eps[i]
    t = np.arange(n, dtype=np.float64)
    return amplitude * np.sin(2.0 * math.pi * t / period + phase) + ar


def _round(values: np.ndarray) -> np.ndarray:
    """Round to ``DECIMALS`` and normalize ``-0.0`` to ``0.0``."""
    return np.round(values, DECIMALS) + 0.0


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #
def generate(
    num_sequences: int,
    *,
    seed: int,
    target: Target = "cue",
    min_length: int = 10,
    max_length: int = 3000,
    median_length: float = 200.0,
    short_fraction: float = 0.3,
    num_features: int = 5,
    short_max_length: int = 48,
    length_sigma: float = 1.0,
) -> Columns:
    """Generate a synthetic dataset as row-aligned columns.

    Args:
        num_sequences: Number of sequences (>= 1).
        seed: Seed for ``numpy.random.default_rng``; the only source of
            randomness.
        target: ``"cue"`` (per-sequence binary label) or ``"forecast"``
            (per-step float label ``x[t+1]``).
        min_length: Minimum sequence length (>= ``CUE_STEPS`` for ``cue``,
            >= 1 for ``forecast``).
        max_length: Maximum sequence length (>= ``min_length``).
        median_length: Median of the log-normal component of the lengths.
        short_fraction: Fraction (in [0, 1]) of short sequences, uniform in
            ``[min_length, short_max_length]``.
        num_features: Number of feature columns ``f0 .. f{n-1}`` (>= 1).
        short_max_length: Upper bound of the short-sequence lengths.
        length_sigma: Log-space standard deviation of the log-normal lengths.

    Returns:
        Columns in CSV order: ``seq_id`` (str), ``t`` (int64),
        ``f0 .. f{n-1}`` (float64, rounded to 4 decimals) and ``label``
        (int64 for ``cue``, float64 for ``forecast``). Rows of each sequence
        are contiguous and ordered by ``t``; sequences are in ``seq_id``
        order. For ``cue`` the labels are balanced (counts differ by at most
        one) and assigned by a random permutation.

    Raises:
        ValueError: On invalid arguments.
    """
    _validate(
        num_sequences=num_sequences,
        target=target,
        min_length=min_length,
        max_length=max_length,
        median_length=median_length,
        short_fraction=short_fraction,
        num_features=num_features,
        length_sigma=length_sigma,
    )
    rng = np.random.default_rng(seed)
    lengths = sample_lengths(
        num_sequences,
        rng,
        min_length=min_length,
        max_length=max_length,
        median_length=median_length,
        short_fraction=short_fraction,
        short_max_length=short_max_length,
        length_sigma=length_sigma,
    )
    seq_labels = rng.permutation(np.arange(num_sequences, dtype=np.int64) % 2)

    total = int(lengths.sum())
    width = max(5, len(str(num_sequences - 1)))
    ids = np.array([f"s{i:0{width}d}" for i in range(num_sequences)])
    features = np.empty((total, num_features), dtype=np.float64)
    labels = np.empty(total, dtype=np.int64 if target == "cue" else np.float64)

    start = 0
    for i, length in enumerate(lengths.tolist()):
        stop = start + length
        if target == "cue":
            features[start:stop, 0] = _cue_signal(length, int(seq_labels[i]), rng)
            labels[start:stop] = seq_labels[i]
        else:
            x = _round(_forecast_signal(length, rng))
            features[start:stop, 0] = x[:-1]
            labels[start:stop] = x[1:]
        features[start:stop, 1:] = _distractors(length, num_features, rng)
        start = stop

    columns: Columns = {
        "seq_id": np.repeat(ids, lengths),
        "t": np.concatenate([np.arange(n, dtype=np.int64) for n in lengths.tolist()]),
    }
    features = _round(features)
    for j in range(num_features):
        columns[f"f{j}"] = features[:, j]
    columns["label"] = labels
    return columns


def write_csv(
    rows: Columns,
    output: str | Path,
    *,
    num_shards: int = 1,
    shuffle_rows: bool = False,
    seed: int = 0,
) -> list[Path]:
    """Write ``rows`` (as returned by :func:`generate`) to CSV.

    Args:
        rows: Row-aligned columns; the key order is the CSV column order and
            must include ``seq_id``.
        output: A ``.csv`` file path (only with ``num_shards == 1``) or a
            directory, which receives ``part-00000.csv``, ``part-00001.csv``,
            ... Parent directories are created.
        num_shards: Number of files. Whole sequences are assigned to shards
            greedily (longest first, to the shard with the fewest rows) so
            shard sizes are balanced; within a shard sequences keep their
            input order.
        shuffle_rows: If true, shuffle the row order within each file, so
            that readers must group by ``seq_id`` and sort by ``t``.
        seed: Seed of the shuffle (``numpy.random.default_rng(seed)``); unused
            when ``shuffle_rows`` is false.

    Returns:
        Paths of the written files, in shard order.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    output = Path(output)
    if output.suffix == ".csv":
        if num_shards != 1:
            raise ValueError("a .csv output path requires num_shards == 1; pass a directory")
        paths = [output]
    else:
        paths = [output / _SHARD_NAME.format(k) for k in range(num_shards)]

    seq_ids = rows["seq_id"]
    _, first_idx, inverse, counts = np.unique(
        seq_ids, return_index=True, return_inverse=True, return_counts=True
    )
    num_seqs = len(counts)
    if num_shards > max(num_seqs, 1):
        raise ValueError(f"num_shards={num_shards} exceeds the number of sequences ({num_seqs})")
    shard_of_seq = _assign_shards(counts, num_shards, order_key=first_idx)
    shard_of_row = shard_of_seq[inverse]

    rng = np.random.default_rng(seed)
    header = ",".join(rows.keys())
    text_columns = [_format_column(col) for col in rows.values()]
    for k, path in enumerate(paths):
        idx = np.flatnonzero(shard_of_row == k)
        if shuffle_rows:
            idx = rng.permutation(idx)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="") as f:
            f.write(header + "\n")
            for i in idx.tolist():
                f.write(",".join(col[i] for col in text_columns))
                f.write("\n")
    return paths


def summarize(rows: Columns) -> dict[str, float | int]:
    """Summary statistics of a dataset (as returned by :func:`generate`).

    Returns a dict with ``sequences``, ``rows``, ``min_length``,
    ``median_length``, ``mean_length``, ``p90_length``, ``max_length`` and,
    when the label is integer (``cue``), ``label_1`` / ``label_0`` sequence
    counts.
    """
    _, first_idx, counts = np.unique(rows["seq_id"], return_index=True, return_counts=True)
    stats: dict[str, float | int] = {
        "sequences": int(len(counts)),
        "rows": int(counts.sum()),
        "min_length": int(counts.min()),
        "median_length": float(np.median(counts)),
        "mean_length": round(float(counts.mean()), 1),
        "p90_length": float(np.percentile(counts, 90)),
        "max_length": int(counts.max()),
    }
    labels = rows["label"]
    if np.issubdtype(labels.dtype, np.integer):
        seq_labels = labels[first_idx]
        stats["label_1"] = int((seq_labels == 1).sum())
        stats["label_0"] = int((seq_labels == 0).sum())
    return stats


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _validate(
    *,
    num_sequences: int,
    target: str,
    min_length: int,
    max_length: int,
    median_length: float,
    short_fraction: float,
    num_features: int,
    length_sigma: float,
) -> None:
    if num_sequences < 1:
        raise ValueError(f"num_sequences must be >= 1, got {num_sequences}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    lowest = CUE_STEPS if target == "cue" else 1
    if min_length < lowest:
        raise ValueError(f"min_length must be >= {lowest} for target {target!r}, got {min_length}")
    if max_length < min_length:
        raise ValueError(f"max_length ({max_length}) must be >= min_length ({min_length})")
    if median_length <= 0:
        raise ValueError(f"median_length must be > 0, got {median_length}")
    if not 0.0 <= short_fraction <= 1.0:
        raise ValueError(f"short_fraction must be in [0, 1], got {short_fraction}")
    if num_features < 1:
        raise ValueError(f"num_features must be >= 1, got {num_features}")
    if length_sigma < 0:
        raise ValueError(f"length_sigma must be >= 0, got {length_sigma}")


def _assign_shards(counts: np.ndarray, num_shards: int, *, order_key: np.ndarray) -> np.ndarray:
    """Greedy longest-first bin packing of sequences (by row count) into shards."""
    loads = [0] * num_shards
    shard = np.empty(len(counts), dtype=np.int64)
    # Longest first; ties broken by position in the input for determinism.
    for s in np.lexsort((order_key, -counts)).tolist():
        k = min(range(num_shards), key=lambda j: (loads[j], j))
        shard[s] = k
        loads[k] += int(counts[s])
    return shard


def _format_column(values: np.ndarray) -> list[str]:
    """Render one column as CSV strings (floats with ``DECIMALS`` decimals)."""
    if np.issubdtype(values.dtype, np.floating):
        return [f"{v:.{DECIMALS}f}" for v in values.tolist()]
    return [str(v) for v in values.tolist()]


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
    parser.add_argument("--min-length", type=int, default=10, help="minimum sequence length")
    parser.add_argument("--max-length", type=int, default=3000, help="maximum sequence length")
    parser.add_argument(
        "--median-length",
        type=float,
        default=200.0,
        help="median of the log-normal (long) length component",
    )
    parser.add_argument(
        "--short-fraction",
        type=float,
        default=0.3,
        help="fraction of short sequences, uniform in [min-length, 48]",
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
