from langskew.workflow import run
from langskew.study_b.tokenizer import tokenizer_job
run(snakemake, tokenizer_job)  # noqa: F821
