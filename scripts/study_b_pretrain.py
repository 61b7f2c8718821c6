"""Snakemake entry point: Study B rule study_b_pretrain."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_b.train import pretrain_job  # noqa: E402

run(snakemake, pretrain_job)  # noqa: F821
