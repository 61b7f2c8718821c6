from langskew.workflow import run
from langskew.study_b.tokenizer import tokens_job
run(snakemake, tokens_job)  # noqa: F821
