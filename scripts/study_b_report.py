"""Snakemake entry point: Study B rule study_b_report."""
from langskew.workflow import run
from langskew.study_b.report import report_b_job

run(snakemake, report_b_job)  # noqa: F821
