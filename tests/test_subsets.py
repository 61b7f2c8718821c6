"""Subset construction: the paper's exact counts, order, checks and the Snakemake job."""

import numpy as np
import pandas as pd
import pytest
from helpers import job

from langskew.errors import LangskewError
from langskew.study_a.subsets import build_subsets, subset_sizes, subsets_job

XNLI_RATIOS = {"en": "1:2:3", "fr": "3:2:1"}
AMAZON_RATIOS = {lang: "5:4:3:2:1" for lang in ("de", "en", "zh")} | {lang: "1:2:3:4:5" for lang in ("es", "fr", "ja")}


def _frame(languages, rows_per_language: int, n_classes: int) -> pd.DataFrame:
    """Rows per language with labels cycling 0..C-1 (so every class has about n/C rows)."""
    labels = np.tile(np.arange(rows_per_language) % n_classes, len(languages))
    return pd.DataFrame({"language": np.repeat(np.array(languages, dtype=object), rows_per_language),
                         "text": "t", "text_pair": None, "label": labels.astype("int64")})


def _count(counts, split, variant, lang):
    sel = counts[(counts.split == split) & (counts.variant == variant) & (counts.language == lang)]
    return sel.sort_values("label")["n"].tolist()


def test_subset_sizes_exact_fractions():
    assert subset_sizes("1:2:3", 392702, 3) == ([43632, 87266, 130899], [87266] * 3)
    assert subset_sizes("5:4:3:2:1", 200000, 5) == ([39999, 31999, 23999, 15999, 7999], [23999] * 5)
    assert subset_sizes("2:4:6", 392702, 3) == subset_sizes("1:2:3", 392702, 3)


def test_xnli_sized_counts_match_paper():
    frames = {"train": _frame(["en", "fr"], 392702, 3), "validation": _frame(["en", "fr"], 2490, 3),
              "test": _frame(["en", "fr"], 5010, 3)}
    subsets, counts = build_subsets(frames, ["en", "fr"], XNLI_RATIOS, 3, {"train": None})
    expected = {"train": ([43632, 87266, 130899], 87266), "validation": ([275, 552, 829], 552),
                "test": ([555, 1112, 1669], 1112)}
    for split, (imb, bal) in expected.items():
        assert _count(counts, split, "imbalanced", "en") == imb
        assert _count(counts, split, "imbalanced", "fr") == imb[::-1]
        for lang in ("en", "fr"):
            assert _count(counts, split, "balanced", lang) == [bal] * 3
    assert len(subsets[("balanced", "test")]) == 6672
    assert _count(counts, "test", "original", "en") == [1670, 1670, 1670]
    for variant in ("balanced", "imbalanced"):
        per_label = subsets[(variant, "train")]["label"].value_counts()
        assert per_label.max() - per_label.min() <= 1  # balanced overall (up to the -1 rounding)
        sub = subsets[(variant, "train")]
        got = sub.groupby(["language", "label"]).size().rename("n").reset_index()
        ref = counts[(counts.split == "train") & (counts.variant == variant)]
        assert got["n"].tolist() == ref.sort_values(["language", "label"])["n"].tolist()


def test_amazon_sized_counts_match_paper():
    langs = list(AMAZON_RATIOS)
    frames = {"train": _frame(langs, 200000, 5), "validation": _frame(langs, 5000, 5),
              "test": _frame(langs, 5000, 5)}
    subsets, counts = build_subsets(frames, langs, AMAZON_RATIOS, 5, None)
    fwd = [39999, 31999, 23999, 15999, 7999]
    for lang in langs:
        order = fwd if AMAZON_RATIOS[lang].startswith("5") else fwd[::-1]
        assert _count(counts, "train", "imbalanced", lang) == order
        assert _count(counts, "train", "balanced", lang) == [23999] * 5
        val = [999, 799, 599, 399, 199]
        assert _count(counts, "validation", "imbalanced", lang) == (val if order is fwd else val[::-1])
        assert _count(counts, "validation", "balanced", lang) == [599] * 5
        assert _count(counts, "test", "original", lang) == [1000] * 5
    train = subsets[("imbalanced", "train")]
    assert (train.groupby("language").size() == 119995).all()
    per_label = train["label"].value_counts()
    assert per_label.max() - per_label.min() <= 1


