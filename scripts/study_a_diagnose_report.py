from langskew.workflow import run
from langskew.study_a.diagnose import diagnose_report_job
run(snakemake, diagnose_report_job)  # noqa: F821
