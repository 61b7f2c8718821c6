"""`snakemake prefetch` against local hub-style folders, then the data jobs with the hub offline;
and the offline jobs reading hub ids from a hub cache laid out as huggingface_hub writes it."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from helpers import build_tiny_encoder
from hub_fixtures import (hub_cache_repo, per_language_parquet_repo, sharded_parquet_repo, split_shards_repo,
                          translation_repo)
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


# --- offline, from a hub cache laid out as snapshot_download leaves it ------------------------
@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """A hub cache holding what a prefetch of chosen shards leaves: 2 of 3 shards of 'org/books'
    downloaded, the listing of all 3 cached; this process reads it offline."""
    from huggingface_hub import constants

    books = sharded_parquet_repo(tmp_path / "remote" / "books", [pd.DataFrame({
        "complete_text": [f"Livre {s}-{i}." for i in range(5)]}) for s in range(3)])
    cache = tmp_path / "hf-home" / "hub"
    commit = hub_cache_repo(cache, "org/books", books, downloaded=["data/train-00000-*", "data/train-00001-*"])
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache, commit


def test_the_cache_layout_is_the_one_huggingface_hub_reads(hub_cache):
    from huggingface_hub import get_cached_repo_tree, scan_cache_dir

    cache, commit = hub_cache
    (repo,) = scan_cache_dir(cache).repos
    assert (repo.repo_id, repo.repo_type, repo.nb_files) == ("org/books", "dataset", 2)
    (revision,) = repo.revisions
    assert revision.commit_hash == commit and revision.refs == {"main"}
    assert len([f for f in get_cached_repo_tree("org/books", repo_type="dataset") if f.path.endswith(".parquet")]) == 3


@pytest.mark.parametrize("revision", [None, "commit"])
def test_offline_shards_are_chosen_from_the_cached_listing(hub_cache, revision):
    from langskew import hub

    cache, commit = hub_cache
    files = hub.resolve_data_files("org/books", commit if revision else None, None, 2, "test corpus")
    assert [Path(f).name for f in files] == ["train-00000-of-00003.parquet", "train-00001-of-00003.parquet"]
    assert all(Path(f).is_relative_to(cache / "datasets--org--books" / "snapshots" / commit) for f in files)
    assert pd.read_parquet(files[1])["complete_text"].iloc[0] == "Livre 1-0."


def test_offline_shard_missing_from_the_cache_says_prefetch(hub_cache):
    from langskew import hub
    from langskew.errors import LangskewError

    with pytest.raises(LangskewError, match="prefetch") as err:
        hub.resolve_data_files("org/books", None, None, 3, "test corpus")
    assert "test corpus" in str(err.value)


def test_offline_jobs_read_the_hub_cache(tmp_path):
    """The data and model jobs with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 and hub ids: Study B
    corpora and parallel data through hub.resolve_data_files' cache branch, the Study A encoder
    through from_pretrained; the ids exist only in the hub cache."""
    remote = tmp_path / "remote"  # what the hub serves
    stories = per_language_parquet_repo(remote / "stories", {"default": {
        "train": pd.DataFrame({"text": [f"Story {i}. The end." for i in range(60)]}),
        "validation": pd.DataFrame({"text": [f"Held-out story {i}." for i in range(10)]})}})
    books = sharded_parquet_repo(remote / "books", [pd.DataFrame({
        "complete_text": [f"Livre {s}-{i}. Il était une fois." for i in range(30)]}) for s in range(3)])
    europarl = translation_repo(remote / "europarl", [[(f"Sentence {s}-{i}.", f"Phrase {s}-{i}.") for i in range(40)]
                                                      for s in range(2)])
    encoder = build_tiny_encoder(remote / "encoder", num_labels=3)
    home = tmp_path / "hf-home"
    cache = home / "hub"
    stories_commit = hub_cache_repo(cache, "org/stories", stories, downloaded=["default/train-*"])
    hub_cache_repo(cache, "org/books", books, downloaded=["data/train-00000-*", "data/train-00001-*"])
    hub_cache_repo(cache, "org/europarl", europarl, downloaded=["en-fr/train-00000-*"])
    hub_cache_repo(cache, "org/tiny-encoder", encoder, repo_type="model")
    overlay = tmp_path / "overlay.yaml"
    # en names its commit (a pinned revision); fr and the parallel data follow refs/main
    overlay.write_text(f"""
models:
  enc: {{source: hub, path: org/tiny-encoder, resources: {{gpu: 0}}}}
study_a:
  datasets: [synth_nli]
  models: [enc]
study_b:
  languages:
    # a stories set has no book ids: the paper's Gutenberg id column is switched off
    en: {{source: hub, test_fraction: 0.1, hub: {{path: org/stories, revision: {stories_commit}, id_column: null,
         data_files: "default/train-*.parquet", splits: {{train: train, test: null}}}}}}
    fr: {{source: hub, test_fraction: 0.1, hub: {{path: org/books, revision: null, text_column: complete_text,
         splits: {{train: train, test: null}}, shards: 2, streaming: true}}}}
  eval: {{n_parallel: 1, parallel_min_len: 4}}
  parallel:
    source: hub
    n_pairs: 16
    hub: {{path: org/europarl, revision: null, name: en-fr, columns: {{en: translation.en, fr: translation.fr}},
          data_files: "en-fr/*.parquet", shards: 1, streaming: true}}
""")
    conf = ["--configfile", "presets/demo.yaml", str(overlay), "--config", f"outdir={tmp_path}/results",
            f"checkpoint_dir={tmp_path}/ckpt"]
    offline = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for key in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        offline.pop(key, None)
    # the parallel corpus is read until n_parallel packed sequences exist: it needs the corpora's tokenizers
    _snakemake("--cores", "1", *conf, "--until", "study_a_probe_base", "study_b_parallel_corpus",
               env=offline)
    res = tmp_path / "results"
    en = pd.concat(pd.read_parquet(res / "study_b" / "corpus" / "en" / f"{s}.parquet") for s in ("train", "test"))
    assert sorted(en["text"]) == sorted(f"Story {i}. The end." for i in range(60))  # train files only
    fr = pd.read_parquet(res / "study_b" / "corpus" / "fr" / "train.parquet")
    assert fr["text"].str.startswith(("Livre 0-", "Livre 1-")).all() and len(fr) > 30  # the two cached shards
    pairs = pd.read_parquet(res / "study_b" / "corpus" / "parallel.parquet")
    assert len(pairs) == 16 and pairs.iloc[0].tolist() == ["Sentence 0-0.", "Phrase 0-0."]
    base = pd.read_csv(res / "study_a" / "probe" / "synth_nli" / "enc" / "base.csv")
    assert len(base) and base.filter(like="acc").notna().all().all()
