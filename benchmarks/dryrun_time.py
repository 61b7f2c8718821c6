"""Time `snakemake -n` on the paper grid against a trivial workflow with as many jobs.

Parsing the workflow must stay cheap as the grid grows: the rule files import only the
config checks and the grid expansion (no torch, transformers, pandas or scikit-learn).
This script prints the wall time of a dry run of the paper configuration and of a
trivial Snakefile with the same number of jobs (one input file, a chain of rules), best
of ``--repeat`` runs each, and their ratio.

    python benchmarks/dryrun_time.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_run(cwd: Path, *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", *args], cwd=cwd,
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - start, proc.stdout


def job_count(stdout: str) -> int:
    return int(re.search(r"^total\s+(\d+)", stdout, re.M).group(1))


def trivial_workflow(folder: Path, n_jobs: int) -> None:
    """`n_jobs - 1` independent jobs of one rule plus an `all` rule."""
    (folder / "Snakefile").write_text(
        f"N = {n_jobs - 1}\n\n"
        "rule all:\n    input: expand('out/{i}.txt', i=range(N))\n\n"
        "rule make:\n    output: 'out/{i}.txt'\n    shell: 'echo {wildcards.i} > {output}'\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outdir = Path(tmp) / "results"
        paper = [dry_run(ROOT, "--config", f"outdir={outdir}") for _ in range(args.repeat)]
        n_jobs = job_count(paper[0][1])
        trivial_workflow(Path(tmp), n_jobs)
        trivial = [dry_run(Path(tmp)) for _ in range(args.repeat)]
        assert job_count(trivial[0][1]) == n_jobs
    t_paper, t_trivial = min(t for t, _ in paper), min(t for t, _ in trivial)
    print(f"paper configuration: {n_jobs} jobs, dry run {t_paper:.2f} s (best of {args.repeat})")
    print(f"trivial workflow:    {n_jobs} jobs, dry run {t_trivial:.2f} s (best of {args.repeat})")
    print(f"ratio: {t_paper / t_trivial:.2f}x")


if __name__ == "__main__":
    main()
