"""Snakemake entry point: Study A report tables and figures."""
from langskew.workflow import run
from langskew.study_a.report import report_a_job

run(snakemake, report_a_job)  # noqa: F821
