# Shared helpers: config validation, path layout, per-rule config slices, resources, targets.
# The package `langskew` must be installed (pip install ., or the envs/*.yaml environments);
# paths of the workflow's own files are taken relative to this file, so that the workflow also
# runs as a Snakemake `module` from another folder.
import os
import glob
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.sourcecache import LocalSourceFile

from langskew import config as lsconfig

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
SA = config["study_a"]
SPLITS = ["train", "validation", "test"]
VARIANTS = ["balanced", "imbalanced"]
TEST_VARIANTS = ["balanced", "imbalanced", "original"]


def script_path(name):
    return f"../scripts/{name}.py"


# --- Study A: names and paths --------------------------------------------------------------
def sa_datasets():
    return list(SA["datasets"]) if SA["enabled"] else []


def sa_models():
    return list(SA["models"]) if SA["enabled"] else []


def run_dir(w):
    return f"{OUT}/study_a/finetune/{w.dataset}/{w.model}/{w.condition}/seed{w.seed}"


def test_file(dataset, variant):
    """The parquet file of one test variant ('original' is the untouched test split)."""
    if variant == "original":
        return f"{OUT}/study_a/data/{dataset}/test.parquet"
    return f"{OUT}/study_a/subsets/{dataset}/{variant}_test.parquet"


def model_input(model):
    """A model built by the workflow is an input file; a hub id is not a file."""
    if config["models"][model]["source"] == "tiny":
        return f"{OUT}/models/{model}"
    return []


def model_resources(key, default=None):
    """A SLURM resource of the model wildcard's GPU jobs (see README, Running on a cluster)."""

    def get(wildcards, attempt=1):
        res = config["models"][wildcards.model].get("resources", {})
        value = res.get(key, default)
        if key == "runtime":
            return int(value) * attempt  # a retried job (timeout) gets more time
        return "" if value is None else value

    return get


def model_threads(wildcards):
    return int(
        config["models"][wildcards.model].get("resources", {}).get("cpus_per_gpu", 1)
    )


def finetune_hp(w):
    return lsconfig.finetune_hp(config, w.dataset)


# --- local files as inputs: editing one reruns the jobs that read it, and only those ---------
def _local_paths(patterns):
    """Files of one path/glob or a list of them; a pattern matching nothing stays as it is
    (Snakemake then names it as a missing input)."""
    out = []
    for pat in [patterns] if isinstance(patterns, str) else list(patterns or []):
        out += sorted(glob.glob(str(pat), recursive=True)) or [str(pat)]
    return out


def local_dataset_files(w):
    """Study A: the train/validation/test files of a local dataset."""
    ds = config["datasets"][w.dataset]
    return (
        _local_paths([ds["local"][s] for s in SPLITS])
        if ds["source"] == "local"
        else []
    )


def local_corpus_files(w):
    """Study B: the text files of a local base-language corpus."""
    spec = config["study_b"]["languages"][w.lang]
    local = spec.get("local") or {}
    return (
        _local_paths(local.get("train")) + _local_paths(local.get("test"))
        if spec["source"] == "local"
        else []
    )


def local_parallel_files(w):
    """Study B: the aligned line files or the table of local parallel sentences."""
    par = config["study_b"]["parallel"]
    local = par.get("local") or {}
    if par.get("source") != "local":
        return []
    return _local_paths(list((local.get("files") or {}).values()) or local.get("path"))


# --- Study A: targets ----------------------------------------------------------------------
def sa_runs():
    for d in sa_datasets():
        for m in sa_models():
            for c in SA["conditions"]:
                for s in SA["seeds"]:
                    yield d, m, c, s


def study_a_targets():
    if not SA["enabled"]:
        return []
    rep = f"{OUT}/report/study_a"
    tables = [
        "accuracy",
        "lid",
        "shap_cumulative",
        "class_weights",
        "subset_counts",
        "language_reliance",
    ]
    return (
        [f"{rep}/{t}.csv" for t in tables]
        + [f"{rep}/{t}.md" for t in tables]
        + [f"{rep}/accuracy.png"]
        + diagnosis_targets()
        + [
            f"{OUT}/study_a/shap/{d}/{m}/seed{s}/differences.png"
            for d in sa_datasets()
            for m in sa_models()
            for s in SA["seeds"]
        ]
    )


