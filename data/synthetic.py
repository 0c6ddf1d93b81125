"""The synthetic sequences of ``data/generate.py``: lengths, signals, rows.

Long, variable-length sequences for stateful training (the targets and the
row format: ``data/generate.py`` and data/README.md). Everything random comes
from one ``numpy.random.default_rng(seed)``, drawn in a fixed order, so the
same arguments give the same columns. NumPy only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

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


# --------------------------------------------------------------------------- #
# Lengths
# --------------------------------------------------------------------------- #
@dataclasses.dataclass(frozen=True)
class Lengths:
    """The length distribution's settings, declared once (``generate``'s and
    ``sample_lengths``'s keyword arguments, the command line's defaults).

    A share ``short_fraction`` of the sequences is "short": uniform integers
    in ``[min_length, short_max_length]`` (the upper bound clamped into
    ``[min_length, max_length]``). The rest are log-normal with median
    ``median_length`` and log-space standard deviation ``length_sigma``,
    rounded and clipped to ``[min_length, max_length]``.
    """

    min_length: int = 10
    max_length: int = 3000
    median_length: float = 200.0
    short_fraction: float = 0.3
    short_max_length: int = 48
    length_sigma: float = 1.0


def sample_lengths(num_sequences: int, rng: np.random.Generator, **lengths) -> np.ndarray:
    """Draw long-tailed sequence lengths (``lengths``: fields of ``Lengths``;
    exactly ``round(short_fraction * num_sequences)`` short ones, placed at
    random positions).

    Returns:
        ``int64`` array of shape ``(num_sequences,)``.
    """
    spec = Lengths(**lengths)
    min_length, max_length = spec.min_length, spec.max_length
    short_fraction, short_max_length = spec.short_fraction, spec.short_max_length
    median_length, length_sigma = spec.median_length, spec.length_sigma
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
# The dataset
# --------------------------------------------------------------------------- #
def generate(
    num_sequences: int,
    *,
    seed: int,
    target: Target = "cue",
    num_features: int = 5,
    **lengths,
) -> Columns:
    """Generate a synthetic dataset as row-aligned columns.

    Args:
        num_sequences: Number of sequences (>= 1).
        seed: Seed for ``numpy.random.default_rng``; the only source of
            randomness.
        target: ``"cue"`` (per-sequence binary label) or ``"forecast"``
            (per-step float label ``x[t+1]``).
        num_features: Number of feature columns ``f0 .. f{n-1}`` (>= 1).
        lengths: Fields of ``Lengths`` (the length distribution);
            ``min_length`` >= ``CUE_STEPS`` for ``cue``, >= 1 for
            ``forecast``.

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
    spec = Lengths(**lengths)
    _validate(num_sequences=num_sequences, target=target, num_features=num_features, spec=spec)
    rng = np.random.default_rng(seed)
    lengths = sample_lengths(num_sequences, rng, **dataclasses.asdict(spec))
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


def _validate(*, num_sequences: int, target: str, num_features: int, spec: Lengths) -> None:
    min_length, max_length = spec.min_length, spec.max_length
    median_length, short_fraction = spec.median_length, spec.short_fraction
    length_sigma = spec.length_sigma
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
