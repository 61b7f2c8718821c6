"""Snakemake entry point: Study B rule study_b_perplexity."""
from langskew.workflow import run
from langskew.study_b.evaluate import perplexity_job

run(snakemake, perplexity_job)  # noqa: F821
