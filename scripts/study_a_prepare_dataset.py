"""Snakemake entry point: normalise a dataset (hub / local / synthetic)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (snakemake is injected)
from langskew.workflow import run  # noqa: E402
from langskew.study_a.sources import prepare_dataset_job  # noqa: E402

run(snakemake, prepare_dataset_job)  # noqa: F821
