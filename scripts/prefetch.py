from langskew.workflow import run
from langskew.prefetch import prefetch_job
run(snakemake, prefetch_job)  # noqa: F821
