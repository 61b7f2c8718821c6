# Study A: names, paths, per-job config slices and targets (helpers of rules/study_a.smk).
SA = config["study_a"]
SA_ON = bool(SA["enabled"])
# the fine-tuning conditions; an overlay drops one of the base config by setting it to null
SA_CONDITIONS = {
    k: v for k, v in config["study_a"]["conditions"].items() if v is not None
}
SPLITS = ["train", "validation", "test"]
VARIANTS = ["balanced", "imbalanced"]
TEST_VARIANTS = ["balanced", "imbalanced", "original"]
SA_DIR = f"{OUT}/study_a"
REP_A = f"{OUT}/report/study_a"
SA_TABLES = [
    "accuracy",
    "mitigation",
    "lid",
    "shap_cumulative",
    "class_weights",
    "subset_counts",
    "language_reliance",
]
DIAGNOSIS_STAGES = [
    "data",
    "subsets",
]  # the normalised splits; the balanced/imbalanced subsets


# --- names ---------------------------------------------------------------------------------
def sa_datasets():
    return list(SA["datasets"]) if SA_ON else []


def sa_models():
    return list(SA["models"]) if SA_ON else []


def sa_runs():
    """Every fine-tuning run: (dataset, model, condition, seed)."""
    for d in sa_datasets():
        for m in sa_models():
            for c in SA_CONDITIONS:
                for s in SA["seeds"]:
                    yield d, m, c, s


# --- paths ---------------------------------------------------------------------------------
def run_dir(
    root, dataset="{dataset}", model="{model}", condition="{condition}", seed="{seed}"
):
    """The folder of one fine-tuning run below `root` (a stage's folder, the checkpoints, the
    logs); without a run it is the wildcard pattern the rules use."""
    return f"{root}/{dataset}/{model}/{condition}/seed{seed}"


def subset_file(dataset, variant, split):
    return f"{SA_DIR}/subsets/{dataset}/{variant}_{split}.parquet"


def test_file(dataset, variant):
    """The parquet file of one test variant ('original' is the untouched test split)."""
    if variant == "original":
        return f"{SA_DIR}/data/{dataset}/test.parquet"
    return subset_file(dataset, variant, "test")


def shap_values_file(dataset, model, condition, seed):
    return f"{run_dir(f'{SA_DIR}/shap', dataset, model, condition, seed)}.parquet"


# --- config of a job's dataset and model ---------------------------------------------------
def dataset_cfg(w):
    """The config of the job's dataset (datasets.<dataset>)."""
    return config["datasets"][w.dataset]


def dataset_key(key):
    """A params function: one key of the job's dataset config. (A plain function rather than
    Snakemake's `lookup`, whose dpath search walks the whole config for every job and made
    the paper grid's dry run a quarter slower.)"""

    def get(w):
        return dataset_cfg(w)[key]

    return get


def condition_weighting(w):
    """The loss weighting of the job's condition (study_a.conditions.<condition>.weighting)."""
    return SA_CONDITIONS[w.condition]["weighting"]


def condition_mitigation(w):
    """The mitigation keys of the job's condition (mask_entropy, adversary, ...; empty: none)."""
    return {
        k: v
        for k, v in SA_CONDITIONS[w.condition].items()
        if k not in ("train", "weighting", "model_selection")
    }


def condition_model_selection(w):
    """Which validation checkpoint the job's condition keeps (study_a.conditions.<condition>.model_selection)."""
    return SA_CONDITIONS[w.condition].get("model_selection", "val_loss")


def mitigation_baseline():
    """The condition the mitigation table compares with: the first one trained on the imbalanced
    subset with the plain loss (no weighting, no mitigation); None if the config has none.
    """
    for name, cond in SA_CONDITIONS.items():
        if cond == {"train": "imbalanced", "weighting": "none"}:
            return name
    return None


def dataset_spec(w):
    """The parts of the dataset's config that determine its normalised files."""
    return lsconfig.dataset_source_spec(config, w.dataset)


def n_labels(w):
    return len(dataset_cfg(w)["labels"])


def model_cfg(w):
    """The config of the job's model (models.<model>)."""
    return config["models"][w.model]


def model_spec(w):
    """Path, revision and trust_remote_code of the job's model."""
    return lsconfig.model_spec(config, w.model)


