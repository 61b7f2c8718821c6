from langskew.workflow import run
from langskew.study_a.shap_compare import shap_compare_job
run(snakemake, shap_compare_job)  # noqa: F821
