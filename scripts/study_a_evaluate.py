"""Snakemake entry point: accuracy per language and test variant."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_a.evaluate import evaluate_job  # noqa: E402

run(snakemake, evaluate_job)  # noqa: F821
