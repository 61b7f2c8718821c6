from langskew.workflow import run
from langskew.study_a.probe import probe_job
run(snakemake, probe_job)  # noqa: F821
