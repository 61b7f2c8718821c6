from langskew.workflow import run
from langskew.study_b.corpus import parallel_corpus_job
run(snakemake, parallel_corpus_job)  # noqa: F821
