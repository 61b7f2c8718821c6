from langskew.workflow import run
from langskew.study_b.report import report_job
run(snakemake, report_job)  # noqa: F821
