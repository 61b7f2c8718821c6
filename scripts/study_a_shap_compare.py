"""Snakemake entry point: cumulative SHAP differences and figure."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_a.shap_analysis import shap_compare_job  # noqa: E402

run(snakemake, shap_compare_job)  # noqa: F821
