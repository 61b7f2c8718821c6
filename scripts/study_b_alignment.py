"""Snakemake entry point: Study B rule study_b_alignment."""
from langskew.workflow import run
from langskew.study_b.evaluate import alignment_job

run(snakemake, alignment_job)  # noqa: F821