def model_settings(w):
    """The resources of the job's model (models.<model>.resources)."""
    return model_cfg(w).get("resources", {})


def built_model(w):
    """A model built by the workflow is an input folder; a hub id is not a file."""
    if model_cfg(w)["source"] == "tiny":
        return {"model": f"{OUT}/models/{w.model}"}
    return {}


def finetune_hp(w):
    return lsconfig.finetune_hp(config, w.dataset)


# --- inputs and params ---------------------------------------------------------------------
def local_dataset_files(w):
    """The train/validation/test files of a local dataset."""
    ds = dataset_cfg(w)
    return (
        local_files([ds["local"][s] for s in SPLITS]) if ds["source"] == "local" else []
    )


def diagnose_inputs(w):
    """One Parquet file per {variant}_{split}: variant "original" for the normalised data."""
    if w.stage == "data":
        return {
            f"original_{s}": f"{SA_DIR}/data/{w.dataset}/{s}.parquet" for s in SPLITS
        }
    return {f"{v}_{s}": subset_file(w.dataset, v, s) for v in VARIANTS for s in SPLITS}


def tiny_model_inputs(w):
    return [f"{SA_DIR}/data/{d}/train.parquet" for d in sa_datasets()]


def finetune_inputs(w):
    """The subsets of the condition's training variant, every test variant, the model if built here."""
    variant = SA_CONDITIONS[w.condition]["train"]
    return {
        "train": subset_file(w.dataset, variant, "train"),
        "validation": subset_file(w.dataset, variant, "validation"),
        "tests": [test_file(w.dataset, v) for v in TEST_VARIANTS],
        **built_model(w),
    }


def finetune_seed(w):
    return int(w.seed)


def dfr_baseline():
    """The condition DFR refits the last layer of: the mitigation baseline, if DFR is on."""
    return mitigation_baseline() if SA["dfr"]["enabled"] else None


def dfr_inputs(w):
    """The baseline run's fine-tuned model, the subsets it trained and validated on, every test variant."""
    base = dfr_baseline()
    variant = SA_CONDITIONS[base]["train"]
    return {
        "model": f"{run_dir(f'{SA_DIR}/finetune', w.dataset, w.model, base, w.seed)}/model",
        "train": subset_file(w.dataset, variant, "train"),
        "validation": subset_file(w.dataset, variant, "validation"),
        "tests": [test_file(w.dataset, v) for v in TEST_VARIANTS],
    }


def dfr_settings(w):
    return {k: v for k, v in SA["dfr"].items() if k != "enabled"}


def dfr_max_length(w):
    return finetune_hp(w)["max_length"]


def probe_data(w):
    """The test variant the probe and SHAP read (datasets.<dataset>.probe_test)."""
    return test_file(w.dataset, dataset_cfg(w)["probe_test"])


def probe_base_inputs(w):
    return {"data": probe_data(w), **built_model(w)}


def probe_settings(w):
    return dict(SA["probe"], max_length=finetune_hp(w)["max_length"], seed=0)


def shap_settings(w):
    return dict(
        lsconfig.shap_settings(config, w.dataset),
        max_length=finetune_hp(w)["max_length"],
    )


def shap_reference(w):
    return shap_values_file(w.dataset, w.model, SA["shap"]["reference"], w.seed)


def shap_others(w):
    return [
        shap_values_file(w.dataset, w.model, c, w.seed) for c in SA["shap"]["compare"]
    ]


def shap_classes(w):
    """The classes of the SHAP figure (study_a.shap.classes.<dataset>, default all)."""
    return SA["shap"]["classes"].get(w.dataset, list(range(n_labels(w))))


