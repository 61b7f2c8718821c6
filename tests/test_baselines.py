"""Baselines of the group-robustness literature: post-hoc logit adjustment per language and per-language SUBG."""

import numpy as np
import pandas as pd
import pytest

from langskew.baselines import log_class_priors, per_language_subsample, posthoc_logit_adjustment
from langskew.errors import LangskewError

# training rows: en 3 of class 0 and 1 of class 1 (priors 0.75 / 0.25), fr the reverse
TRAIN_LABELS = [0, 0, 0, 1, 1, 1, 1, 0]
TRAIN_LANGS = ["en"] * 4 + ["fr"] * 4


def test_posthoc_adjustment_by_hand():
    probs = np.array([[0.6, 0.4], [0.6, 0.4]])
    # en: log .6 - log .75 = 0.0645 < log .4 - log .25 = 0.4700 -> 1; fr: log .6 - log .25 = 0.8755 > -0.2877 -> 0
    got = posthoc_logit_adjustment(probs, ["en", "fr"], TRAIN_LABELS, TRAIN_LANGS, tau=1.0)
    assert got.tolist() == [1, 0]
    assert posthoc_logit_adjustment(probs, ["en", "fr"], TRAIN_LABELS, TRAIN_LANGS, tau=0.0).tolist() == [0, 0]
    # tau 0.5: en: log .6 - .5 log .75 = -0.3670 vs log .4 - .5 log .25 = -0.2231 -> 1
    assert posthoc_logit_adjustment(probs[:1], ["en"], TRAIN_LABELS, TRAIN_LANGS, tau=0.5).tolist() == [1]
    order, log_prior = log_class_priors(TRAIN_LABELS, TRAIN_LANGS, 2)
    assert order == ["en", "fr"] and np.exp(log_prior) == pytest.approx(np.array([[0.75, 0.25], [0.25, 0.75]]))


def test_posthoc_adjustment_of_the_skewed_bayes_posterior_is_the_balanced_bayes_classifier():
    """A model that learnt p(y | x, l) ∝ p(x | y) pi(y | l) on skewed data, adjusted with tau = 1,
    predicts argmax_y p(x | y): the Bayes classifier under balanced classes (Menon et al. 2021)."""
    rng = np.random.default_rng(0)
    n, k = 400, 3
    likelihood = rng.dirichlet(np.ones(k), size=n)  # p(x_i | y)
    languages = rng.choice(["de", "es"], n)
    train_labels = np.r_[np.repeat([0, 1, 2], [50, 30, 20]), np.repeat([0, 1, 2], [10, 30, 60])]
    train_langs = ["de"] * 100 + ["es"] * 100
    prior = {"de": np.array([0.5, 0.3, 0.2]), "es": np.array([0.1, 0.3, 0.6])}
    posterior = likelihood * np.stack([prior[lang] for lang in languages])
    posterior /= posterior.sum(axis=1, keepdims=True)
    adjusted = posthoc_logit_adjustment(posterior, languages, train_labels, train_langs)
    assert (adjusted == likelihood.argmax(axis=1)).all()
    assert (posterior.argmax(axis=1) != likelihood.argmax(axis=1)).any()  # the unadjusted model differs


def test_posthoc_adjustment_rejects_bad_input():
    with pytest.raises(LangskewError, match="language 'ja' has no training rows"):
        posthoc_logit_adjustment(np.full((1, 2), 0.5), ["ja"], TRAIN_LABELS, TRAIN_LANGS)
    with pytest.raises(LangskewError, match="label 1 has no training rows in language 'en'"):
        posthoc_logit_adjustment(np.full((1, 2), 0.5), ["en"], [0, 0, 1], ["en", "en", "fr"])
    with pytest.raises(LangskewError, match="2 probability rows but 1 languages"):
        posthoc_logit_adjustment(np.full((2, 2), 0.5), ["en"], TRAIN_LABELS, TRAIN_LANGS)
    with pytest.raises(LangskewError, match="tau must be >= 0"):
        posthoc_logit_adjustment(np.full((1, 2), 0.5), ["en"], TRAIN_LABELS, TRAIN_LANGS, tau=-1)


def test_per_language_subsample_keeps_each_languages_smallest_class_count():
    counts = {("de", 0): 5, ("de", 1): 3, ("de", 2): 2, ("fr", 0): 1, ("fr", 1): 4, ("fr", 2): 6}
    frame = pd.DataFrame([{"id": f"{lang}{y}-{i}", "language": lang, "label": y}
                          for (lang, y), n in counts.items() for i in range(n)]).sample(frac=1, random_state=0)
    kept = per_language_subsample(frame, seed=3)
    got = kept.groupby(["language", "label"]).size().to_dict()
    assert got == {("de", 0): 2, ("de", 1): 2, ("de", 2): 2, ("fr", 0): 1, ("fr", 1): 1, ("fr", 2): 1}
    assert kept["id"].is_unique and set(kept["id"]) <= set(frame["id"])
    assert list(kept.index) == [i for i in frame.index if i in set(kept.index)]  # the frame's order
    assert per_language_subsample(frame, seed=3).equals(kept)
    draws = {tuple(sorted(per_language_subsample(frame, seed=s)["id"])) for s in range(10)}
    assert len(draws) > 1  # the seed picks which rows
    with pytest.raises(LangskewError, match="column 'language' missing"):
        per_language_subsample(frame.drop(columns="language"))
    assert len(kept) == 9
