"""Writing and summarising the rows of ``data/generate.py``: CSV files of
whole sequences, balanced across shards, and summary statistics. NumPy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.synthetic import DECIMALS, Columns

_SHARD_NAME = "part-{:05d}.csv"


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
