"""Snakemake entry point: build the tiny demo encoder and tokenizer."""
from langskew.workflow import run
from langskew.study_a.modeling import build_tiny_model_job

run(snakemake, build_tiny_model_job)  # noqa: F821
