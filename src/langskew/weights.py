"""Class weights for the loss: none, global (traditional) and per language.

Study A's mitigation weights each example's cross-entropy by w[l, c] = n_l / (C * n_{l,c}),
scikit-learn's "balanced" weights computed on each language's training labels separately.
Global weights n / (C * n_c) ignore the language; they are all 1 on data that is balanced
overall (as in the paper) but are kept because real data need not be.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError

SCHEMES = ("none", "global", "per_language")


def _balanced(labels: np.ndarray, n_classes: int, where: str) -> np.ndarray:
    """scikit-learn "balanced" weights for classes 0..C-1; every class must occur."""
    classes = np.arange(n_classes)
    present = set(np.unique(labels).tolist())
    outside = sorted(present - set(classes.tolist()))
    if outside:
        raise LangskewError(f"{where}: label {outside[0]} is outside 0..{n_classes - 1}")
    missing = [c for c in classes.tolist() if c not in present]
    if missing:
        raise LangskewError(f"{where}: label {missing[0]} has no training rows, "
                            f"so its class weight is undefined")
    from sklearn.utils.class_weight import compute_class_weight  # here: importing scikit-learn costs ~0.8 s

    return compute_class_weight("balanced", classes=classes, y=labels).astype(np.float64)


def class_weights(labels: Sequence[int], languages: Sequence[str], n_classes: int,
                  scheme: str) -> dict[str, np.ndarray]:
    """Return {language: weight vector of length n_classes} for a weighting ``scheme``.

    ``labels`` and ``languages`` are aligned per training row. ``scheme`` is "none" (all
    ones), "global" (one vector from all rows, shared by every language) or "per_language"
    (balanced weights from each language's rows).
    """
    labels = np.asarray(labels, dtype=np.int64)
    languages = np.asarray(languages, dtype=object)
    if labels.shape != languages.shape:
        raise LangskewError(f"labels ({labels.shape}) and languages ({languages.shape}) differ in length")
    langs = list(dict.fromkeys(languages.tolist()))
    if scheme == "none":
        return {lang: np.ones(n_classes) for lang in langs}
    if scheme == "global":
        vec = _balanced(labels, n_classes, "all languages")
        return {lang: vec.copy() for lang in langs}
    if scheme == "per_language":
        return {lang: _balanced(labels[languages == lang], n_classes, f"language {lang!r}")
                for lang in langs}
    raise LangskewError(f"unknown class-weight scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


def per_language_weights_from_counts(counts: np.ndarray) -> np.ndarray:
    """The ``per_language`` weights w[l, c] = n_l / (C * n_{l,c}) from a languages x classes count table.

    Row l equals ``class_weights(..., "per_language")[language l]`` for the rows the table
    counts, without expanding the rows (fast on millions of rows). A class with no rows in a
    language has no defined weight: NaN there (training refuses such data; a diagnosis reports it).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2:
        raise LangskewError(f"per-language counts must be a languages x classes table, got shape {counts.shape}")
    n_classes = counts.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = counts.sum(axis=1, keepdims=True) / (n_classes * counts)
    weights[counts == 0] = np.nan
    return weights


def largest_weight_ratio(weights: np.ndarray) -> np.ndarray:
    """Per language (row): largest / smallest class weight; inf where a class has no rows."""
    weights = np.asarray(weights, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ratio = np.nanmax(weights, axis=1) / np.nanmin(weights, axis=1)
    return np.where(np.isnan(weights).any(axis=1), np.inf, ratio)


def example_weights(labels: Sequence[int], languages: Sequence[str],
                    weights: dict[str, np.ndarray]) -> np.ndarray:
    """Per-row weight w[language, label] (e.g. a ``sample_weight`` for scikit-learn)."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.empty(len(labels), dtype=np.float64)
    for i, (lang, lab) in enumerate(zip(languages, labels)):
        if lang not in weights:
            raise LangskewError(f"no class weights for language {lang!r}")
        out[i] = weights[lang][lab]
    return out


def class_weight_table(df: pd.DataFrame, n_classes: int,
                       labels_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Long table (scheme, language, label, weight) of all three schemes for ``df``'s rows.

    ``df`` needs ``language`` and ``label`` columns. With ``labels_names`` a ``label_name``
    column is added for readability.
    """
    for col in ("language", "label"):
        if col not in df.columns:
            raise LangskewError(f"class_weight_table: column {col!r} missing")
    rows = []
    for scheme in SCHEMES:
        for lang, vec in class_weights(df["label"].to_numpy(), df["language"].to_numpy(),
                                       n_classes, scheme).items():
            for c, w in enumerate(vec):
                rows.append({"scheme": scheme, "language": lang, "label": c, "weight": float(w)})
    table = pd.DataFrame(rows, columns=["scheme", "language", "label", "weight"])
    if labels_names is not None:
        if len(labels_names) != n_classes:
            raise LangskewError(f"labels_names has {len(labels_names)} names for {n_classes} classes")
        table["label_name"] = [str(labels_names[c]) for c in table["label"]]
    return table
