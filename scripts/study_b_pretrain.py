"""Snakemake entry point: Study B rule study_b_pretrain."""
from langskew.workflow import run
from langskew.study_b.pretrain import pretrain_job

run(snakemake, pretrain_job)  # noqa: F821
