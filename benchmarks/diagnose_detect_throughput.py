"""Throughput of `langskew diagnose` with language detection: one million short texts, no language column.

The texts are drawn (with replacement, seed 0) from the distinct statements of the dialogue
corpus that the `chatterbot-corpus` package ships (26 languages, median 21 characters; see
`langid_compare.py`), each row labelled with a language-dependent skew. The table is written
as Parquet, then the whole command path is timed once: read the columns, detect every row's
language (fastText lid.176.ftz, one process per core), count, every statistic. Printed: wall
time, rows per second, the peak resident memory of the process and of its detection workers,
the detection accuracy on these rows and the verdict against the one from the true languages.

    .venv/bin/pip install chatterbot-corpus==1.3.3
    .venv/bin/python benchmarks/diagnose_detect_throughput.py            # 1,000,000 rows
    .venv/bin/python benchmarks/diagnose_detect_throughput.py --rows 20000
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from langid_compare import corpus_frame  # noqa: E402

from langskew.cli import diagnose_source  # noqa: E402
from langskew.diagnosis import diagnose  # noqa: E402
from langskew.langid import default_workers  # noqa: E402


def make_frame(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """n_rows statements drawn from the corpus; label 'pos' with a probability that depends on the language."""
    corpus = corpus_frame()
    rng = np.random.default_rng(seed)
    rows = corpus.iloc[rng.integers(0, len(corpus), n_rows)].reset_index(drop=True)
    languages = sorted(rows["language"].unique())
    p_pos = dict(zip(languages, np.linspace(0.2, 0.8, len(languages))))
    label = np.where(rng.random(n_rows) < rows["language"].map(p_pos).to_numpy(), "pos", "neg")
    return pd.DataFrame({"text": rows["text"], "label": label, "true_language": rows["language"]})


def peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    df = make_frame(args.rows)
    cores = len(os.sched_getaffinity(0))
    print(f"{platform.machine()}, {cores} usable cores, {default_workers(args.rows)} detection processes; "
          f"{args.rows:,} rows, median {int(df['text'].str.len().median())} characters")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.parquet"
        df.to_parquet(path, index=False)
        before = peak_mib(resource.RUSAGE_SELF)
        start = time.perf_counter()
        result = diagnose_source(path, "text", "label")
        seconds = time.perf_counter() - start
    print(f"langskew diagnose with detection: {seconds:.1f} s, {args.rows / seconds:,.0f} rows/s")
    print(f"peak resident memory: this process {peak_mib(resource.RUSAGE_SELF):,.0f} MiB "
          f"({before:,.0f} MiB before the command, the generated table included), "
          f"largest detection worker {peak_mib(resource.RUSAGE_CHILDREN):,.0f} MiB")
    from langskew.langid import detect_languages

    detected, _ = detect_languages(df["text"])
    print(f"detection accuracy on these rows: {np.mean(detected == df['true_language'].to_numpy()):.3f}; "
          f"rows dropped: {sum(result.dropped.values()):,} ({'; '.join(k[:60] for k in result.dropped)})")
    true = diagnose(df, text_col="text", label_col="label", language_col="true_language")
    print(f"verdict with detected languages: {result.verdict} (V = {result.statistics['cramers_v']:.3f}); "
          f"with the true languages: {true.verdict} (V = {true.statistics['cramers_v']:.3f})")


if __name__ == "__main__":
    main()
