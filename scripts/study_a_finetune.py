"""Snakemake entry point: fine-tune one model (resumable)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_a.finetune import finetune_job  # noqa: E402

run(snakemake, finetune_job)  # noqa: F821
