from langskew.workflow import run
from langskew.study_b.pretrain import pretrain_job
run(snakemake, pretrain_job)  # noqa: F821
