"""Baselines from the group-robustness literature for language-specific class skew (numpy,
pandas and scikit-learn; no torch).

- :func:`posthoc_logit_adjustment`: post-hoc logit adjustment (Menon et al., ICLR 2021, their
  Eq. 6), applied per language: predict argmax_y log p(y | x) - tau log pi(y | language) from a
  trained model's stored probabilities, with the class priors pi(y | language) counted on the
  training rows. No training: it corrects the model that the skew produced.
- :func:`per_language_subsample`: subsampling of the majority classes per language, the
  per-language variant of SUBG (Idrissi et al., CLeaR 2022, which subsamples every group to the
  smallest group): within each language every class keeps as many rows as the language's
  smallest class, drawn without replacement. The same-data counterpart of per-language class
  weights. :class:`PerLanguageSubsampleSampler` trains on that subset (the ``sampling:
  per_language_subsample`` of a Study A condition or of :class:`langskew.mitigation.MitigationConfig`).
- :func:`dfr`: deep feature reweighting (Kirichenko et al., ICLR 2023), DFR on validation data as
  their reference code runs it: the last layer is refitted on the frozen model's features of
  group-balanced subsamples of the validation rows (groups here: (language, label)), an
  L1-penalised logistic regression (liblinear; one-vs-rest for three or more classes, as
  liblinear fits them), its C picked from their grid by worst-group accuracy on a held-out half
  of the validation rows, then 20 refits on balanced subsamples of all of them averaged, features
  standardised with the training features' mean and scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError


def log_class_priors(labels: Sequence[int], languages: Sequence[str], n_classes: int,
                     order: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(languages, log pi(y | language)): a languages x classes array counted on training rows.

    A class without rows in a language has no finite log-prior: an error naming both.
    """
    labels = np.asarray(labels, dtype=np.int64)
    languages = np.asarray(languages, dtype=object).astype(str)
    order = list(order) if order is not None else sorted(set(languages.tolist()))
    index = {lang: i for i, lang in enumerate(order)}
    unknown = sorted(set(languages.tolist()) - set(order))
    if unknown:
        raise LangskewError(f"class priors: language {unknown[0]!r} is not among {order}")
    counts = np.zeros((len(order), n_classes))
    np.add.at(counts, (np.array([index[lang] for lang in languages], dtype=np.int64), labels), 1)
    empty = np.argwhere(counts == 0)
    if len(empty):
        lang, c = empty[0]
        raise LangskewError(f"class priors: label {c} has no training rows in language {order[lang]!r}, "
                            f"so its log-prior is undefined")
    return order, np.log(counts / counts.sum(axis=1, keepdims=True))


def posthoc_logit_adjustment(probabilities: np.ndarray, languages: Sequence[str], train_labels: Sequence[int],
                             train_languages: Sequence[str], tau: float = 1.0) -> np.ndarray:
    """Predicted classes argmax_y log p(y | x) - tau log pi(y | language of the row).

    ``probabilities``: rows x classes (a softmax output; log p differs from the logits by a
    per-row constant, so the argmax is the one of the adjusted logits). The priors are counted
    on ``train_labels`` / ``train_languages``; a row's language must be one of them.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2:
        raise LangskewError(f"posthoc logit adjustment: probabilities must be rows x classes, got shape {probs.shape}")
    if len(probs) != len(languages):
        raise LangskewError(f"posthoc logit adjustment: {len(probs)} probability rows but {len(languages)} languages")
    if tau < 0:
        raise LangskewError(f"posthoc logit adjustment: tau must be >= 0, got {tau}")
    order, log_prior = log_class_priors(train_labels, train_languages, probs.shape[1])
    index = {lang: i for i, lang in enumerate(order)}
    rows = [str(lang) for lang in languages]
    unknown = sorted(set(rows) - set(order))
    if unknown:
        raise LangskewError(f"posthoc logit adjustment: language {unknown[0]!r} has no training rows "
                            f"(training languages: {', '.join(order)})")
    with np.errstate(divide="ignore"):
        scores = np.log(probs) - tau * log_prior[[index[lang] for lang in rows]]
    return scores.argmax(axis=1)


def per_language_subsample(frame: pd.DataFrame, seed: int = 0, language: str = "language",
                           label: str = "label") -> pd.DataFrame:
    """The rows of ``frame`` kept by per-language SUBG: in each language, every class subsampled
    without replacement to the language's smallest class count (original order kept)."""
    for col in (language, label):
        if col not in frame.columns:
            raise LangskewError(f"per-language subsampling: column {col!r} missing (have {list(frame.columns)})")
    if frame.empty:
        raise LangskewError("per-language subsampling: no rows")
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    positions = pd.Series(np.arange(len(frame)), index=frame.index)
    for _, rows in frame.groupby(language, sort=True):
        smallest = int(rows.groupby(label).size().min())
        for _, cell in rows.groupby(label, sort=True):
            keep.append(rng.choice(positions.loc[cell.index].to_numpy(), size=smallest, replace=False))
    return frame.iloc[np.sort(np.concatenate(keep))]


class PerLanguageSubsampleSampler:
    """A training sampler over the rows that :func:`per_language_subsample` keeps: the same subset
    every epoch (drawn once, with ``seed``), in an order drawn from (seed, epoch). Works as a
    ``torch`` sampler (``__iter__``, ``__len__``, ``set_epoch``) without importing torch."""

    def __init__(self, languages: Sequence[str], labels: Sequence[int], seed: int = 0):
        frame = pd.DataFrame({"language": np.asarray(languages).astype(str), "label": np.asarray(labels)})
        self.indices = per_language_subsample(frame, seed=seed).index.to_numpy(dtype=np.int64)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        yield from np.random.default_rng([self.seed, self.epoch, 3]).permutation(self.indices).tolist()


