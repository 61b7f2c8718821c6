"""Synthetic data: schema, determinism, per-language vocabularies, soft cues, and the effect."""

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from langskew.errors import LangskewError
from langskew.study_a.subsets import build_subsets
from langskew.study_a.synthetic import SHARED_DIGITS, SHARED_NAMES, SHARED_PUNCT, generate_synthetic
from langskew.weights import class_weights, example_weights

SIZES = {"train": 20, "validation": 5, "test": 6}
SHARED = set(SHARED_DIGITS + SHARED_NAMES + SHARED_PUNCT)


def _tokens(df: pd.DataFrame) -> list[list[str]]:
    pairs = df["text_pair"].fillna("")
    return [f"{a} {b}".split() for a, b in zip(df["text"], pairs)]


@pytest.mark.parametrize("task,n_labels", [("pair", 3), ("single", 5)])
def test_schema_counts_and_lengths(task, n_labels):
    frames, meta = generate_synthetic(task, ["en", "xx"], [str(i) for i in range(n_labels)], SIZES, seed=3)
    assert set(frames) == {"train", "validation", "test"}
    for split, df in frames.items():
        assert list(df.columns) == ["id", "language", "text", "text_pair", "label"]
        assert df["label"].dtype == np.int64 and df["id"].is_unique
        sizes = df.groupby(["language", "label"]).size()
        assert (sizes == SIZES[split]).all() and len(sizes) == 2 * n_labels
    train = frames["train"]
    if task == "pair":
        premise = train["text"].str.split().str.len()
        hypothesis = train["text_pair"].str.split().str.len()
        assert premise.between(8, 14).all() and hypothesis.between(5, 9).all()
    else:
        assert train["text_pair"].isna().all()
        assert train["text"].str.split().str.len().between(10, 25).all()
    assert set(meta["informative_tokens"]) == {"en", "xx"}
    assert sorted(set(meta["informative_tokens"]["xx"].values())) == list(range(n_labels))


def test_deterministic_by_seed():
    a, meta_a = generate_synthetic("pair", ["en", "fr"], ["e", "n", "c"], SIZES, seed=7)
    b, meta_b = generate_synthetic("pair", ["en", "fr"], ["e", "n", "c"], SIZES, seed=7)
    c, _ = generate_synthetic("pair", ["en", "fr"], ["e", "n", "c"], SIZES, seed=8)
    for split in SIZES:
        pd.testing.assert_frame_equal(a[split], b[split])
    assert meta_a == meta_b
    assert not a["train"]["text"].equals(c["train"]["text"])


def test_languages_have_own_vocabulary_and_share_few_tokens():
    frames, meta = generate_synthetic("single", ["en", "fr", "de"], list("12345"), SIZES, seed=0)
    df = pd.concat(frames.values())
    vocab = {lang: set(t for toks in _tokens(df[df.language == lang]) for t in toks) for lang in ("en", "fr", "de")}
    for x, y in (("en", "fr"), ("en", "de"), ("fr", "de")):
        common = vocab[x] & vocab[y]
        assert common and common <= SHARED  # only digits, names, punctuation are shared
    cues = meta["informative_tokens"]
    assert not set(cues["en"]) & set(cues["fr"])


def test_cues_are_soft_but_informative():
    frames, meta = generate_synthetic("single", ["en"], list("12345"), {"train": 300, "validation": 5, "test": 5},
                                      seed=0, label_noise=0.0)
    cues = meta["informative_tokens"]["en"]
    own = other = 0
    for toks, label in zip(_tokens(frames["train"]), frames["train"]["label"]):
        hits = [cues[t] for t in toks if t in cues]
        assert hits, "every example carries at least one cue"
        own += sum(h == label for h in hits)
        other += sum(h != label for h in hits)
    share = own / (own + other)
    assert 0.55 < share < 0.85  # clearly informative, far from deterministic


def test_label_noise_knob_weakens_cues():
    def own_share(noise):
        frames, meta = generate_synthetic("single", ["en"], list("123"), {"train": 300, "validation": 5, "test": 5},
                                          seed=0, label_noise=noise, clear_rate=1.0)
        cues = meta["informative_tokens"]["en"]
        hits = [(cues[t], lab) for toks, lab in zip(_tokens(frames["train"]), frames["train"]["label"])
                for t in toks if t in cues]
        return np.mean([h == lab for h, lab in hits])
    assert own_share(0.0) > 0.85 > own_share(0.4)


def test_bad_options():
    with pytest.raises(LangskewError, match="cue_strenght"):
        generate_synthetic("single", ["en"], list("12"), SIZES, 0, cue_strenght=0.5)
    with pytest.raises(LangskewError, match="'test'"):
        generate_synthetic("single", ["en"], list("12"), {"train": 3, "validation": 3}, 0)
    with pytest.raises(LangskewError, match="triple"):
        generate_synthetic("triple", ["en"], list("12"), SIZES, 0)


def _bag_of_words_accuracy(subsets, variant: str, scheme: str) -> float:
    """Logistic regression on word counts (hypothesis words marked) -> balanced-test accuracy."""
    def docs(df):
        return [p + " " + " ".join("h_" + t for t in h.split()) for p, h in zip(df["text"], df["text_pair"])]
    train, test = subsets[(variant, "train")], subsets[("balanced", "test")]
    vec = CountVectorizer(token_pattern=r"\S+", lowercase=False)
    weights = class_weights(train["label"], train["language"], 3, scheme)
    clf = LogisticRegression(C=0.05, max_iter=2000)
    clf.fit(vec.fit_transform(docs(train)), train["label"],
            sample_weight=example_weights(train["label"], train["language"], weights))
    return float((clf.predict(vec.transform(docs(test))) == test["label"]).mean())


def test_language_skew_hurts_and_per_language_weights_recover():
    """The paper's effect at the scikit-learn level, on XNLI-like pairs (en 1:2:3, fr 3:2:1)."""
    frames, _ = generate_synthetic("pair", ["en", "fr"], ["entailment", "neutral", "contradiction"],
                                   {"train": 1000, "validation": 10, "test": 300}, seed=0)
    subsets, _ = build_subsets(frames, ["en", "fr"], {"en": "1:2:3", "fr": "3:2:1"}, 3, None)
    balanced = _bag_of_words_accuracy(subsets, "balanced", "none")
    imbalanced = _bag_of_words_accuracy(subsets, "imbalanced", "none")
    weighted = _bag_of_words_accuracy(subsets, "imbalanced", "per_language")
    assert balanced > 0.5  # learnable (chance is 1/3)
    assert balanced - imbalanced > 0.025
    assert weighted - imbalanced > 0.6 * (balanced - imbalanced)
