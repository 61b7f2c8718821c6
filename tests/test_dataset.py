"""Dataset sources -> the normalised contract: hub (offline, hub-style folders), local, synthetic."""

import json
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pandas as pd
import pytest

from helpers import job, streaming_datasets_left, write_hub_style_dataset
from hub_fixtures import per_language_parquet_repo, script_only_repo
from langskew.errors import LangskewError
from langskew.study_a.dataset import dataset_job, prepare_dataset

SPLITS = ("train", "validation", "test")


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def _xnli_frame(lang: str, n: int) -> pd.DataFrame:
    return pd.DataFrame({"premise": [f"{lang} premise {i}" for i in range(n)],
                         "hypothesis": [f"{lang} hypothesis {i}" for i in range(n)],
                         "label": np.arange(n) % 3})


def _amazon_frame(lang: str, n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"{lang}_{i:07d}" for i in range(n)], "text": [f"title\n\n{lang} body {i}" for i in range(n)],
                         "label": (np.arange(n) * 2) % 5, "label_text": "x"})


def _xnli_spec(path, **over):
    spec = {"source": "hub", "task": "pair", "languages": ["en", "fr"],
            "labels": ["entailment", "neutral", "contradiction"],
            "hub": {"path": str(path), "name": "{language}", "revision": None,
                    "splits": {"train": "train", "validation": "validation", "test": "test"}},
            "columns": {"text": "premise", "text_pair": "hypothesis", "label": "label", "language": None},
            "label_map": None}
    spec.update(over)
    return spec


def test_hub_xnli_schema(tmp_path):
    root = write_hub_style_dataset(tmp_path / "xnli", {
        lang: {s: _xnli_frame(lang, n) for s, n in zip(SPLITS, (9, 4, 5))} for lang in ("en", "fr", "de")})
    meta = prepare_dataset("xnli", _xnli_spec(root), tmp_path / "out")
    train = pd.read_parquet(tmp_path / "out" / "train.parquet")
    assert list(train.columns) == ["id", "language", "text", "text_pair", "label"]
    assert train["language"].tolist() == ["en"] * 9 + ["fr"] * 9
    assert train["text"].iloc[10] == "fr premise 1" and train["text_pair"].iloc[10] == "fr hypothesis 1"
    assert train["id"].iloc[10] == "fr-train-1" and train["id"].is_unique
    assert train["label"].dtype == np.int64 and train["label"].tolist()[:4] == [0, 1, 2, 0]
    assert len(pd.read_parquet(tmp_path / "out" / "test.parquet")) == 10
    on_disk = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert on_disk == meta
    assert meta["dataset"] == "xnli" and meta["task"] == "pair" and meta["informative_tokens"] is None
    assert meta["labels"] == ["entailment", "neutral", "contradiction"]


def test_hub_amazon_mirror_schema(tmp_path):
    root = write_hub_style_dataset(tmp_path / "amazon", {
        lang: {s: _amazon_frame(lang, 10) for s in SPLITS} for lang in ("de", "ja")})
    spec = _xnli_spec(root, task="single", languages=["ja", "de"], labels=["1", "2", "3", "4", "5"],
                      columns={"text": "text", "text_pair": None, "label": "label", "language": None})
    prepare_dataset("amazon", spec, tmp_path / "out")
    test = pd.read_parquet(tmp_path / "out" / "test.parquet")
    assert test["language"].tolist()[:1] == ["ja"] and test["text_pair"].isna().all()
    assert test["label"].tolist()[:5] == [0, 2, 4, 1, 3]


def test_hub_single_config_with_language_column(tmp_path):
    frame = pd.DataFrame({"sentence": list("abcdefgh"), "lang": ["en", "ja", "fr", "en", "fr", "ja", "en", "fr"],
                          "gold": ["pos", "neg", "neg", "neg", "pos", "pos", "pos", "neg"]})
    root = write_hub_style_dataset(tmp_path / "mixed", {"default": {s: frame for s in SPLITS}})
    spec = _xnli_spec(root, task="single", labels=["neg", "pos"], label_map={"neg": 0, "pos": 1},
                      columns={"text": "sentence", "label": "gold", "language": "lang"})
    spec["hub"]["name"] = None
    prepare_dataset("mixed", spec, tmp_path / "out")
    train = pd.read_parquet(tmp_path / "out" / "train.parquet")
    assert train["text"].tolist() == list("acdegh")  # ja dropped, original order kept
    assert train["label"].tolist() == [1, 0, 0, 1, 1, 0]
    assert train["id"].tolist() == ["en-train-0", "fr-train-0", "en-train-1", "fr-train-1", "en-train-2", "fr-train-2"]