#: The reference code's grid of C for DFR (its Waterbirds setting).
DFR_C_OPTIONS = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)


def group_balanced_indices(groups: Sequence, rng: np.random.Generator) -> np.ndarray:
    """Row indices of a subsample in which every group keeps as many rows as the smallest group
    (drawn without replacement)."""
    groups = np.asarray(groups)
    members = [rng.permutation(np.flatnonzero(groups == g)) for g in np.unique(groups)]
    smallest = min(len(m) for m in members)
    return np.concatenate([m[:smallest] for m in members])


def worst_group_accuracy(predictions: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """The lowest accuracy over the groups present."""
    correct = np.asarray(predictions) == np.asarray(labels)
    return float(min(correct[groups == g].mean() for g in np.unique(groups)))


def _l1_linear(X: np.ndarray, y: np.ndarray, n_classes: int, C: float) -> tuple[np.ndarray, np.ndarray]:
    """(coef classes x features, intercept) of L1 logistic regression with liblinear: one binary
    model for two classes (class 1's score against 0), one-vs-rest models for more. liblinear's
    coordinate-descent order is seeded (random_state 0; the reference code left it unseeded)."""
    from sklearn.linear_model import LogisticRegression

    def fit(target: np.ndarray) -> tuple[np.ndarray, float]:
        model = LogisticRegression(l1_ratio=1.0, C=C, solver="liblinear", random_state=0).fit(X, target.astype(int))
        return model.coef_[0], float(model.intercept_[0])

    if n_classes == 2:
        w, b = fit(y == 1)
        return np.vstack([np.zeros_like(w), w]), np.array([0.0, b])
    parts = [fit(y == c) for c in range(n_classes)]
    return np.vstack([w for w, _ in parts]), np.array([b for _, b in parts])


@dataclass
class DFRHead:
    """A refitted last layer: standardise with (mean, scale), then scores X @ coef.T + intercept."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    C: float

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, dtype=np.float64) - self.mean) / self.scale) @ self.coef.T + self.intercept

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.decision_function(features).argmax(axis=1)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities as liblinear's models give them: for two classes the binary model's
        sigmoid; for more, each one-vs-rest model's sigmoid, normalised over the classes."""
        from scipy.special import expit

        scores = self.decision_function(features)
        if scores.shape[1] == 2:
            p1 = expit(scores[:, 1] - scores[:, 0])
            return np.column_stack([1.0 - p1, p1])
        p = expit(scores)
        return p / p.sum(axis=1, keepdims=True)


def dfr_tune_c(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_classes: int,
               rng: np.random.Generator, c_options: Sequence[float] = DFR_C_OPTIONS) -> float:
    """The C of ``c_options`` with the best worst-group accuracy on one half of the validation rows,
    fitted on a group-balanced subsample of the other half standardised on itself (the first best wins)."""
    from sklearn.preprocessing import StandardScaler

    order = rng.permutation(len(features))
    held_out, fit_rows = order[:len(order) // 2], order[len(order) // 2:]
    fit_rows = fit_rows[group_balanced_indices(groups[fit_rows], rng)]
    scaler = StandardScaler().fit(features[fit_rows])
    scores = []
    for C in c_options:
        coef, intercept = _l1_linear(scaler.transform(features[fit_rows]), labels[fit_rows], n_classes, C)
        predicted = (scaler.transform(features[held_out]) @ coef.T + intercept).argmax(axis=1)
        scores.append(worst_group_accuracy(predicted, labels[held_out], groups[held_out]))
    return float(c_options[int(np.argmax(scores))])


def dfr(train_features: np.ndarray, val_features: np.ndarray, val_labels: Sequence[int], val_groups: Sequence,
        n_classes: int, seed: int = 0, n_retrains: int = 20,
        c_options: Sequence[float] = DFR_C_OPTIONS) -> DFRHead:
    """DFR on validation data (module docstring): ``train_features`` only set the standardisation;
    the last layer is fitted on the validation rows' features, labels and groups."""
    from sklearn.preprocessing import StandardScaler

    X, y, g = (np.asarray(val_features, dtype=np.float64), np.asarray(val_labels, dtype=np.int64),
               np.asarray(val_groups))
    if not len(X) == len(y) == len(g):
        raise LangskewError(f"dfr: {len(X)} feature rows, {len(y)} labels and {len(g)} groups")
    if n_retrains < 1:
        raise LangskewError(f"dfr: n_retrains must be >= 1, got {n_retrains}")
    rng = np.random.default_rng(seed)
    C = dfr_tune_c(X, y, g, n_classes, rng, c_options)
    scaler = StandardScaler().fit(np.asarray(train_features, dtype=np.float64))
    fits = [_l1_linear(scaler.transform(X[idx]), y[idx], n_classes, C)
            for idx in (group_balanced_indices(g, rng) for _ in range(n_retrains))]
    return DFRHead(scaler.mean_, scaler.scale_, np.mean([c for c, _ in fits], axis=0),
                   np.mean([b for _, b in fits], axis=0), C)


__all__ = ["DFRHead", "DFR_C_OPTIONS", "PerLanguageSubsampleSampler", "dfr", "dfr_tune_c", "group_balanced_indices",
           "log_class_priors", "per_language_subsample", "posthoc_logit_adjustment", "worst_group_accuracy"]
