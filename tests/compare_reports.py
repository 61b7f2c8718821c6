"""Compare the report tables of two result folders, e.g. the demo before and after a refactor.

    python tests/compare_reports.py results_before results_after

Every CSV and Markdown table under ``<folder>/report`` is compared byte for byte; for a CSV
that differs, the largest absolute difference of its numeric columns is printed. Exit status
1 when any table differs or is missing. A behaviour-preserving change leaves every table
identical (Study A's tiny model: see docs/CONVENTIONS.md, "Checking a refactor").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd


def compare(before: Path, after: Path) -> list[str]:
    """One line per table that differs (or is missing in ``after``)."""
    problems = []
    for path in sorted(p for p in (before / "report").rglob("*") if p.suffix in (".csv", ".md")):
        rel = path.relative_to(before)
        other = after / rel
        if not other.exists():
            problems.append(f"missing: {rel}")
        elif path.read_bytes() != other.read_bytes():
            line = f"differs: {rel}"
            if path.suffix == ".csv":
                a, b = pd.read_csv(path), pd.read_csv(other)
                num = a.select_dtypes("number").columns
                if a.shape == b.shape and list(a.columns) == list(b.columns) and len(num):
                    gap = np.nanmax(np.abs(a[num].to_numpy(float) - b[num].to_numpy(float)))
                    line += f" (largest numeric difference {gap:.3g})"
            problems.append(line)
    return problems


def main(argv: list[str]) -> int:
    before, after = Path(argv[0]), Path(argv[1])
    n = sum(1 for p in (before / "report").rglob("*") if p.suffix in (".csv", ".md"))
    if n == 0:
        print(f"no report tables under {before / 'report'}")
        return 1
    problems = compare(before, after)
    print("\n".join(problems) or f"all {n} report tables identical")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
