# Shared by both studies: config validation, the output folders, script paths, the code digest of
# a rule's params, resources of GPU and CPU rules, local files as inputs, and the training-curve
# targets.
# The package `langskew` must be installed from this checkout in editable mode (pip install -e ".[torch]",
# or the envs/*.yaml environments): a job that imports another copy of the package stops;
# paths of the workflow's own files are taken relative to this file, so that the workflow also
# runs as a Snakemake `module` from another folder.
import math
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.sourcecache import LocalSourceFile

from langskew import config as lsconfig
from langskew import digest as lsdigest
from langskew.paths import as_list, matching_files

# envs/*.yaml install the package from ${LANGSKEW_SOURCE}: this workflow's folder when it is on
# local disk (a remote module must set LANGSKEW_SOURCE itself, e.g. to a git URL).
if isinstance(workflow.current_basedir, LocalSourceFile):
    os.environ.setdefault(
        "LANGSKEW_SOURCE",
        str(Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parent),
    )

try:
    lsconfig.validate_config(
        config,
        schema_files={
            "config": workflow.source_path("../schemas/config.schema.yaml"),
            "study_b": workflow.source_path("../schemas/study_b.schema.yaml"),
        },
    )
except lsconfig.ConfigError as err:
    raise WorkflowError(f"langskew: {err}") from None

OUT = config["outdir"].rstrip("/")
CKPT = config["checkpoint_dir"].rstrip("/")
LOGS = f"{OUT}/logs"
SA_CPU = (config["study_a"].get("resources") or {}).get("cpu", {})  # Study A's CPU jobs


def script_path(rule_name):
    """The script of a rule: scripts/<rule name>.py."""
    return f"../scripts/{rule_name}.py"


def code_digest(rule_name):
    """The rule's `code_digest` param: a digest of the package code its script runs (the job
    module and every package module that imports): editing that code reruns its jobs."""
    return lsdigest.script_digest(workflow.source_path(script_path(rule_name)))


# --- resources ---------------------------------------------------------------------------
# Runtime (minutes) and memory (MB) of every submitted job grow with the attempt: a job
# retried after a timeout or an out-of-memory kill gets k times both on attempt k.
def gpu_resources(settings, mem_mb, runtime, scale=None, stage=None):
    """The SLURM resources of a GPU rule, for `resources: **gpu_resources(...)`.

    `settings(wildcards)` is the job's resources mapping from the config (a model's or a
    model size's); a key it leaves out gets the default (gpu 1, no gpu_model, cpus_per_gpu 8,
    and `mem_mb` / `runtime` as given). With `stage` (e.g. "probe"), `mem_mb` and `runtime`
    come from the mapping's `stage` entry instead (an evaluation sized for its own work, not
    the training's). Runtime and memory grow with the attempt; the runtime also with
    `scale(wildcards)` where given.
    """

    def value(key, default):
        def get(wildcards, attempt=1):
            found = settings(wildcards).get(key, default)
            return "" if found is None else found

        return get

    def sized(wildcards):
        found = settings(wildcards)
        return (found.get(stage) or {}) if stage else found

    def runtime_minutes(wildcards, attempt=1):
        factor = scale(wildcards) if scale else 1.0
        minutes = int(sized(wildcards).get("runtime", runtime))
        return int(math.ceil(minutes * factor * attempt))

    def memory(wildcards, attempt=1):
        return int(sized(wildcards).get("mem_mb", mem_mb)) * attempt

    return dict(
        gpu=value("gpu", 1),
        gpu_model=value("gpu_model", None),
        cpus_per_gpu=value("cpus_per_gpu", 8),
        mem_mb=memory,
        runtime=runtime_minutes,
    )


def gpu_threads(settings):
    """The threads of a GPU rule: the cpus_per_gpu of `settings(wildcards)` (default 1)."""
    return lambda wildcards: int(settings(wildcards).get("cpus_per_gpu", 1))


def cpu_resources(settings):
    """The SLURM resources of a CPU rule, for `resources: **cpu_resources(...)`: mem_mb and
    runtime of the `settings` mapping, both growing with the attempt."""

    def runtime_minutes(wildcards, attempt=1):
        return int(settings.get("runtime")) * attempt

    def memory(wildcards, attempt=1):
        return int(settings.get("mem_mb")) * attempt

    return dict(mem_mb=memory, runtime=runtime_minutes)


def benchmark_file(rule_name, pattern):
    """The benchmark TSV of a job (wall time, peak memory), read by `langskew budget`:
    {outdir}/benchmarks/<rule>/<pattern>.tsv, `pattern` holding the job's wildcards."""
    return f"{OUT}/benchmarks/{rule_name}/{pattern}.tsv"


# --- local files as inputs: editing one reruns the jobs that read it, and only those ---------
def local_files(patterns):
    """Files of one path/glob or a list of them; a pattern matching nothing stays as it is
    (Snakemake then names it as a missing input)."""
    return [f for pat in as_list(patterns) for f in matching_files(pat) or [pat]]


# --- shared targets --------------------------------------------------------------------------
def curve_targets():
    """Training-curve figures of both studies (rules/curves.smk)."""
    return ([f"{REP_A}/training_curves.png"] if SA_ON else []) + (
        [f"{REP_B}/training_curves.png"] if SB_ON else []
    )
