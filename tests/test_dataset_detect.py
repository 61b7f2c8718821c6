"""Study A on data without a language column: `columns.language: null` with `detect_language:
true` (a local source and a hub source, offline): the dataset job writes the detected language
and what detection found, the diagnosis reads it, the config refuses what cannot work, and the
workflow plans the whole study on such data (dry run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from helpers import job, rejected
from test_diagnose_detect import POS_SHARE, skewed_frame
from test_langid import KNOWN

from conftest import ROOT
from langskew.diagnosis import diagnose
from langskew.errors import LangskewError
from langskew.study_a.dataset import dataset_job, load_dataset_frames
from langskew.study_a.diagnose import diagnose_job

LANGS = ["en", "fr", "de", "ja"]  # ru, also in the files, is not configured


def _spec(files: dict[str, str], **extra) -> dict:
    return {"source": "local", "task": "single", "languages": LANGS, "labels": ["neg", "pos"],
            "local": files, "columns": {"text": "review", "text_pair": None, "label": "stars", "language": None},
            "detect_language": True, **extra}


@pytest.fixture
def local_files(tmp_path):
    files = {}
    for i, split in enumerate(("train", "validation", "test")):
        path = tmp_path / f"{split}.csv"
        skewed_frame(seed=i).to_csv(path, index=False)
        files[split] = str(path)
    return files


def test_dataset_job_writes_the_detected_language_and_the_diagnosis_reads_it(tmp_path, local_files):
    out = tmp_path / "data"
    meta = dataset_job(job(output={"meta": str(out / "meta.json")}), name="reviews", spec=_spec(local_files), seed=0)
    train = pd.read_parquet(out / "train.parquet")
    truth = skewed_frame(seed=0)
    expected = truth[truth["true_lang"].isin(LANGS)]
    assert list(train["language"]) == list(expected["true_lang"])  # row order kept, ru dropped
    assert list(train["text"]) == list(expected["review"])
    detection = json.loads((out / "meta.json").read_text())["language_detection"]
    assert detection == meta["language_detection"]
    assert detection["train"]["detected"] == {lang: 60 for lang in POS_SHARE}
    assert detection["train"]["kept"] == 240 and detection["train"]["pair_disagreements"] is None
    # the diagnosis job on the normalised file equals a diagnosis with the true column
    outputs = {"summary": str(tmp_path / "s.csv"), "cells": str(tmp_path / "c.csv"), "figure": str(tmp_path / "f.png")}
    diagnose_job(job({"original_train": str(out / "train.parquet")}, outputs), dataset="reviews",
                 languages=LANGS, labels=["neg", "pos"])
    summary = pd.read_csv(outputs["summary"]).iloc[0]
    true = diagnose(expected, text_col="review", label_col="stars", language_col="true_lang").statistics
    assert summary["verdict"] == true["verdict"] == "strong"
    assert summary["chi2"] == pytest.approx(true["chi2"]) and summary["n"] == 240


def test_pairs_detect_from_the_first_text(tmp_path, local_files):
    files = {}
    for split, path in local_files.items():
        df = pd.read_csv(path)
        df["hypothesis"] = df["review"]
        df.loc[:2, "hypothesis"] = KNOWN["zh"][0]
        files[split] = str(tmp_path / f"pair_{split}.parquet")
        df.to_parquet(files[split])
    spec = _spec(files, task="pair")
    spec["columns"]["text_pair"] = "hypothesis"
    frames, meta = load_dataset_frames("pairs", spec)
    assert meta["language_detection"]["test"]["pair_disagreements"] == 3
    assert set(frames["test"]["language"]) == set(LANGS)


def test_without_detection_several_languages_need_a_column(local_files):
    spec = _spec(local_files, detect_language=False)
    with pytest.raises(LangskewError, match=r"need columns.language \(or detect_language: true\)"):
        load_dataset_frames("reviews", spec)
    spec = _spec(local_files)
    spec["columns"]["language"] = "true_lang"
    with pytest.raises(LangskewError, match="detect_language needs a hub or local source with columns.language: null"):
        load_dataset_frames("reviews", spec)


def test_config_checks_detect_language(demo_raw):
    msg = rejected(demo_raw, lambda c: c["datasets"]["synth_nli"].update(detect_language=True))
    assert "datasets.synth_nli.detect_language" in msg and "columns.language: null" in msg
    msg = rejected(demo_raw, lambda c: c["datasets"]["synth_nli"].update(detect_language="yes"))
    assert "detect_language" in msg


def test_hub_source_detects_offline_from_the_hub_cache(tmp_path):
    from hub_fixtures import hub_cache_repo, per_language_parquet_repo

    splits = {s: skewed_frame(seed=i) for i, s in enumerate(("train", "validation", "test"))}
    repo = per_language_parquet_repo(tmp_path / "repo", {"default": splits})
    hub_cache_repo(tmp_path / "hub", "org/reviews", repo)
    spec = {"source": "hub", "task": "single", "languages": LANGS, "labels": ["neg", "pos"],
            "hub": {"path": "org/reviews", "name": None},
            "columns": {"text": "review", "text_pair": None, "label": "stars", "language": None},
            "detect_language": True}
    code = ("import json\nfrom langskew.study_a.dataset import load_dataset_frames\n"
            f"frames, meta = load_dataset_frames('reviews', {spec!r})\n"
            "print(json.dumps({s: f['language'].value_counts().to_dict() for s, f in frames.items()}))")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "datasets"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {s: {lang: 60 for lang in LANGS} for s in splits}


def test_dry_run_plans_study_a_on_detected_languages(tmp_path, local_files):
    overlay = {"datasets": {"reviews": {**_spec(local_files), "ratios": {lang: "1:1" for lang in LANGS},
                                        "split_sizes": {"train": None, "validation": None, "test": None},
                                        "probe_test": "original", "report_tests": ["original"]}},
               "study_a": {"datasets": ["reviews"]}, "study_b": {"enabled": False}}
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "presets/demo.yaml",
                           str(path), "--config", f"outdir={tmp_path}/r"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "study_a_dataset" in proc.stdout and "study_a_diagnose" in proc.stdout
    assert f"{tmp_path}/r/study_a/data/reviews/meta.json" in proc.stdout
