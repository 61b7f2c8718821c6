from langskew.workflow import run
from langskew.study_a.finetune import finetune_job
run(snakemake, finetune_job)  # noqa: F821
