"""Snakemake entry point: Study B rule study_b_report."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_b.report import report_b_job  # noqa: E402

run(snakemake, report_b_job)  # noqa: F821
