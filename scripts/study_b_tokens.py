"""Snakemake entry point: Study B rule study_b_tokens."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_b.tokenizer import tokens_job  # noqa: E402

run(snakemake, tokens_job)  # noqa: F821
