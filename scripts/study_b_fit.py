from langskew.workflow import run
from langskew.study_b.fit import fit_job
run(snakemake, fit_job)  # noqa: F821
