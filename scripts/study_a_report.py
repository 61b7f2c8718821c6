"""Snakemake entry point: Study A report tables and figures."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_a.report import report_a_job  # noqa: E402

run(snakemake, report_a_job)  # noqa: F821
