"""`snakemake prefetch` against local hub-style folders, then the data jobs with the hub offline."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from helpers import build_tiny_encoder
from hub_fixtures import per_language_parquet_repo, sharded_parquet_repo, split_shards_repo, translation_repo
from langskew import prefetch

SPLITS = ("train", "validation", "test")


def _reviews(lang, n=12):
    return pd.DataFrame({"text": [f"{lang} title {i}\n\n{lang} body {i}" for i in range(n)], "label": np.arange(n) % 5})


@pytest.fixture(scope="module")
def hub_folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("hub")
    amazon = per_language_parquet_repo(d / "AmazonReviewsClassification",
                                       {lang: {s: _reviews(lang) for s in SPLITS} for lang in ("en", "fr")})
    gutenberg = split_shards_repo(d / "project_gutenberg", {lang: [pd.DataFrame({
        "id": [f"{lang}{s}-{i}" for i in range(35)], "text": [f"Book {s}-{i} in {lang}. The end." for i in range(35)]})
        for s in range(2)] for lang in ("de", "en")})
    books = sharded_parquet_repo(d / "French-PD-Books", [pd.DataFrame({
        "complete_text": [f"Livre {s}-{i}. Il était une fois." for i in range(30)]}) for s in range(3)])
    europarl = translation_repo(d / "europarl", [[(f"Sentence {i}.", f"Phrase {i}.") for i in range(40)]])
    encoder = build_tiny_encoder(d / "encoder", num_labels=5)
    overlay = d / "overlay.yaml"
    overlay.write_text(f"""
datasets:
  amazon_hub:
    source: hub
    task: single
    languages: [en, fr]
    labels: ["1", "2", "3", "4", "5"]
    ratios: {{en: "5:4:3:2:1", fr: "1:2:3:4:5"}}
    hub: {{path: {amazon}, name: "{{language}}"}}
    columns: {{text: text, label: label}}
models:
  enc: {{source: hub, path: {encoder}, resources: {{gpu: 0}}}}
study_a:
  datasets: [amazon_hub]
  models: [enc]
  shap: {{classes: {{amazon_hub: [0, 4]}}}}
study_b:
  languages:
    en: {{source: hub, hub: {{path: {gutenberg}}}, test_fraction: 0.1}}  # the paper's en settings otherwise
    fr: {{source: hub, hub: {{path: {books}, text_column: complete_text, splits: {{train: train, test: null}},
                              shards: 2, streaming: true}}, test_fraction: 0.1}}
  eval: {{n_parallel: 1, parallel_min_len: 4}}
  parallel:
    source: hub
    n_pairs: 16
    hub: {{path: {europarl}, name: en-fr, columns: {{en: translation.en, fr: translation.fr}},
           data_files: "en-fr/*.parquet", shards: 1, streaming: true}}
""")
    return d, overlay


def _snakemake(*args, env):
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def test_hub_items_of_the_paper_configuration():
    from langskew.config import load_config

    cfg = load_config(ROOT / "config.yaml")
    items = {(i["kind"], i["name"]): i["path"] for i in prefetch.hub_items(cfg)}
    assert items == {("study_a_dataset", "xnli"): "facebook/xnli",
                     ("study_a_dataset", "amazon"): "mteb/AmazonReviewsClassification",
                     ("model", "mbert"): "google-bert/bert-base-multilingual-cased",
                     ("model", "xlmr"): "FacebookAI/xlm-roberta-base",
                     ("study_b_corpus", "en"): "manu/project_gutenberg",
                     ("study_b_corpus", "fr"): "PleIAs/French-PD-Books",
                     ("study_b_parallel", "parallel"): "Helsinki-NLP/europarl"}
    for section in (cfg["datasets"]["xnli"]["hub"], cfg["datasets"]["amazon"]["hub"], cfg["models"]["mbert"],
                    cfg["models"]["xlmr"], cfg["study_b"]["languages"]["en"]["hub"], cfg["study_b"]["parallel"]["hub"]):
        assert section["revision"]  # every hub item names its revision explicitly


def test_prefetch_then_offline_jobs(hub_folders, tmp_path):
    d, overlay = hub_folders
    home = tmp_path / "hf-home"
    conf = ["--configfile", "presets/demo.yaml", str(overlay), "--config", f"outdir={tmp_path}/results",
            f"checkpoint_dir={tmp_path}/ckpt"]
    login = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
             "PYTHONUNBUFFERED": "1"}
    login.pop("HF_DATASETS_CACHE", None)
    login.pop("HF_HUB_CACHE", None)
    out = _snakemake("prefetch", "--cores", "1", *conf, env=login)
    assert f"HF_DATASETS_CACHE = {home / 'datasets'}" in out and f"HF_HUB_CACHE = {home / 'hub'}" in out
    table = pd.read_csv(tmp_path / "results" / "prefetch" / "hub.csv")
    assert sorted(zip(table["kind"], table["name"])) == [
        ("model", "enc"), ("study_a_dataset", "amazon_hub"), ("study_b_corpus", "en"), ("study_b_corpus", "fr"),
        ("study_b_parallel", "parallel")]
    assert table.set_index("name").loc["amazon_hub", "fetched"].count("12 rows") == 6  # 2 configs x 3 splits
    prepared = list((home / "datasets").rglob("*.arrow"))
    assert any("amazon" in str(p).lower() for p in prepared)  # the split the job will ask for is prepared

    offline = {**login, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    # the parallel corpus is read until n_parallel packed sequences exist, so it needs the corpora's tokenizers
    _snakemake("--cores", "1", *conf, "--until", "study_a_dataset", "study_b_parallel_corpus", env=offline)
    test = pd.read_parquet(tmp_path / "results" / "study_a" / "data" / "amazon_hub" / "test.parquet")
    assert len(test) == 24 and test["label"].max() == 4
    en = pd.concat(pd.read_parquet(tmp_path / "results" / "study_b" / "corpus" / "en" / f"{split}.parquet")
                   for split in ("train", "test"))
    assert len(en) == 70 and en["text"].str.endswith("in en. The end.").all()  # the English shards only
    fr = pd.read_parquet(tmp_path / "results" / "study_b" / "corpus" / "fr" / "train.parquet")
    assert fr["text"].str.startswith(("Livre 0-", "Livre 1-")).all()  # only the two chosen shards
    pairs = pd.read_parquet(tmp_path / "results" / "study_b" / "corpus" / "parallel.parquet")
    assert len(pairs) == 16 and pairs.iloc[0].tolist() == ["Sentence 0.", "Phrase 0."]