def test_hub_errors_name_the_problem(tmp_path):
    root = write_hub_style_dataset(tmp_path / "xnli", {
        "en": {s: _xnli_frame("en", 6) for s in SPLITS},
        "fr": {s: _xnli_frame("fr", 6) for s in ("train", "validation")}})
    with pytest.raises(LangskewError, match="split 'test'"):
        prepare_dataset("xnli", _xnli_spec(root), tmp_path / "out")
    with pytest.raises(LangskewError, match="config 'de'"):
        prepare_dataset("xnli", _xnli_spec(root, languages=["en", "de"]), tmp_path / "out")
    columns = {"text": "premise", "text_pair": "hypo", "label": "label", "language": None}
    with pytest.raises(LangskewError, match=r"'xnli'.*column 'hypo'"):
        prepare_dataset("xnli", _xnli_spec(root, languages=["en"], columns=columns), tmp_path / "out")
    with pytest.raises(LangskewError, match=r"unknown label\(s\): '2' \(2 rows\)"):
        prepare_dataset("xnli", _xnli_spec(root, languages=["en"], labels=["a", "b"]), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _local_spec(paths, **over):
    spec = {"source": "local", "task": "pair", "languages": ["en", "fr"], "labels": ["e", "n", "c"],
            "columns": {"text": "p", "text_pair": "h", "label": "y", "language": "lang"},
            "label_map": {"entailment": 0, "neutral": 1, "contradiction": 2}, "local": paths}
    spec.update(over)
    return spec


def _local_frame(n: int) -> pd.DataFrame:
    names = ["entailment", "neutral", "contradiction"]
    return pd.DataFrame({"p": [f"p{i}" for i in range(n)], "h": [f"h{i}" for i in range(n)],
                         "y": [names[i % 3] for i in range(n)],
                         "lang": [["en", "fr", "es"][i % 3] for i in range(n)]})


def test_local_csv_jsonl_parquet(tmp_path):
    frame = _local_frame(12)
    paths = {"train": tmp_path / "train.csv", "validation": tmp_path / "val.jsonl", "test": tmp_path / "test.parquet"}
    frame.to_csv(paths["train"], index=False)
    frame.to_json(paths["validation"], orient="records", lines=True)
    frame.to_parquet(paths["test"], index=False)
    prepare_dataset("mine", _local_spec({k: str(v) for k, v in paths.items()}), tmp_path / "out")
    for split in SPLITS:
        df = pd.read_parquet(tmp_path / "out" / f"{split}.parquet")
        assert df["text"].tolist() == ["p0", "p1", "p3", "p4", "p6", "p7", "p9", "p10"]
        assert df["label"].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
        assert df["language"].tolist() == ["en", "fr"] * 4


def test_local_single_language_without_language_column(tmp_path):
    frame = pd.DataFrame({"review": ["good", "bad", "ok"], "stars": [4, 0, 2]})
    paths = {s: str(tmp_path / f"{s}.csv") for s in SPLITS}
    for p in paths.values():
        frame.to_csv(p, index=False)
    spec = _local_spec(paths, task="single", languages=["sw"], labels=list("12345"), label_map=None,
                       columns={"text": "review", "label": "stars", "language": None})
    prepare_dataset("sw", spec, tmp_path / "out")
    df = pd.read_parquet(tmp_path / "out" / "validation.parquet")
    assert df["id"].tolist() == ["sw-validation-0", "sw-validation-1", "sw-validation-2"]
    assert df["label"].tolist() == [4, 0, 2] and df["text_pair"].isna().all()


def test_local_errors_name_the_problem(tmp_path):
    frame = _local_frame(9)
    paths = {s: str(tmp_path / f"{s}.csv") for s in SPLITS}
    for p in paths.values():
        frame.to_csv(p, index=False)
    with pytest.raises(LangskewError, match="language 'de' has no rows"):
        prepare_dataset("mine", _local_spec(paths, languages=["en", "de"]), tmp_path / "out")
    with pytest.raises(LangskewError, match=r"train\.csv.*column 'lang'"):
        prepare_dataset("mine", _without_language_column(paths), tmp_path / "out")
    for p in paths.values():
        frame.to_csv(p, index=False)
    with pytest.raises(LangskewError, match=r"'neutral' \(3 rows\)"):
        prepare_dataset("mine", _local_spec(paths, label_map={"entailment": 0, "contradiction": 2}), tmp_path / "out")
    with pytest.raises(LangskewError, match=r"local\.test"):
        prepare_dataset("mine", _local_spec({"train": paths["train"], "validation": paths["validation"]}),
                        tmp_path / "out")
    with pytest.raises(LangskewError, match="columns.language"):
        prepare_dataset("mine", _local_spec(paths, columns={"text": "p", "text_pair": "h", "label": "y"}),
                        tmp_path / "out")


def _without_language_column(paths):
    """A spec whose train file lacks the configured language column."""
    _local_frame(9).drop(columns="lang").to_csv(paths["train"], index=False)
    return _local_spec(paths)


def test_synthetic_source_and_job(tmp_path):
    spec = {"source": "synthetic", "task": "single", "languages": ["en", "xx"], "labels": list("12345"),
            "synthetic": {"n_per_label": {"train": 8, "validation": 2, "test": 3}, "label_noise": 0.0}}
    out = tmp_path / "data" / "toy"
    output = SimpleNamespace(meta=str(out / "meta.json"), **{s: str(out / f"{s}.parquet") for s in SPLITS})
    meta = dataset_job(job({}, vars(output)), spec=spec, name="toy", seed=1)
    train = pd.read_parquet(output.train)
    assert len(train) == 2 * 5 * 8 and train["id"].is_unique
    assert train["id"].iloc[0] == "en-train-0"
    assert set(meta["informative_tokens"]) == {"en", "xx"}
    assert json.loads((out / "meta.json").read_text())["informative_tokens"] == meta["informative_tokens"]
    again = prepare_dataset("toy", spec, tmp_path / "again", seed=1)
    pd.testing.assert_frame_equal(train, pd.read_parquet(tmp_path / "again" / "train.parquet"))
    assert again["informative_tokens"] == meta["informative_tokens"]


# --- layouts of today's hub -------------------------------------------------------------------

def _marc_frame(lang: str, n: int) -> pd.DataFrame:
    """mteb/AmazonReviewsClassification columns: text (title, blank line, body) and label 0..4."""
    return pd.DataFrame({"text": [f"{lang} title {i}\n\n{lang} body {i}" for i in range(n)],
                         "label": np.arange(n) % 5})


def _amazon_spec(root, **over):
    spec = _xnli_spec(root, task="single", languages=["de", "en", "es", "fr", "ja", "zh"],
                      labels=["1", "2", "3", "4", "5"],
                      columns={"text": "text", "text_pair": None, "label": "label", "language": None})
    spec["hub"].update(over)
    return spec


def test_amazon_parquet_copy_with_per_language_configs(tmp_path):
    langs = ["de", "en", "es", "fr", "ja", "zh"]
    root = per_language_parquet_repo(tmp_path / "AmazonReviewsClassification",
                                     {lang: {s: _marc_frame(lang, 10) for s in SPLITS} for lang in langs})
    meta = prepare_dataset("amazon", _amazon_spec(root), tmp_path / "out")
    test = pd.read_parquet(tmp_path / "out" / "test.parquet")
    assert meta["rows"]["test"] == {lang: 10 for lang in langs}
    assert test["label"].tolist()[:6] == [0, 1, 2, 3, 4, 0]  # stars - 1, taken as class indices
    assert test["text"].iloc[0] == "de title 0\n\nde body 0"  # title and body, as the copy has them
    # the same repo read file by file (data_files) and as a stream gives the same rows
    streamed = _amazon_spec(root, streaming=True, data_files={s: f"{{language}}/{s}-*.parquet" for s in SPLITS},
                            name="{language}")
    _, alive = streaming_datasets_left("langskew.study_a.dataset.prepare_dataset", "amazon", streamed,
                                       tmp_path / "streamed")
    assert alive == 0  # each streamed split is freed once read (a job's exit would free it otherwise)
    pd.testing.assert_frame_equal(test, pd.read_parquet(tmp_path / "streamed" / "test.parquet"))


def test_amazon_review_body_alone_from_the_parquet_copy(tmp_path):
    """The copy's text is title + blank line + body; strip_title keeps the body (the authors' review_body)."""
    langs = ["de", "en", "es", "fr", "ja", "zh"]
    frames = {lang: {s: _marc_frame(lang, 10) for s in SPLITS} for lang in langs}
    frames["en"]["test"].loc[1, "text"] = "Great!\n\nWorks well.\n\nWould buy again."  # a body with a blank line
    frames["en"]["test"].loc[2, "text"] = "\n\nNo title here"  # an empty title
    root = per_language_parquet_repo(tmp_path / "AmazonReviewsClassification", frames)
    spec = dict(_amazon_spec(root), strip_title="\n\n")
    prepare_dataset("amazon", spec, tmp_path / "out")
    test = pd.read_parquet(tmp_path / "out" / "test.parquet").set_index("id")
    assert test.loc["de-test-0", "text"] == "de body 0"
    assert test.loc["en-test-1", "text"] == "Works well.\n\nWould buy again."
    assert test.loc["en-test-2", "text"] == "No title here"
    assert test.loc["zh-test-9", "text"] == "zh body 9"


def test_strip_title_without_a_separator_is_a_named_error(tmp_path):
    frames = {lang: {s: _marc_frame(lang, 4) for s in SPLITS} for lang in ("de", "en", "es", "fr", "ja", "zh")}
    frames["fr"]["validation"].loc[[1, 3], "text"] = ["just a body", "another body"]
    root = per_language_parquet_repo(tmp_path / "AmazonReviewsClassification", frames)
    with pytest.raises(LangskewError, match=r"config 'fr', split 'validation'.*strip_title: 2 of 4 texts have no "
                                            r"title separator '\\n\\n' \(first: 'just a body'\)"):
        prepare_dataset("amazon", dict(_amazon_spec(root), strip_title="\n\n"), tmp_path / "out")
    with pytest.raises(LangskewError, match="strip_title '' must be a non-empty"):
        prepare_dataset("amazon", dict(_amazon_spec(root), strip_title=""), tmp_path / "out")
    spec = _amazon_spec(root, name="{language}")
    spec.update(strip_title="\n\n", columns=dict(spec["columns"], text="review_body"))
    with pytest.raises(LangskewError, match="column 'review_body' missing"):
        prepare_dataset("amazon", spec, tmp_path / "out")


def test_paper_config_reads_the_amazon_review_body():
    from langskew.config import dataset_source_spec, load_config

    cfg = load_config(Path(__file__).parents[1] / "config.yaml")
    assert dataset_source_spec(cfg, "amazon")["strip_title"] == "\n\n"
    assert dataset_source_spec(cfg, "xnli")["strip_title"] is None


def test_script_only_repo_names_the_dataset_and_the_parquet_copy(tmp_path):
    root = script_only_repo(tmp_path / "amazon_reviews_multi", "amazon_reviews_multi")
    with pytest.raises(LangskewError, match=r"dataset 'amazon'.*only a loading script.*mteb/AmazonReviewsClassification"):
        prepare_dataset("amazon", _amazon_spec(root), tmp_path / "out")


def test_missing_hub_dataset_is_a_named_error(tmp_path):
    with pytest.raises(LangskewError, match=r"dataset .amazon..*nobody/no-such-dataset.*snakemake prefetch"):
        prepare_dataset("amazon", _amazon_spec("nobody/no-such-dataset"), tmp_path / "out")


def _named_label_files(tmp_path, labels):
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(len(labels))], "y": labels})
    paths = {s: str(tmp_path / f"{s}.csv") for s in SPLITS}
    for p in paths.values():
        frame.to_csv(p, index=False)
    return paths