def probe_params(w):
    return dict(SA["probe"], max_length=finetune_hp(w)["max_length"], seed=0)


def _report_a_inputs(wildcards):
    runs = list(sa_runs())
    base = [(d, m) for d in sa_datasets() for m in sa_models()]
    shap = [(d, m, s) for d in sa_datasets() for m in sa_models() for s in SA["seeds"]]
    return {
        "accuracy": [
            f"{OUT}/study_a/eval/{d}/{m}/{c}/seed{s}/accuracy.csv"
            for d, m, c, s in runs
        ],
        "reliance": [
            f"{OUT}/study_a/eval/{d}/{m}/{c}/seed{s}/reliance.csv"
            for d, m, c, s in runs
        ],
        "lid": [f"{OUT}/study_a/probe/{d}/{m}/{c}/seed{s}.csv" for d, m, c, s in runs]
        + [f"{OUT}/study_a/probe/{d}/{m}/base.csv" for d, m in base],
        "shap": [
            f"{OUT}/study_a/shap/{d}/{m}/seed{s}/cumulative.csv" for d, m, s in shap
        ],
        "informative": [
            f"{OUT}/study_a/shap/{d}/{m}/seed{s}/informative.csv" for d, m, s in shap
        ],
        "class_weights": [
            f"{OUT}/study_a/subsets/{d}/class_weights.csv" for d in sa_datasets()
        ],
        "counts": [f"{OUT}/study_a/subsets/{d}/counts.csv" for d in sa_datasets()],
    }


def _report_a_ids():
    runs = list(sa_runs())
    return {
        "accuracy_ids": [
            dict(dataset=d, model=m, condition=c, seed=s) for d, m, c, s in runs
        ],
        "lid_ids": [
            dict(dataset=d, model=m, condition=c, seed=s) for d, m, c, s in runs
        ]
        + [
            dict(dataset=d, model=m, condition="base", seed=None)
            for d in sa_datasets()
            for m in sa_models()
        ],
        "shap_ids": [
            dict(dataset=d, model=m, seed=s)
            for d in sa_datasets()
            for m in sa_models()
            for s in SA["seeds"]
        ],
        "dataset_ids": [dict(dataset=d) for d in sa_datasets()],
    }


REP_A = f"{OUT}/report/study_a"


# --- Study A: diagnosis of language-label skew -----------------------------------------------
DIAGNOSIS_STAGES = [
    "data",
    "subsets",
]  # the normalised splits; the balanced/imbalanced subsets


def diagnose_inputs(w):
    """One Parquet file per {variant}_{split}: variant "original" for the normalised data."""
    if w.stage == "data":
        return {
            f"original_{s}": f"{OUT}/study_a/data/{w.dataset}/{s}.parquet"
            for s in SPLITS
        }
    return {
        f"{v}_{s}": f"{OUT}/study_a/subsets/{w.dataset}/{v}_{s}.parquet"
        for v in VARIANTS
        for s in SPLITS
    }


def diagnosis_files(kind):
    suffix = {"summary": ".csv", "cells": "_cells.csv", "figure": ".png"}[kind]
    return [
        f"{OUT}/study_a/diagnosis/{d}/{st}{suffix}"
        for d in sa_datasets()
        for st in DIAGNOSIS_STAGES
    ]


def diagnosis_targets():
    rep = f"{OUT}/report/study_a"
    return [
        f"{rep}/diagnosis.csv",
        f"{rep}/diagnosis.md",
        f"{rep}/diagnosis_cells.csv",
    ] + diagnosis_files("figure")


def curve_targets():
    """Training-curve figures (rules/curves.smk); REP_B and SB_ON come from rules/study_b_common.smk."""
    return ([f"{REP_A}/training_curves.png"] if SA["enabled"] else []) + (
        [f"{REP_B}/training_curves.png"] if SB_ON else []
    )
