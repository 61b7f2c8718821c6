from langskew.workflow import run
from langskew.study_a.dataset import dataset_job
run(snakemake, dataset_job)  # noqa: F821