def test_first_rows_in_original_order():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"language": ["en"] * 40, "text": [f"r{i}" for i in range(40)], "text_pair": None,
                          "label": rng.permutation(np.arange(40) % 3)})
    frames = {s: frame for s in ("train", "validation", "test")}
    subsets, _ = build_subsets(frames, ["en"], {"en": "1:2:3"}, 3, {"train": 18})
    # split size 18: imbalanced N = 1, 3, 5; balanced N = 3 each
    for variant, sizes in (("imbalanced", [1, 3, 5]), ("balanced", [3, 3, 3])):
        taken, expected = {0: 0, 1: 0, 2: 0}, []
        for text, label in zip(frame["text"], frame["label"]):
            if taken[label] < sizes[label]:
                taken[label] += 1
                expected.append(text)
        assert subsets[(variant, "train")]["text"].tolist() == expected


def test_too_few_rows_names_language_and_label_and_reports_all():
    frames = {"train": _frame(["en", "fr"], 300, 3), "validation": _frame(["en", "fr"], 90, 3),
              "test": _frame(["en", "fr"], 90, 3)}
    frames["train"] = frames["train"][~((frames["train"].language == "fr") & (frames["train"].label == 0))]
    with pytest.raises(LangskewError) as err:
        build_subsets(frames, ["en", "fr"], XNLI_RATIOS, 3, {"train": 300})
    msg = str(err.value)
    assert "'fr'" in msg and "label 0" in msg and "needs 99" in msg and "0 available" in msg
    assert "'train'" in msg and msg.count("label 0") >= 2  # both variants reported at once


def test_ratio_with_wrong_number_of_parts():
    frames = {s: _frame(["en"], 30, 3) for s in ("train", "validation", "test")}
    with pytest.raises(LangskewError, match=r"'1:2'.*'en'.*2 parts"):
        build_subsets(frames, ["en"], {"en": "1:2"}, 3, None)
    with pytest.raises(LangskewError, match="'de'"):
        build_subsets(frames, ["en", "de"], {"en": "1:1:1"}, 3, None)


def test_subsets_job_writes_contract(tmp_path):
    frames = {"train": _frame(["en", "fr"], 600, 3), "validation": _frame(["en", "fr"], 90, 3),
              "test": _frame(["en", "fr"], 120, 3)}
    inputs = {}
    for split, df in frames.items():
        inputs[split] = str(tmp_path / f"{split}.parquet")
        df.to_parquet(inputs[split], index=False)
    out = tmp_path / "subsets"
    outputs = {"counts": str(out / "counts.csv"), "class_weights": str(out / "class_weights.csv")}
    outputs |= {f"{v}_{s}": str(out / f"{v}_{s}.parquet") for v in ("balanced", "imbalanced")
                for s in ("train", "validation", "test")}
    subsets_job(job(inputs, outputs), languages=["en", "fr"], ratios=XNLI_RATIOS, n_classes=3,
                split_sizes={"train": None, "validation": None, "test": None},
                labels=["entailment", "neutral", "contradiction"])
    imb = pd.read_parquet(outputs["imbalanced_train"])
    assert list(imb.columns) == list(frames["train"].columns)
    assert imb.groupby(["language", "label"]).size().loc["en"].tolist() == [65, 132, 199]
    counts = pd.read_csv(outputs["counts"])
    assert list(counts.columns) == ["split", "variant", "language", "label", "n"]
    assert set(counts.variant) == {"balanced", "imbalanced", "original"}
    weights = pd.read_csv(outputs["class_weights"])
    assert list(weights.columns) == ["variant", "scheme", "language", "label", "weight"]
    plw = weights.query("variant == 'imbalanced' and scheme == 'per_language' and language == 'en'")
    np.testing.assert_allclose(plw.sort_values("label")["weight"], [396 / 195, 396 / 396, 396 / 597])
    bal = weights.query("variant == 'balanced'")
    np.testing.assert_allclose(bal["weight"], 1.0)
