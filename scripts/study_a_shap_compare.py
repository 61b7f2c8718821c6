"""Snakemake entry point: cumulative SHAP differences and figure."""
from langskew.workflow import run
from langskew.study_a.shap_analysis import shap_compare_job

run(snakemake, shap_compare_job)  # noqa: F821
