"""`langskew diagnose` and langskew.diagnose without a language column: detection on texts whose
language is known, the verdict against the one from the true column on the same rows, the
report of what detection found and dropped, pairs, DataFrame / Dataset / hub input, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import datasets
import numpy as np
import pandas as pd
import pytest
from hub_fixtures import hub_cache_repo, per_language_parquet_repo
from test_langid import KNOWN

import langskew
from langskew import cli
from langskew.diagnosis import Diagnosis, diagnose
from langskew.errors import LangskewError

#: share of label "pos" per language: en and fr skewed opposite ways, the rest balanced
POS_SHARE = {"en": 0.8, "fr": 0.2, "de": 0.5, "ja": 0.5, "ru": 0.5}


def skewed_frame(rows_per_language: int = 60, seed: int = 0) -> pd.DataFrame:
    """Known-language sentences with a language-dependent label, and the true language column."""
    rng = np.random.default_rng(seed)
    rows = []
    for lang, share in POS_SHARE.items():
        for i in range(rows_per_language):
            label = "pos" if i < share * rows_per_language else "neg"
            rows.append({"review": KNOWN[lang][int(rng.integers(2))], "stars": label, "true_lang": lang})
    return pd.DataFrame(rows).sample(frac=1, random_state=seed).reset_index(drop=True)


def test_verdict_from_detected_languages_equals_the_one_from_the_true_column():
    df = skewed_frame()
    detected = diagnose(df, text_col="review", label_col="stars")
    true = diagnose(df, text_col="review", label_col="stars", language_col="true_lang")
    assert detected.verdict == true.verdict == "strong"
    for key in ("n", "chi2", "cramers_v", "mutual_information", "shortcut_gain", "max_weight_ratio"):
        assert detected.statistics[key] == pytest.approx(true.statistics[key])
    pd.testing.assert_frame_equal(detected.per_language, true.per_language)
    assert detected.detection["detected"] == {lang: 60 for lang in POS_SHARE}
    assert true.detection is None and detected.dropped == {}


def test_library_takes_a_dataset_and_a_dataset_dict_and_is_exported_at_the_top():
    df = skewed_frame()
    ds = datasets.Dataset.from_pandas(df)
    result = langskew.diagnose(ds, text_col="review", label_col="stars")
    assert isinstance(result, Diagnosis) and result.verdict == "strong"
    splits = datasets.DatasetDict({"train": ds.select(range(200)), "test": ds.select(range(200, 300))})
    per_split = diagnose(splits, text_col="review", label_col="stars", language_col="true_lang")
    assert per_split.summary.set_index("split")["n"].to_dict() == {"train": 200, "test": 100}
    md = result.to_markdown("My data")
    assert md.startswith("# My data\n") and "languages detected with fastText lid.176.ftz" in md
    assert "| en " in md and "Label shares per language" in md


def test_restriction_rare_languages_and_empty_texts_are_counted_and_named():
    df = skewed_frame()
    extra = pd.DataFrame({"review": [KNOWN["es"][0]] * 3 + [KNOWN["it"][0]] * 12 + ["", "  ?! "],
                          "stars": ["pos", "neg", "pos"] + ["pos", "neg"] * 6 + ["pos", "neg"]})
    df = pd.concat([df, extra], ignore_index=True)
    result = diagnose(df, text_col="review", label_col="stars", languages=["en", "fr", "de", "ja", "es", "it"])
    assert result.dropped == {
        "no detectable language (empty text)": 2,
        "detected as 'ru', not in the languages asked for": 60,
        "detected in a language with fewer than min_rows=10 rows ('es' 3)": 3,
    }
    assert result.statistics["n"] == len(df) - 65
    assert sorted(result.per_language["language"]) == ["de", "en", "fr", "it", "ja"]
    md = result.to_markdown()
    assert "Dropped 60 rows: detected as 'ru', not in the languages asked for." in md
    assert "Dropped 3 rows: detected in a language with fewer than min_rows=10 rows ('es' 3)." in md
    kept = diagnose(df, text_col="review", label_col="stars", min_rows=2)
    assert "es" in set(kept.cells["language"]) and len(kept.dropped) == 1
    column = diagnose(df.iloc[:-2].assign(lang=lambda d: d["review"].map(
        {s: lang for lang, sents in KNOWN.items() for s in sents})), text_col="review", label_col="stars",
        language_col="lang", min_rows=20)
    assert column.dropped == {"of a language with fewer than min_rows=20 rows ('it' 12, 'es' 3)": 15}
    assert "es" not in set(column.cells["language"])


def test_pairs_first_text_decides_and_disagreements_are_counted():
    df = skewed_frame(30)
    df["hypothesis"] = df["review"]
    df.loc[:4, "hypothesis"] = KNOWN["zh"][0]  # five rows whose second text is Chinese
    result = diagnose(df, text_col="review", text_pair_col="hypothesis", label_col="stars")
    assert result.detection["pair_disagreements"] == 5
    assert "zh" not in set(result.cells["language"])
    assert "5 rows whose two texts were detected in different languages" in result.to_markdown()


def test_low_confidence_share_is_reported():
    df = skewed_frame(30)
    df.loc[:9, "review"] = "ok"  # ten texts too short to identify with confidence
    result = diagnose(df, text_col="review", label_col="stars", min_confidence=0.99, min_rows=1)
    from langskew.langid import detect_languages

    _, confidence = detect_languages(df["review"])
    assert result.detection["low_confidence_share"] == pytest.approx(np.mean(confidence < 0.99))
    assert 0 < result.detection["low_confidence_share"] < 1


@pytest.mark.parametrize(("change", "message"), [
    (lambda df: df.assign(stars="pos"), r"label column 'stars' has one value \('pos'\) in all 300 rows"),
    (lambda df: df.assign(review=""), "no rows left after language detection: 300 no detectable language"),
    (lambda df: df.iloc[:0], "the data has no rows"),
])
def test_bad_input_is_named(change, message):
    with pytest.raises(LangskewError, match=message):
        diagnose(change(skewed_frame()), text_col="review", label_col="stars")


def test_command_detects_and_says_so(tmp_path):
    path = tmp_path / "reviews.csv"
    skewed_frame().to_csv(path, index=False)
    base = [sys.executable, "-m", "langskew.cli", "diagnose", str(path), "--text-col", "review", "--label-col", "stars"]
    md = subprocess.run(base + ["--languages", "en,fr,de,ja"], capture_output=True, text=True, check=True).stdout
    assert "No language column: languages detected with fastText lid.176.ftz" in md
    assert "en 60, fr 60, de 60, ja 60, ru 60" in md or "ru 60" in md
    assert "Dropped 60 rows: detected as 'ru', not in the languages asked for." in md
    assert "% of rows detected with confidence below 0.5" in md
    assert "detect_language: true" in md  # the overlay has the workflow detect too
    proc = subprocess.run(base + ["--format", "json"], capture_output=True, text=True, check=True)
    doc = json.loads(proc.stdout)
    assert doc["detection"]["detected"]["ru"] == 60 and doc["summary"][0]["verdict"] == "strong"
    assert "languages detected" in proc.stderr


def test_command_reads_a_hub_dataset_offline_from_the_cache(tmp_path):
    df = skewed_frame()
    repo = per_language_parquet_repo(tmp_path / "repo", {"default": {"train": df.iloc[:200], "test": df.iloc[200:]}})
    hub_cache_repo(tmp_path / "hub", "org/reviews", repo)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "datasets"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    import os

    env = {**os.environ, **env}
    base = [sys.executable, "-m", "langskew.cli", "diagnose", "org/reviews", "--text-col", "review",
            "--label-col", "stars", "--format", "csv"]
    proc = subprocess.run(base + ["--split", "test"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = pd.read_csv(__import__("io").StringIO(proc.stdout)).iloc[0]
    expected = diagnose(df.iloc[200:], text_col="review", label_col="stars").statistics
    assert row["n"] == 100 and row["chi2"] == pytest.approx(expected["chi2"])
    both = subprocess.run(base + ["--language-col", "true_lang"], capture_output=True, text=True, env=env)
    assert both.returncode == 0, both.stderr[-3000:]
    assert sorted(pd.read_csv(__import__("io").StringIO(both.stdout))["split"]) == ["test", "train"]
    missing = subprocess.run(base[:4] + ["org/absent"] + base[5:], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and missing.stdout == ""
    assert "'org/absent' is not in the local cache" in missing.stderr


def test_command_refuses_hub_options_for_a_file(tmp_path, capsys):
    path = tmp_path / "reviews.parquet"
    skewed_frame().to_parquet(path)
    assert cli.main(["diagnose", str(path), "--text-col", "review", "--label-col", "stars", "--split", "train"]) == 2
    assert "--config and --split are for a hub dataset id" in capsys.readouterr().err


def test_closing_overlay_without_a_language_column_is_a_valid_detecting_config(tmp_path):
    import copy

    from conftest import ROOT
    from langskew.config import load_config, merge, validate_config
    from langskew.diagnosis import mitigation_command

    path = tmp_path / "reviews.csv"
    skewed_frame().to_csv(path, index=False)
    result = diagnose(pd.read_csv(path), text_col="review", label_col="stars")
    md = mitigation_command(result.cells, str(path), "review", "stars", None)
    import re

    import yaml

    overlay = yaml.safe_load(re.search(r"```yaml\n(.*?)```", md, re.S).group(1))
    ds = overlay["datasets"]["my_data"]
    assert ds["detect_language"] is True and ds["columns"]["language"] is None
    assert ds["ratios"]["en"] == "12:48" and ds["ratios"]["fr"] == "48:12"  # neg:pos counts detected
    ds["local"].update(validation=str(path), test=str(path))
    base = load_config(ROOT / "config.yaml", validate=False)
    cfg = validate_config(merge(copy.deepcopy(base), overlay))
    assert cfg["datasets"]["my_data"]["detect_language"] is True


def test_output_file_is_written_whole_and_kept_on_bad_input(tmp_path):
    data = tmp_path / "reviews.csv"
    skewed_frame().to_csv(data, index=False)
    report = tmp_path / "report.md"
    args = ["diagnose", str(data), "--text-col", "review", "--label-col", "stars", "--output", str(report)]
    assert cli.main(args) == 0
    first = report.read_text()
    assert first.startswith("# Language-label skew of reviews.csv") and "## Next" in first
    skewed_frame().assign(stars="pos").to_csv(data, index=False)  # now one label only
    assert cli.main(args) == 2
    assert report.read_text() == first  # the earlier report is kept
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []
