"""Snakemake entry point: build the tiny demo encoder and tokenizer."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_a.modeling import build_tiny_model_job  # noqa: E402

run(snakemake, build_tiny_model_job)  # noqa: F821
