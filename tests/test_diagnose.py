"""Diagnosis of language-label skew: statistics against scipy / scikit-learn, the rule's job,
and the `langskew diagnose` command on files of every format."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import job, named
from scipy.stats import chi2_contingency
from scipy.stats.contingency import association, expected_freq
from sklearn.metrics import mutual_info_score

from conftest import ROOT
from langskew import cli
from langskew.errors import LangskewError
from langskew import diagnosis as dg
from langskew.study_a.diagnose import diagnose_job, diagnose_report_job
from langskew.weights import class_weights

TABLES = {
    "xnli_imbalanced": np.array([[10, 20, 30], [30, 20, 10]]),
    "three_by_four": np.array([[12, 5, 7, 30], [9, 14, 3, 8], [20, 20, 21, 4]]),
    "two_by_two": np.array([[40, 10], [15, 35]]),
    "with_empty_label": np.array([[10, 0, 5], [7, 0, 9]]),
}


@pytest.mark.parametrize("name", TABLES)
def test_chi_square_and_cramers_v_match_scipy(name):
    table = TABLES[name]
    stat, dof, p = dg.chi_square(table)
    kept = table[:, table.sum(axis=0) > 0]
    ref = chi2_contingency(kept, correction=False)
    assert (stat, dof, p) == pytest.approx((ref.statistic, ref.dof, ref.pvalue))
    assert dg.cramers_v(table, bias_correction=False) == pytest.approx(association(kept, method="cramer"))
    # the bias-corrected V (Bergsma 2013) from the chi-square statistic scipy computes
    n = kept.sum()
    r, k = kept.shape
    phi2 = max(0.0, ref.statistic / n - (r - 1) * (k - 1) / (n - 1))
    r_c, k_c = r - (r - 1) ** 2 / (n - 1), k - (k - 1) ** 2 / (n - 1)
    assert dg.cramers_v(table) == pytest.approx(math.sqrt(phi2 / min(r_c - 1, k_c - 1)))
    assert dg.cramers_v(table) < dg.cramers_v(table, bias_correction=False)


def test_independent_table_has_no_dependence():
    table = np.array([[10, 20, 30], [20, 40, 60]])  # same label shares in both languages
    assert dg.chi_square(table)[0] == pytest.approx(0.0)
    assert dg.cramers_v(table) == 0.0
    assert dg.mutual_information(table)[0] == 0.0
    assert dg.shortcut_gain(table)[2] == pytest.approx(0.0)
    summary, _ = dg.diagnose_table(table, ["en", "fr"], [0, 1, 2])
    assert summary["verdict"] == "none" and summary["max_weight_ratio"] == pytest.approx(3.0)
    assert dg.chi_square(np.array([[5, 6, 7]])) == (0.0, 0, 1.0)  # one language: nothing to test


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mutual_information_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    languages = rng.choice(["en", "fr", "de", "ja"], size=3000)
    shift = {"en": 0.0, "fr": 0.3, "de": 0.6, "ja": 0.1}
    labels = np.array([int(rng.random() < 0.3 + shift[lang]) + int(rng.random() < 0.4) for lang in languages])
    table, _, labs = dg.count_table(languages, labels)
    mi, h = dg.mutual_information(table)
    assert mi == pytest.approx(mutual_info_score(languages, labels), rel=1e-10)
    p = np.bincount(labels) / len(labels)
    assert h == pytest.approx(-(p * np.log(p)).sum())
    summary, _ = dg.diagnose_table(table, ["de", "en", "fr", "ja"], labs)
    assert summary["mi_normalised"] == pytest.approx(mi / h)


def test_shortcut_gain_on_a_constructed_table():
    # en: 10/20/30 (majority "c"), fr: 30/20/10 (majority "a"); overall 40/40/40
    acc_lang, acc_major, gain = dg.shortcut_gain(TABLES["xnli_imbalanced"])
    assert acc_lang == pytest.approx((30 + 30) / 120)
    assert acc_major == pytest.approx(40 / 120)
    assert gain == pytest.approx(0.5 - 1 / 3)
    # a language whose majority is already the overall majority gains nothing
    assert dg.shortcut_gain(np.array([[50, 10], [30, 10]]))[2] == pytest.approx(0.0)


def test_weights_match_the_weighting_module_and_ratio():
    table = TABLES["three_by_four"]
    langs, labels = [], []
    for i, lang in enumerate(["en", "fr", "de"]):
        for c, n in enumerate(table[i]):
            langs += [lang] * int(n)
            labels += [c] * int(n)
    expected = class_weights(labels, langs, 4, "per_language")
    summary, cells = dg.diagnose_table(table, ["en", "fr", "de"], [0, 1, 2, 3])
    for lang, vec in expected.items():
        got = cells[cells["language"] == lang].sort_values("label")["per_language_weight"].to_numpy()
        assert got == pytest.approx(vec)
    ratios = {lang: vec.max() / vec.min() for lang, vec in expected.items()}
    assert summary["max_weight_ratio"] == pytest.approx(max(ratios.values()))
    assert summary["max_weight_ratio_language"] == max(ratios, key=ratios.get)
    # shares within a language sum to one; shares of the total to one overall
    assert cells.groupby("language")["share"].sum().to_numpy() == pytest.approx(1.0)
    assert cells["share_of_total"].sum() == pytest.approx(1.0)


def test_missing_class_is_reported_not_hidden():
    summary, cells = dg.diagnose_table(np.array([[10, 0], [5, 5]]), ["en", "fr"], ["a", "b"])
    assert math.isinf(summary["max_weight_ratio"]) and summary["max_weight_ratio_language"] == "en"
    assert "label 'b' has no rows in language 'en'" in summary["notes"]
    assert cells.loc[(cells.language == "en") & (cells.label == "b"), "per_language_weight"].isna().all()


@pytest.mark.parametrize("table, expected", [
    (np.array([[1000, 2000, 3000], [3000, 2000, 1000]]), "strong"),   # V 0.41, gain 0.17
    (np.array([[5200, 4800], [4800, 5200]]), "none"),                  # V 0.04, gain 0.02
    (np.array([[5600, 4400], [4400, 5600]]), "mild"),                  # V 0.12, gain 0.06
    (np.array([[6, 4], [4, 6]]), "none"),                              # not significant
])
def test_verdict_thresholds(table, expected):
    summary, _ = dg.diagnose_table(table, ["en", "fr"], list(range(table.shape[1])))
    assert summary["verdict"] == expected, summary


def test_count_table_rejects_values_outside_the_order():
    with pytest.raises(LangskewError, match="label 'maybe'"):
        dg.count_table(["en", "fr"], ["spam", "maybe"], label_order=["spam", "ham"])
    table, langs, labs = dg.count_table(["en", "en", "fr"], ["10", "9", "9"], language_order=["fr", "en", "de"])
    assert langs == ["fr", "en", "de"] and labs == ["9", "10"]
    assert table.tolist() == [[1, 0], [1, 1], [0, 0]]


def test_diagnose_job_writes_summary_cells_figure(tmp_path):
    rng = np.random.default_rng(0)
    files = {}
    for variant, shares in (("balanced", {"en": [1, 1, 1], "fr": [1, 1, 1]}),
                            ("imbalanced", {"en": [1, 2, 3], "fr": [3, 2, 1]})):
        for split in ("train", "test"):
            rows = [(lang, c) for lang, parts in shares.items() for c, k in enumerate(parts) for _ in range(40 * k)]
            df = pd.DataFrame(rows, columns=["language", "label"]).sample(frac=1, random_state=int(rng.integers(99)))
            files[f"{variant}_{split}"] = str(tmp_path / f"{variant}_{split}.parquet")
            df.assign(text="x").to_parquet(files[f"{variant}_{split}"])
    out = named(summary=str(tmp_path / "s.csv"), cells=str(tmp_path / "c.csv"), figure=str(tmp_path / "f.png"))
    diagnose_job(job(files, dict(out.items())), dataset="toy", languages=["en", "fr"], labels=["e", "n", "c"])
    summary = pd.read_csv(out.summary).set_index(["variant", "split"])
    assert summary.loc[("balanced", "train"), "verdict"] == "none"
    assert summary.loc[("imbalanced", "test"), "verdict"] == "strong"
    assert summary.loc[("imbalanced", "train"), "shortcut_gain"] == pytest.approx(0.5 - 1 / 3)
    cells = pd.read_csv(out.cells)
    assert set(cells["label_name"]) == {"e", "n", "c"} and len(cells) == 4 * 6
    assert Path(out.figure).stat().st_size > 1000
    fig = dg.heatmap_figure(cells, ["variant", "split"], panel_notes={("imbalanced", "train"): "strong"})
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "imbalanced / train\nstrong" in titles and "balanced / test" in titles
    md_out = named(csv=str(tmp_path / "d.csv"), md=str(tmp_path / "d.md"), cells=str(tmp_path / "dc.csv"))
    diagnose_report_job(job({"summary": [out.summary], "cells": [out.cells]}, dict(md_out.items())))
    md = Path(md_out.md).read_text()
    assert "| toy" in md and "strong" in md and "Label shares per language: toy / imbalanced / train" in md


# --- the command ------------------------------------------------------------------------------

def _user_frame() -> pd.DataFrame:
    """Four languages, string labels; en and de skewed in opposite directions."""
    rows = []
    for lang, (spam, ham) in {"en": (70, 30), "de": (30, 70), "fr": (50, 50), "es": (50, 50)}.items():
        rows += [(f"{lang} text {i}", "spam" if i < spam else "ham", lang) for i in range(spam + ham)]
    return pd.DataFrame(rows, columns=["body", "category", "lang"])


def _write(df: pd.DataFrame, path: Path) -> Path:
    {".csv": lambda: df.to_csv(path, index=False), ".tsv": lambda: df.to_csv(path, index=False, sep="\t"),
     ".jsonl": lambda: df.to_json(path, orient="records", lines=True),
     ".parquet": lambda: df.to_parquet(path, index=False)}[path.suffix]()
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_command_reads_every_format_with_the_rules_numbers(tmp_path, suffix):
    df = _user_frame()
    path = _write(df, tmp_path / f"data{suffix}")
    summary, cells = cli.diagnose_file(path, "body", "category", "lang")
    table = np.array([[30, 70], [70, 30], [50, 50], [50, 50]])  # de, en, es, fr x ham, spam
    expected, _ = dg.diagnose_table(table, ["de", "en", "es", "fr"], ["ham", "spam"])
    for key in ("chi2", "cramers_v", "mutual_information", "shortcut_gain", "max_weight_ratio", "verdict"):
        assert summary[key].iloc[0] == pytest.approx(expected[key]) if key != "verdict" else \
            summary[key].iloc[0] == expected[key]
    assert sorted(cells["language"].unique()) == ["de", "en", "es", "fr"]


def test_command_line_formats(tmp_path):
    path = _write(_user_frame(), tmp_path / "data.csv")
    base = [sys.executable, "-m", "langskew.cli", "diagnose", str(path), "--text-col", "body",
            "--label-col", "category", "--language-col", "lang"]
    md = subprocess.run(base, capture_output=True, text=True, check=True).stdout
    assert md.startswith("# Language-label skew of data.csv") and "| all" in md and "spam" in md
    csv = subprocess.run(base + ["--format", "csv"], capture_output=True, text=True, check=True).stdout
    row = pd.read_csv(__import__("io").StringIO(csv)).iloc[0]
    assert row["n"] == 400 and row["verdict"] in {"mild", "strong"}
    doc = json.loads(subprocess.run(base + ["--format", "json"], capture_output=True, text=True, check=True).stdout)
    assert doc["summary"][0]["n_languages"] == 4 and len(doc["cells"]) == 8


def test_command_names_a_missing_column(tmp_path, capsys):
    path = _write(_user_frame(), tmp_path / "data.parquet")
    assert cli.main(["diagnose", str(path), "--text-col", "body", "--label-col", "label",
                     "--language-col", "lang"]) == 2
    err = capsys.readouterr().err
    assert "no column 'label' (--label-col)" in err and "body, category, lang" in err


def test_command_names_an_empty_language(tmp_path):
    df = _user_frame()
    df.loc[[3, 250], "lang"] = ""
    path = _write(df, tmp_path / "data.csv")
    with pytest.raises(LangskewError, match=r"column 'lang': 2 rows have an empty language \(data rows 4, 251\)"):
        cli.diagnose_file(path, "body", "category", "lang")
    with pytest.raises(LangskewError, match="language 'ja' .* has no rows"):
        cli.diagnose_file(_write(_user_frame(), tmp_path / "ok.csv"), "body", "category", "lang",
                          languages=["en", "ja"])


def test_command_per_split(tmp_path):
    df = _user_frame()
    df["split"] = np.where(np.arange(len(df)) % 4 == 0, "test", "train")
    df.loc[0, "body"] = " "
    summary, _ = cli.diagnose_file(_write(df, tmp_path / "d.jsonl"), "body", "category", "lang", split_col="split")
    assert summary.set_index("split")["n"].to_dict() == {"test": 100, "train": 300}
    assert summary.set_index("split").loc["test", "empty_texts"] == 1


def test_console_script_is_registered():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, func = scripts["langskew"].split(":")
    assert module == "langskew.cli" and callable(getattr(cli, func))


def test_expected_frequencies_are_what_chi_square_compares():
    # sanity of the constructed table: the statistic is sum (O - E)^2 / E with E from the margins
    t = TABLES["three_by_four"]
    e = expected_freq(t)
    assert dg.chi_square(t)[0] == pytest.approx(((t - e) ** 2 / e).sum())


def test_jsonl_with_mixed_label_types(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"t": "a", "y": 1, "g": "en"}\n{"t": "b", "y": "2", "g": "fr"}\n{"t": "c", "y": 1, "g": "fr"}\n')
    summary, cells = cli.diagnose_file(path, "t", "y", "g")
    assert summary["n"].iloc[0] == 3 and sorted(cells["label"].unique()) == ["1", "2"]


def test_markdown_ends_with_a_valid_mitigation_run_on_the_users_file(tmp_path):
    """The closing overlay, with the two placeholder files filled in, is a valid config over
    config.yaml whose imbalanced ratios are the file's own counts per language."""
    import re

    import yaml

    from langskew.config import load_config, merge, validate_config

    path = _write(_user_frame(), tmp_path / "data.csv")
    md = subprocess.run([sys.executable, "-m", "langskew.cli", "diagnose", str(path), "--text-col", "body",
                         "--label-col", "category", "--language-col", "lang"],
                        capture_output=True, text=True, check=True).stdout
    assert "snakemake --cores all --configfile my_data.yaml" in md.rsplit("## Next", 1)[1]
    overlay = yaml.safe_load(re.search(r"```yaml\n(.*?)```", md, re.S).group(1))
    ds = overlay["datasets"]["my_data"]
    assert ds["ratios"] == {"de": "70:30", "en": "30:70", "es": "50:50", "fr": "50:50"}  # ham:spam counts
    assert ds["labels"] == ["ham", "spam"] and ds["local"]["train"] == str(path)
    ds["local"].update(validation=str(path), test=str(path))
    base = load_config(Path(__file__).parents[1] / "config.yaml", validate=False)
    cfg = validate_config(merge(base, overlay))
    conds = cfg["study_a"]["conditions"]
    assert {"imbalanced", "imbalanced_group_dro", "imbalanced_logit_adjustment"} <= set(conds)
