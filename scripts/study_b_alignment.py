from langskew.workflow import run
from langskew.study_b.alignment import alignment_job
run(snakemake, alignment_job)  # noqa: F821
