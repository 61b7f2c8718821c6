"""Throughput of `langskew diagnose`: rows per second on a generated file (default one million rows).

Writes a dataset with four languages, three string labels and a language-specific label skew
as CSV, TSV, JSON Lines and Parquet in a temporary folder, then times, per format, the whole
command path (read the columns, check them, count, every statistic) and, once, the statistics
alone on the in-memory table.

    .venv/bin/python benchmarks/diagnose_throughput.py            # 1,000,000 rows
    .venv/bin/python benchmarks/diagnose_throughput.py --rows 200000 --formats csv parquet
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from langskew.cli import diagnose_file
from langskew.diagnosis import diagnose_frame

SHARES = {"en": [0.2, 0.3, 0.5], "de": [0.5, 0.3, 0.2], "fr": [0.34, 0.33, 0.33], "es": [0.3, 0.4, 0.3]}
LABELS = np.array(["negative", "neutral", "positive"])


def make_frame(n_rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    langs = np.array(list(SHARES))
    lang_idx = rng.integers(0, len(langs), n_rows)
    cum = np.cumsum(np.array([SHARES[lang] for lang in langs]), axis=1)
    label_idx = (rng.random(n_rows)[:, None] > cum[lang_idx]).sum(axis=1)
    words = np.array("the a service was good bad slow quick fine okay terrible great".split())
    text = [" ".join(words[rng.integers(0, len(words), 8)]) for _ in range(min(n_rows, 10000))]
    return pd.DataFrame({"text": np.resize(np.array(text, dtype=object), n_rows),
                         "label": LABELS[label_idx], "language": langs[lang_idx]})


def write(df: pd.DataFrame, folder: Path, fmt: str) -> Path:
    path = folder / f"data.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        df.to_csv(path, index=False, sep="\t")
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path, index=False)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--formats", nargs="+", default=["parquet", "csv", "tsv", "jsonl"])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per format (best is reported)")
    args = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, pandas {pd.__version__}; "
          f"{args.rows:,} rows")
    df = make_frame(args.rows)
    frame = df[["language", "label"]]
    best = min(_timed(lambda: diagnose_frame(frame)) for _ in range(args.repeat))
    print(f"{'statistics only (in memory)':<28} {best:8.3f} s  {args.rows / best:14,.0f} rows/s")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats:
            path = write(df, Path(tmp), fmt)
            best = min(_timed(lambda: diagnose_file(path, "text", "label", "language")) for _ in range(args.repeat))
            size = path.stat().st_size / 2**20
            print(f"{'file, ' + fmt + f' ({size:.0f} MiB)':<28} {best:8.3f} s  {args.rows / best:14,.0f} rows/s")
        summary, _ = diagnose_file(path, "text", "label", "language")
    print(f"verdict of the generated data: {summary['verdict'].iloc[0]} "
          f"(V = {summary['cramers_v'].iloc[0]:.3f}, shortcut gain = {summary['shortcut_gain'].iloc[0]:.3f})")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
