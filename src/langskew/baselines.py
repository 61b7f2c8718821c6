"""Baselines from the group-robustness literature for language-specific class skew (numpy and
scikit-learn; no torch).

- :func:`posthoc_logit_adjustment`: post-hoc logit adjustment (Menon et al., ICLR 2021, their
  Eq. 6), applied per language: predict argmax_y log p(y | x) - tau log pi(y | language) from a
  trained model's stored probabilities, with the class priors pi(y | language) counted on the
  training rows. No training: it corrects the model that the skew produced.
- :func:`per_language_subsample`: subsampling of the majority classes per language, the
  per-language variant of SUBG (Idrissi et al., CLeaR 2022, which subsamples every group to the
  smallest group): within each language every class keeps as many rows as the language's
  smallest class, drawn without replacement. The same-data counterpart of per-language class
  weights.
"""

from __future__ import annotations

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


__all__ = ["log_class_priors", "per_language_subsample", "posthoc_logit_adjustment"]
