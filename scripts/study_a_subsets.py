from langskew.workflow import run
from langskew.study_a.subsets import subsets_job
run(snakemake, subsets_job)  # noqa: F821
