"""Snakemake entry point: balanced / imbalanced subsets, counts, class weights."""
from langskew.workflow import run
from langskew.study_a.subsets import build_subsets_job

run(snakemake, build_subsets_job)  # noqa: F821
