from langskew.workflow import run
from langskew.study_a.shap_values import shap_values_job
run(snakemake, shap_values_job)  # noqa: F821
