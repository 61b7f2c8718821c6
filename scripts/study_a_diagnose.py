from langskew.workflow import run
from langskew.study_a.diagnose import diagnose_job
run(snakemake, diagnose_job)  # noqa: F821
