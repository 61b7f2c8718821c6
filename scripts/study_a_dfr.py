from langskew.workflow import run
from langskew.study_a.dfr import dfr_job
run(snakemake, dfr_job)  # noqa: F821
