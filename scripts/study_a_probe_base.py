from langskew.workflow import run
from langskew.study_a.probe import probe_base_job
run(snakemake, probe_base_job)  # noqa: F821
