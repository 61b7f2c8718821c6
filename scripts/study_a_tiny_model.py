from langskew.workflow import run
from langskew.study_a.modeling import tiny_model_job
run(snakemake, tiny_model_job)  # noqa: F821
