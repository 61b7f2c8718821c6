"""Snakemake entry point: balanced / imbalanced subsets, counts, class weights."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_a.subsets import build_subsets_job  # noqa: E402

run(snakemake, build_subsets_job)  # noqa: F821
