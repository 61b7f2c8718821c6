"""Bad input, named and harmless.

Every case below is a mistake a user can make in a config or a data file. Config mistakes
(and files that are missing, empty, unreadable or lack a column) stop the workflow while
Snakemake reads the Snakefile, before any job runs; mistakes inside a file's rows stop the
first job that reads it. Either way the message names the key, file or column, and the
results of an earlier successful run are left untouched.
"""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from langskew.config import load_config, validate_config, dataset_source_spec
from langskew.errors import LangskewError
from langskew.study_a.dataset import prepare_dataset
from langskew.study_b import grid as sbgrid

PAPER = ROOT / "config.yaml"
DEMO = ROOT / "presets" / "demo.yaml"


# --- a valid config with a local dataset, the base every case breaks ---------------------------
def write_local_dataset(folder: Path, fmt: str = "csv") -> dict[str, str]:
    """Train/validation/test tables of a 2-label, 2-language single-text task."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in [("train", 60), ("validation", 30), ("test", 30)]:
        rows = [{"text": f"{lang} text {i}", "label": i % 2, "language": lang} for lang in ("en", "fr") for i in range(n)]
        path = folder / f"{split}.{fmt}"
        df = pd.DataFrame(rows)
        df.to_parquet(path, index=False) if fmt == "parquet" else df.to_csv(path, index=False)
        paths[split] = str(path)
    return paths


@pytest.fixture
def base(tmp_path):
    """The demo configuration plus a dataset 'mine' read from local files (valid as it is)."""
    cfg = load_config(PAPER, DEMO, validate=False)
    cfg["datasets"]["mine"] = {
        "source": "local", "task": "single", "languages": ["en", "fr"], "labels": ["neg", "pos"],
        "ratios": {"en": "1:2", "fr": "2:1"}, "columns": {"language": "language"},
        "local": write_local_dataset(tmp_path / "data"),
    }
    cfg["study_a"]["datasets"] = ["synth_nli", "mine"]
    cfg["outdir"] = str(tmp_path / "results")
    return cfg


def parse_time_checks(cfg: dict) -> None:
    """What the Snakefile runs while it is read: config validation, then the Study B grid."""
    validate_config(cfg)
    if cfg["study_b"]["enabled"]:
        sbgrid.expand_runs(cfg["study_b"])


def test_the_base_config_is_valid(base):
    parse_time_checks(copy.deepcopy(base))


# --- config cases: (id, change, words the message must contain) --------------------------------
def _set(path: str, value):
    """A change that sets a dotted key (list indices as numbers)."""
    def change(cfg, tmp_path):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return change


def _drop(path: str):
    def change(cfg, tmp_path):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        del node[last]
    return change


def _both(*changes):
    def change(cfg, tmp_path):
        for c in changes:
            c(cfg, tmp_path)
    return change


def _local_file(split: str, write):
    """Replace one split's file of dataset 'mine' by what ``write(path)`` makes."""
    def change(cfg, tmp_path):
        path = tmp_path / "bad" / Path(cfg["datasets"]["mine"]["local"][split]).name
        path.parent.mkdir(exist_ok=True)
        write(path)
        cfg["datasets"]["mine"]["local"][split] = str(path)
    return change


def _csv(df):
    return lambda path: df.to_csv(path, index=False)


def _corrupt_parquet(path):
    pd.DataFrame({"text": ["a"], "label": [0], "language": ["en"]}).to_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + b"\x00garbage" * 8)


def _as_parquet(change_file):
    def change(cfg, tmp_path):
        cfg["datasets"]["mine"]["local"] = write_local_dataset(tmp_path / "pq", "parquet")
        change_file(cfg, tmp_path)
    return change


MISSING = "/nonexistent/langskew/file.csv"

