"""Snakemake entry point: Study B rule study_b_fit."""
from langskew.workflow import run
from langskew.study_b.evaluate import fit_job

run(snakemake, fit_job)  # noqa: F821
