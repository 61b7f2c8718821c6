from langskew.workflow import run
from langskew.study_b.corpus import corpus_job
run(snakemake, corpus_job)  # noqa: F821
