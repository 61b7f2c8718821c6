# langskew: language imbalance in multilingual models, two studies as one workflow.
# Paper configuration: config.yaml. Offline demo: --configfile presets/demo.yaml.
# Rule files: rules/common.smk (shared helpers), rules/study_{a,b}_common.smk (each study's
# names, paths and targets), rules/study_{a,b}.smk (the rules), prefetch and training curves.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/study_a_common.smk"
include: "rules/study_b_common.smk"
include: "rules/study_a.smk"
include: "rules/study_b.smk"
include: "rules/prefetch.smk"
include: "rules/curves.smk"


rule all:
    default_target: True
    input:
        study_a_targets(),
        study_b_targets(),
        curve_targets(),
