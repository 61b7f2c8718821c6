"""Snakemake entry point: language-label skew of one dataset's splits."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_a.diagnose import diagnose_job  # noqa: E402

run(snakemake, diagnose_job)  # noqa: F821
