from langskew.workflow import run
from langskew.study_b.perplexity import perplexity_job
run(snakemake, perplexity_job)  # noqa: F821
