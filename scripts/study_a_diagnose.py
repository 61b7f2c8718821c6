"""Snakemake entry point: language-label skew of one dataset's splits."""
from langskew.workflow import run
from langskew.study_a.diagnose import diagnose_job

run(snakemake, diagnose_job)  # noqa: F821
