"""Snakemake entry point: SHAP values of one model."""
from langskew.workflow import run
from langskew.study_a.shap_analysis import shap_job

run(snakemake, shap_job)  # noqa: F821
