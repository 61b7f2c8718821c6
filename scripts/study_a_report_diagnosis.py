"""Snakemake entry point: the diagnosis tables of every dataset."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_a.diagnose import report_diagnosis_job  # noqa: E402

run(snakemake, report_diagnosis_job)  # noqa: F821
