from langskew.workflow import run
from langskew.study_a.evaluate import evaluate_job
run(snakemake, evaluate_job)  # noqa: F821