CONFIG_CASES = [
    # wrong types
    ("type-outdir", _set("outdir", 5), ["'outdir'", "not of type 'string'"]),
    ("type-finetune-lr", _set("study_a.finetune.lr_head", "fast"), ["study_a.finetune.lr_head"]),
    ("type-seeds", _set("study_a.seeds", ["zero"]), ["study_a.seeds.0"]),
    ("type-labels", _set("datasets.mine.labels", "neg,pos"), ["datasets.mine.labels"]),
    ("type-study-b-context", _set("study_b.train.context", "long"), ["study_b.train.context"]),
    ("type-tensorboard", _set("tensorboard", "yes"), ["'tensorboard'"]),
    # unknown keys, at every level
    ("unknown-top", _set("outdri", "x"), ["'outdri'"]),
    ("unknown-dataset-key", _set("datasets.mine.sorce", "local"), ["datasets.mine", "'sorce'"]),
    ("unknown-synthetic-key", _set("datasets.synth_nli.synthetic.n_per_labl", 3), ["datasets.synth_nli.synthetic", "'n_per_labl'"]),
    ("unknown-columns-key", _set("datasets.mine.columns.txt", "text"), ["datasets.mine.columns", "'txt'"]),
    ("unknown-model-key", _set("models.tiny_bert.tiny.layers", 3), ["models.tiny_bert.tiny", "'layers'"]),
    ("unknown-study-a-key", _set("study_a.seed", 1), ["study_a", "'seed'"]),
    ("unknown-dataset-override", _set("datasets.mine.finetune", {"epoch": 2}), ["datasets.mine.finetune.epoch"]),
    ("unknown-study-b-key", _set("study_b.steps", 5), ["study_b", "'steps'"]),
    ("unknown-study-b-train-key", _set("study_b.train.lr_max", 1.0), ["study_b.train", "'lr_max'"]),
    ("unknown-size-key", _set("study_b.sizes.tiny.layers", 2), ["study_b.sizes.tiny", "'layers'"]),
    ("unknown-size-train-key", _set("study_b.sizes.tiny.train", {"batchsize": 4}), ["study_b.sizes.tiny.train", "'batchsize'"]),
    ("unknown-grid-key", _set("study_b.grid.0.p_l3", [0.5]), ["study_b.grid.0", "'p_l3'"]),
    ("unknown-study-b-language-key", _set("study_b.languages.en.synthetic.docs", 5), ["study_b.languages.en.synthetic", "'docs'"]),
    # unknown names
    ("unknown-source", _set("datasets.mine.source", "ftp"), ["datasets.mine.source", "'ftp'"]),
    ("unknown-study-b-source", _set("study_b.languages.en.source", "ftp"), ["study_b.languages.en.source", "'ftp'"]),
    ("unknown-model-source", _set("models.tiny_bert.source", "zoo"), ["models.tiny_bert.source", "'zoo'"]),
    ("unknown-dataset", _set("study_a.datasets", ["mine", "sst2"]), ["study_a.datasets", "'sst2'"]),
    ("unknown-model", _set("study_a.models", ["tiny_bert", "gpt9"]), ["study_a.models", "'gpt9'"]),
    ("unknown-ratio-language", _set("datasets.mine.ratios.de", "1:1"), ["datasets.mine.ratios.de", "'de'"]),
    ("unknown-hub-language", _both(_set("study_a.datasets", ["xnli"]), _set("datasets.xnli.languages", ["en", "xx"]),
                                   _set("datasets.xnli.ratios.xx", "1:1:1")), ["datasets.xnli.languages", "'xx'"]),
    ("unknown-label-index", _set("study_a.shap.classes.mine", [0, 7]), ["study_a.shap.classes.mine", "7"]),
    ("unknown-label-map-target", _set("datasets.mine.label_map", {"bad": 0, "good": 5}), ["datasets.mine.label_map.good", "5"]),
    ("unknown-condition", _set("study_a.shap.compare", ["oversampled"]), ["study_a.shap", "'oversampled'"]),
    ("unknown-size", _set("study_b.grid.0.sizes", ["huge"]), ["'huge'", "study_b.sizes"]),
    ("unknown-default-size", _both(_drop("study_b.grid.0.sizes"), _set("study_b.default_size", "huge")),
     ["study_b.default_size", "'huge'"]),
    ("unknown-vocab-mode", _set("study_b.grid.2.vocab_modes", ["shared"]), ["study_b.grid.2.vocab_modes", "'shared'"]),
    ("unknown-grid-language", _set("study_b.grid.2.base_languages", ["en", "de"]), ["'de'", "study_b.languages"]),
    ("unknown-block-kind", _set("study_b.grid.0.kind", "twin"), ["study_b.grid.0.kind", "'twin'"]),
    # ratios that do not match the labels
    ("ratio-parts", _set("datasets.mine.ratios.en", "1:2:3"), ["datasets.mine.ratios.en", "2 labels"]),
    ("ratio-zero", _set("datasets.synth_nli.ratios.fr", "3:0:1"), ["datasets.synth_nli.ratios.fr"]),
    ("ratio-missing", _drop("datasets.mine.ratios.fr"), ["datasets.mine.ratios", "'fr'"]),
    ("ratio-text", _set("datasets.mine.ratios.en", "half"), ["datasets.mine.ratios.en"]),
    # empty, zero and negative sizes
    ("empty-languages", _set("datasets.mine.languages", []), ["datasets.mine.languages"]),
    ("empty-study-b-languages", _set("study_b.languages", {}), ["study_b.languages"]),
    ("zero-epochs", _set("study_a.finetune.epochs", 0), ["study_a.finetune.epochs"]),
    ("negative-batch", _set("study_a.finetune.batch_size", -8), ["study_a.finetune.batch_size"]),
    ("zero-split-size", _set("datasets.mine.split_sizes", {"train": 0}), ["datasets.mine.split_sizes.train"]),
    ("zero-n-per-label", _set("datasets.synth_nli.synthetic.n_per_label.test", 0), ["datasets.synth_nli.synthetic.n_per_label.test"]),
    ("zero-base-steps", _set("study_b.train.base_steps", 0), ["study_b.train.base_steps"]),
    ("negative-d-model", _set("study_b.sizes.tiny.d_model", -64), ["study_b.sizes.tiny.d_model"]),
    ("negative-runtime", _set("models.tiny_bert.resources.runtime", -5), ["models.tiny_bert.resources.runtime"]),
    ("zero-scale", _set("study_b.grid.0.scales", [0]), ["study_b.grid.0.scales.0"]),
    # files and folders named by the config
    ("missing-file", _set("datasets.mine.local.validation", MISSING), ["datasets.mine.local.validation", MISSING, "does not exist"]),
    ("empty-file", _local_file("train", lambda p: p.write_text("")), ["datasets.mine.local.train", "is empty"]),
    ("column-missing", _local_file("test", _csv(pd.DataFrame({"text": ["a"], "language": ["en"]}))),
     ["datasets.mine.local.test", "no column 'label'"]),
    ("language-column-missing", _local_file("train", _csv(pd.DataFrame({"text": ["a"], "label": [0]}))),
     ["datasets.mine.local.train", "no column 'language'"]),
    ("corrupt-parquet", _as_parquet(_local_file("train", _corrupt_parquet)), ["datasets.mine.local.train", "cannot be read"]),
    ("parquet-column-missing", _as_parquet(_local_file("validation", lambda p: pd.DataFrame({"txt": ["a"]}).to_parquet(p))),
     ["datasets.mine.local.validation", "no column 'text'"]),
    ("unknown-format", _set("datasets.mine.local.train", str(ROOT / "README.md")), ["datasets.mine.local.train", "unknown format"]),
    ("model-path", _both(_set("study_a.models", ["mbert"]), _set("models.mbert.path", "/nonexistent/models/mbert")),
     ["models.mbert.path", "/nonexistent/models/mbert", "does not exist"]),
    ("study-b-local-file", _set("study_b.languages.en", {"source": "local", "local": {"train": [MISSING]}}),
     ["study_b.languages.en.local.train[0]", MISSING]),
]


