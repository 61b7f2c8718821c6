"""Snakemake entry point: Study B rule study_b_perplexity."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_b.evaluate import perplexity_job  # noqa: E402

run(snakemake, perplexity_job)  # noqa: F821