def _named_spec(paths, **over):
    spec = {"source": "local", "task": "single", "languages": ["en"], "labels": ["spam", "ham"],
            "columns": {"text": "text", "label": "y", "language": None}, "local": paths}
    spec.update(over)
    return spec


def test_label_names_map_to_their_index_without_label_map(tmp_path):
    paths = _named_label_files(tmp_path, ["ham", "spam", "ham", "spam", "spam"])
    prepare_dataset("mail", _named_spec(paths), tmp_path / "out")
    assert pd.read_parquet(tmp_path / "out" / "train.parquet")["label"].tolist() == [1, 0, 1, 0, 0]


def test_unknown_labels_are_listed_with_counts_or_dropped(tmp_path, caplog):
    paths = _named_label_files(tmp_path, ["ham", "eggs", "spam", "eggs", "bacon", "ham"])
    with pytest.raises(LangskewError, match=r"2 unknown label\(s\): 'eggs' \(2 rows\), 'bacon' \(1 rows\)"):
        prepare_dataset("mail", _named_spec(paths), tmp_path / "out")
    with caplog.at_level("WARNING"):
        prepare_dataset("mail", _named_spec(paths, drop_unknown_labels=True), tmp_path / "out")
    train = pd.read_parquet(tmp_path / "out" / "train.parquet")
    assert train["text"].tolist() == ["t0", "t2", "t5"] and train["label"].tolist() == [1, 0, 1]
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert any("dropped 2 rows with unknown label 'eggs'" in m for m in dropped)
    assert any("dropped 1 rows with unknown label 'bacon'" in m for m in dropped)


def test_hub_error_kinds_get_their_advice():
    from datasets.exceptions import DatasetNotFoundError

    from langskew.hub import explain_hub_error

    err = explain_hub_error(DatasetNotFoundError("Dataset 'x/y' doesn't exist on the Hub"), "dataset 'd'", "x/y")
    assert "dataset 'd'" in str(err) and "no dataset 'x/y'" in str(err) and "HF_TOKEN" in str(err)
    err = explain_hub_error(RuntimeError("Dataset scripts are no longer supported, but found amazon_reviews_multi.py"),
                            "dataset 'amazon'", "mteb/amazon_reviews_multi")
    assert "only a loading script" in str(err) and "mteb/AmazonReviewsClassification" in str(err)
    err = explain_hub_error(ConnectionError("Couldn't reach 'a/b' on the Hub (ConnectTimeout)"), "dataset 'd'", "a/b")
    assert "snakemake prefetch" in str(err)