@pytest.mark.parametrize("change, expected", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_named_before_any_job(base, tmp_path, change, expected):
    cfg = copy.deepcopy(base)
    change(cfg, tmp_path)
    with pytest.raises(LangskewError) as err:
        parse_time_checks(cfg)
    for words in expected:
        assert words in str(err.value), f"{words!r} not in: {err.value}"


def test_there_are_enough_cases():
    assert len(CONFIG_CASES) + len(FILE_CONTENT_CASES) >= 30


# --- file contents: stop in the first job (study_a_dataset), naming file and column -------------
FILE_CONTENT_CASES = [
    ("empty-language", "validation", lambda df: df[df["language"] != "fr"], ["'fr'", "no rows", "'validation'"]),
    ("label-out-of-range", "train", lambda df: df.assign(label=df["label"] + 5), ["train.csv", "unknown label", "'5'"]),
    ("unknown-label-name", "test", lambda df: df.assign(label="maybe"), ["test.csv", "label"]),
    ("only-header", "test", lambda df: df.iloc[:0], ["'en'", "no rows", "'test'"]),
]


@pytest.mark.parametrize("split, edit, expected", [c[1:] for c in FILE_CONTENT_CASES], ids=[c[0] for c in FILE_CONTENT_CASES])
def test_bad_rows_stop_the_first_job(base, tmp_path, split, edit, expected):
    cfg = copy.deepcopy(base)
    path = Path(cfg["datasets"]["mine"]["local"][split])
    edit(pd.read_csv(path)).to_csv(path, index=False)
    validate_config(cfg)  # header and columns are fine: nothing to see before the job
    out = tmp_path / "results" / "study_a" / "data" / "mine"
    with pytest.raises(LangskewError) as err:
        prepare_dataset("mine", dataset_source_spec(cfg, "mine"), out)
    for words in expected:
        assert words in str(err.value), f"{words!r} not in: {err.value}"
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


# --- through Snakemake: nothing runs, and earlier results stay -----------------------------------
def snakemake(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _configfile(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


SNAKEMAKE_CASES = ["unknown-dataset-key", "unknown-size", "ratio-parts", "corrupt-parquet", "model-path"]


@pytest.mark.parametrize("case", SNAKEMAKE_CASES)
def test_snakemake_stops_before_any_job(base, tmp_path, case):
    _, change, expected = next(c for c in CONFIG_CASES if c[0] == case)
    cfg = copy.deepcopy(base)
    change(cfg, tmp_path)
    proc = snakemake("--cores", "1", "--configfile", str(_configfile(cfg, tmp_path / "bad.yaml")))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for words in expected:
        assert words in out, f"{words!r} not in:\n{out[-3000:]}"
    assert not Path(cfg["outdir"]).exists()  # not a single job ran


def _snapshot(folder: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_failing_runs_leave_earlier_results_untouched(base, tmp_path):
    """A successful run of the data steps; then (1) a run whose file became unusable stops before
    any job, and (2) a run that adds a dataset with bad rows fails in that dataset's first job.
    Every result of the successful run is unchanged (content and timestamps)."""
    cfg = copy.deepcopy(base)
    target = f"{cfg['outdir']}/study_a/subsets/mine/counts.csv"
    ok = snakemake("--cores", "1", "--configfile", str(_configfile(cfg, tmp_path / "good.yaml")), "--", target)
    assert ok.returncode == 0, ok.stderr[-3000:]
    results = Path(cfg["outdir"])
    before = _snapshot(results)
    assert len([p for p in before if "study_a" in p.parts]) >= 12  # 3 splits + meta, 6 subsets, counts, weights

    # (1) the train file is now empty: stopped while the Snakefile is read
    broken = copy.deepcopy(cfg)
    empty = tmp_path / "empty_train.csv"
    empty.write_text("")
    broken["datasets"]["mine"]["local"]["train"] = str(empty)
    proc = snakemake("--cores", "1", "--configfile", str(_configfile(broken, tmp_path / "b1.yaml")), "--", target)
    assert proc.returncode != 0 and "datasets.mine.local.train" in proc.stdout + proc.stderr
    assert _snapshot(results) == before

    # (2) a second dataset whose validation file has no French rows: its first job fails
    added = copy.deepcopy(cfg)
    files = write_local_dataset(tmp_path / "data2")
    df = pd.read_csv(files["validation"])
    df[df["language"] == "en"].to_csv(files["validation"], index=False)
    added["datasets"]["mine2"] = {**copy.deepcopy(cfg["datasets"]["mine"]), "local": files}
    added["study_a"]["datasets"] = ["synth_nli", "mine", "mine2"]
    proc = snakemake("--cores", "1", "--configfile", str(_configfile(added, tmp_path / "b2.yaml")), "--",
                     target, target.replace("/mine/", "/mine2/"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "dataset 'mine2': language 'fr' has no rows in split 'validation'" in out
    assert _snapshot(results / "study_a" / "subsets" / "mine") == {
        p: v for p, v in before.items() if p.is_relative_to(results / "study_a" / "subsets" / "mine")}
    assert {p: v for p, v in _snapshot(results).items() if p in before} == before
    assert not (results / "study_a" / "data" / "mine2" / "train.parquet").exists()
