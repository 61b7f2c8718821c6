"""Snakemake entry point: the diagnosis tables of every dataset."""
from langskew.workflow import run
from langskew.study_a.diagnose import report_diagnosis_job

run(snakemake, report_diagnosis_job)  # noqa: F821