def report_inputs(w):
    runs = list(sa_runs())
    pairs = [(d, m) for d in sa_datasets() for m in sa_models()]
    shap = [(d, m, s) for d, m in pairs for s in SA["seeds"]]
    return {
        "accuracy": [f"{run_dir(f'{SA_DIR}/eval', *r)}/accuracy.csv" for r in runs],
        "reliance": [f"{run_dir(f'{SA_DIR}/eval', *r)}/reliance.csv" for r in runs],
        "lid": [f"{run_dir(f'{SA_DIR}/probe', *r)}.csv" for r in runs]
        + [f"{SA_DIR}/probe/{d}/{m}/base.csv" for d, m in pairs],
        "shap": [f"{SA_DIR}/shap/{d}/{m}/seed{s}/cumulative.csv" for d, m, s in shap],
        "informative": [
            f"{SA_DIR}/shap/{d}/{m}/seed{s}/informative.csv" for d, m, s in shap
        ],
        "class_weights": [
            f"{SA_DIR}/subsets/{d}/class_weights.csv" for d in sa_datasets()
        ],
        "counts": [f"{SA_DIR}/subsets/{d}/counts.csv" for d in sa_datasets()],
        "predictions": [
            f"{run_dir(f'{SA_DIR}/finetune', *r)}/predictions.parquet" for r in runs
        ],
        "metrics": [f"{run_dir(f'{SA_DIR}/finetune', *r)}/metrics.json" for r in runs],
        "dfr_predictions": [
            f"{SA_DIR}/dfr/{d}/{m}/seed{s}/predictions.parquet"
            for d, m, s in dfr_runs()
        ],
        "dfr_metrics": [
            f"{SA_DIR}/dfr/{d}/{m}/seed{s}/metrics.json" for d, m, s in dfr_runs()
        ],
    }


def dfr_runs():
    """(dataset, model, seed) of every DFR job: one per run of the baseline condition, if DFR is on."""
    if not dfr_baseline():
        return []
    return [(d, m, s) for d in sa_datasets() for m in sa_models() for s in SA["seeds"]]


def report_ids():
    """Which run, model or dataset each report input belongs to (same order as report_inputs)."""
    runs = list(sa_runs())
    pairs = [(d, m) for d in sa_datasets() for m in sa_models()]
    return {
        "accuracy_ids": [
            dict(dataset=d, model=m, condition=c, seed=s) for d, m, c, s in runs
        ],
        "lid_ids": [
            dict(dataset=d, model=m, condition=c, seed=s) for d, m, c, s in runs
        ]
        + [dict(dataset=d, model=m, condition="base", seed=None) for d, m in pairs],
        "shap_ids": [
            dict(dataset=d, model=m, seed=s) for d, m in pairs for s in SA["seeds"]
        ],
        "dataset_ids": [dict(dataset=d) for d in sa_datasets()],
        "dfr_ids": [
            dict(dataset=d, model=m, condition=f"{dfr_baseline()}_dfr", seed=s)
            for d, m, s in dfr_runs()
        ],
    }


def report_n_classes():
    """{dataset: number of labels} of the studied datasets."""
    return {d: len(config["datasets"][d]["labels"]) for d in sa_datasets()}


def report_figure_tests():
    """{dataset: the test variants of the accuracy figure (datasets.<name>.report_tests)}."""
    return {d: config["datasets"][d].get("report_tests") for d in sa_datasets()}


def curve_inputs():
    return [f"{run_dir(f'{SA_DIR}/finetune', *r)}/curve.csv" for r in sa_runs()]


def curve_labels():
    return [f"{d} / {m} / {c} / seed {s}" for d, m, c, s in sa_runs()]


# --- targets -------------------------------------------------------------------------------
def diagnosis_files(kind):
    suffix = {"summary": ".csv", "cells": "_cells.csv", "figure": ".png"}[kind]
    return [
        f"{SA_DIR}/diagnosis/{d}/{st}{suffix}"
        for d in sa_datasets()
        for st in DIAGNOSIS_STAGES
    ]


def diagnosis_targets():
    return [
        f"{REP_A}/diagnosis.csv",
        f"{REP_A}/diagnosis.md",
        f"{REP_A}/diagnosis_cells.csv",
    ] + diagnosis_files("figure")


def study_a_targets():
    if not SA_ON:
        return []
    return (
        [f"{REP_A}/{t}.csv" for t in SA_TABLES]
        + [f"{REP_A}/{t}.md" for t in SA_TABLES]
        + [f"{REP_A}/accuracy.png", f"{REP_A}/mitigation.png"]
        + diagnosis_targets()
        + [
            f"{SA_DIR}/shap/{d}/{m}/seed{s}/differences.png"
            for d in sa_datasets()
            for m in sa_models()
            for s in SA["seeds"]
        ]
    )


def report_category(subcategory, caption):
    """report() arguments of a Study A output."""
    return dict(
        caption=f"../report/{caption}.rst", category="Study A", subcategory=subcategory
    )
