"""Snakemake entry point: training-curve figure (train and validation loss per run)."""
from langskew.workflow import run
from langskew.curves import curves_job

run(snakemake, curves_job)  # noqa: F821
