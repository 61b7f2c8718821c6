from langskew.workflow import run
from langskew.study_b.tokenizer import parallel_tokens_job
run(snakemake, parallel_tokens_job)  # noqa: F821
