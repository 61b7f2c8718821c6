"""Snakemake entry point: rule prefetch (hub datasets and models into the local caches)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.prefetch import prefetch_job  # noqa: E402

run(snakemake, prefetch_job)  # noqa: F821
