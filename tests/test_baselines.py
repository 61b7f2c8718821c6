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


def _skewed_features(n_per_cell, seed):
    """Three classes with a weak class signal in dims 0-2 and a language feature in dim 3; the cell
    sizes n_per_cell[language][label] skew each language's classes."""
    rng = np.random.default_rng(seed)
    X, y, lang = [], [], []
    for li, (language, sizes) in enumerate(n_per_cell.items()):
        for label, n in enumerate(sizes):
            core = np.zeros((n, 3))
            core[:, label] = 0.8
            side = np.full((n, 1), 1.5 if li == 0 else -1.5)
            X.append(np.hstack([core + rng.normal(0, 1, (n, 3)), side + rng.normal(0, 0.3, (n, 1))]))
            y += [label] * n
            lang += [language] * n
    return np.vstack(X), np.array(y), np.array(lang)


def test_group_balanced_indices_keep_the_smallest_groups_size():
    from langskew.baselines import group_balanced_indices

    groups = np.array(["a"] * 5 + ["b"] * 2 + ["c"] * 9)
    idx = group_balanced_indices(groups, np.random.default_rng(0))
    assert sorted(groups[idx].tolist()) == ["a", "a", "b", "b", "c", "c"] and len(set(idx)) == 6


def test_dfr_refits_the_last_layer_without_the_language_shortcut():
    """Validation rows skewed like the training rows (en mostly class 0, fr mostly class 2): a
    logistic regression fitted on them leans on the language feature; DFR, fitted on
    (language, label)-balanced subsamples, does not and has the better worst-group accuracy on
    a balanced test set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from langskew.baselines import DFR_C_OPTIONS, dfr, worst_group_accuracy

    skew = {"en": [300, 100, 30], "fr": [30, 100, 300]}
    X_train, _, _ = _skewed_features(skew, 0)
    X_val, y_val, lang_val = _skewed_features(skew, 1)
    X_test, y_test, lang_test = _skewed_features({"en": [200] * 3, "fr": [200] * 3}, 2)
    groups_val = np.char.add(lang_val.astype(str), y_val.astype(str))
    head = dfr(X_train, X_val, y_val, groups_val, 3, seed=0, n_retrains=5)
    assert head.C in DFR_C_OPTIONS and head.coef.shape == (3, 4)
    scaler = StandardScaler().fit(X_train)
    plain = LogisticRegression(C=1.0).fit(scaler.transform(X_val), y_val)
    test_groups = np.char.add(lang_test.astype(str), y_test.astype(str))
    worst_dfr = worst_group_accuracy(head.predict(X_test), y_test, test_groups)
    worst_plain = worst_group_accuracy(plain.predict(scaler.transform(X_test)), y_test, test_groups)
    assert worst_dfr > worst_plain + 0.1
    assert np.abs(head.coef[:, 3]).max() < 0.5 * np.abs(plain.coef_[:, 3]).max()  # the language weight shrinks
    standardised = (X_test[:3] - X_train.mean(axis=0)) / X_train.std(axis=0)  # the training features' scale
    np.testing.assert_allclose(head.decision_function(X_test[:3]), standardised @ head.coef.T + head.intercept)
    assert dfr(X_train, X_val, y_val, groups_val, 3, seed=0, n_retrains=5).coef == pytest.approx(head.coef)
    with pytest.raises(LangskewError, match="n_retrains"):
        dfr(X_train, X_val, y_val, groups_val, 3, n_retrains=0)


def test_dfr_binary_head_scores_class_one_against_zero():
    from langskew.baselines import dfr

    X, y, lang = _skewed_features({"en": [80, 40], "fr": [40, 80]}, 3)
    X = X[:, [0, 1, 3]]
    head = dfr(X, X, y, np.char.add(lang.astype(str), y.astype(str)), 2, n_retrains=3)
    assert head.coef.shape == (2, 3) and (head.coef[0] == 0).all() and head.intercept[0] == 0
    assert (head.predict(X) == (head.decision_function(X)[:, 1] > 0)).all()


def test_subsample_sampler_passes_over_one_fixed_subset_per_epoch():
    from langskew.baselines import PerLanguageSubsampleSampler
    from langskew.mitigation import make_sampler

    languages = ["de"] * 6 + ["fr"] * 5
    labels = [0, 0, 0, 0, 1, 1] + [0, 1, 1, 1, 1]
    sampler = make_sampler("per_language_subsample", languages, labels, seed=4)
    assert isinstance(sampler, PerLanguageSubsampleSampler) and len(sampler) == 6  # de 2 + 2, fr 1 + 1
    first = list(sampler)
    cells = sorted((languages[i], labels[i]) for i in first)
    assert cells == [("de", 0), ("de", 0), ("de", 1), ("de", 1), ("fr", 0), ("fr", 1)] and len(set(first)) == 6
    orders = set()
    for epoch in range(6):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert sorted(drawn) == sorted(first)  # the same rows every epoch
        orders.add(tuple(drawn))
    assert len(orders) > 1
    again = make_sampler("per_language_subsample", languages, labels, seed=4)
    again.set_epoch(5)
    assert list(again) == drawn
