"""Snakemake entry point: language-identification probe."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_a.probe import probe_job  # noqa: E402

run(snakemake, probe_job)  # noqa: F821
