"""Snakemake entry point: normalise a dataset (hub / local / synthetic)."""
from langskew.workflow import run
from langskew.study_a.dataset import prepare_dataset_job

run(snakemake, prepare_dataset_job)  # noqa: F821
