from langskew.workflow import run
from langskew.curves import training_curves_job
run(snakemake, training_curves_job)  # noqa: F821
