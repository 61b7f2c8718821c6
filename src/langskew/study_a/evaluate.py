"""Accuracy and predicted-label distribution from a fine-tuning run's predictions table."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from langskew.errors import LangskewError
from langskew.io import write_csv

PRED_COLUMNS = ("test_variant", "language", "label", "prediction")


def evaluate_predictions(pred_df: pd.DataFrame, labels: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy per (test_variant, language) and the share of each predicted label.

    Returns ``accuracy`` [test_variant, language, n, accuracy] with language "all" for the
    whole variant, and ``distribution`` [test_variant, language, predicted_label, share]
    with every label index listed (share 0 when never predicted), also with an "all"
    language; an extra ``label_name`` column names the predicted label.
    """
    for col in PRED_COLUMNS:
        if col not in pred_df.columns:
            raise LangskewError(f"predictions: column {col!r} missing")
    n_classes = len(labels)
    bad = pred_df.loc[~pred_df["prediction"].between(0, n_classes - 1), "prediction"]
    if len(bad):
        raise LangskewError(f"predictions: predicted label {int(bad.iloc[0])} outside 0..{n_classes - 1}")
    df = pred_df.assign(correct=(pred_df["label"] == pred_df["prediction"]).astype(float))
    both = pd.concat([df, df.assign(language="all")], ignore_index=True)
    keys = ["test_variant", "language"]
    accuracy = (both.groupby(keys, sort=True)["correct"].agg(n="size", accuracy="mean").reset_index())
    counts = pd.crosstab([both["test_variant"], both["language"]], both["prediction"])
    counts = counts.reindex(columns=range(n_classes), fill_value=0)
    shares = counts.div(counts.sum(axis=1), axis=0)
    distribution = shares.rename_axis(columns="predicted_label").stack().rename("share").reset_index()
    distribution["predicted_label"] = distribution["predicted_label"].astype("int64")
    distribution["label_name"] = [str(labels[c]) for c in distribution["predicted_label"]]
    return accuracy, distribution


def evaluate_job(input, output, params, threads=1, log=None, **_) -> None:
    """Snakemake job: input.predictions, params.labels -> output.accuracy, output.distribution (CSV)."""
    accuracy, distribution = evaluate_predictions(pd.read_parquet(input.predictions), list(params.labels))
    write_csv(accuracy, output.accuracy)
    write_csv(distribution, output.distribution)
