"""Accuracy, predicted-label distribution and language reliance from a run's predictions table.

Language reliance (how much a model's predictions lean on the language) is measured on a
test set that is balanced within every language (the ``balanced`` test variant), per
language:

- ``tvd``: the total-variation distance 1/2 sum_c |q_l(c) - p_l(c)| between the predicted
  class distribution q_l and the true one p_l (0: the model predicts the classes as often as
  they occur; 1: completely different);
- ``accuracy_over`` / ``accuracy_under``: accuracy on the examples whose true class is
  over-represented (share > 1/C) / under-represented (share < 1/C) for that language in the
  reference training distribution, the ``imbalanced`` training subset, i.e. the skew the study
  imposes; ``reliance_gap`` = over - under. The same reference is used for every condition,
  so a balanced model shows the baseline gap and an imbalanced one how far it follows the
  language's majority classes.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError
from langskew.io import write_csv
from langskew.workflow import Job

logger = logging.getLogger(__name__)

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


RELIANCE_COLUMNS = ["language", "n", "accuracy", "tvd", "n_over", "accuracy_over", "n_under", "accuracy_under",
                    "reliance_gap", "over_classes", "under_classes"]


def training_shares(counts: pd.DataFrame, n_classes: int, variant: str = "imbalanced") -> pd.DataFrame:
    """Class shares per language (languages x classes) of the ``variant`` training subset in counts.csv."""
    for col in ("split", "variant", "language", "label", "n"):
        if col not in counts.columns:
            raise LangskewError(f"subset counts: column {col!r} missing")
    rows = counts[(counts["split"] == "train") & (counts["variant"] == variant)]
    if rows.empty:
        raise LangskewError(f"subset counts: no training rows of variant {variant!r}")
    table = rows.pivot_table(index="language", columns="label", values="n", aggfunc="sum", fill_value=0)
    table = table.reindex(columns=range(n_classes), fill_value=0)
    return table.div(table.sum(axis=1), axis=0)


def language_reliance(pred_df: pd.DataFrame, shares: pd.DataFrame, n_classes: int,
                      test_variant: str = "balanced") -> pd.DataFrame:
    """Per language of ``test_variant``: accuracy, TVD(predicted, true) and accuracy on over- vs
    under-represented training classes (``shares`` from :func:`training_shares`).

    A last row ``language == "all"`` pools the examples (accuracy, over/under accuracy) and
    gives the mean of the languages' TVDs (the pooled distributions can agree while every
    language leans its own way).
    """
    test = pred_df[pred_df["test_variant"] == test_variant]
    if test.empty:
        raise LangskewError(f"predictions: no rows of test variant {test_variant!r} "
                            f"(have {sorted(pred_df['test_variant'].unique())})")
    rows, pooled = [], []
    for lang, part in test.groupby("language", sort=True):
        if lang not in shares.index:
            raise LangskewError(f"predictions: language {lang!r} has no training counts")
        true = np.bincount(part["label"], minlength=n_classes) / len(part)
        pred = np.bincount(part["prediction"], minlength=n_classes) / len(part)
        share = shares.loc[lang].to_numpy()
        over, under = np.flatnonzero(share > 1 / n_classes + 1e-12), np.flatnonzero(share < 1 / n_classes - 1e-12)
        correct = (part["label"] == part["prediction"]).to_numpy()
        is_over, is_under = part["label"].isin(over).to_numpy(), part["label"].isin(under).to_numpy()
        pooled.append((correct, is_over, is_under))
        rows.append(_reliance_row(lang, correct, is_over, is_under, 0.5 * float(np.abs(pred - true).sum()),
                                  ";".join(map(str, over)), ";".join(map(str, under))))
    correct, is_over, is_under = (np.concatenate(x) for x in zip(*pooled))
    rows.append(_reliance_row("all", correct, is_over, is_under, float(np.mean([r["tvd"] for r in rows])), "", ""))
    return pd.DataFrame(rows, columns=RELIANCE_COLUMNS)


def _reliance_row(lang, correct, is_over, is_under, tvd, over, under) -> dict:
    def acc(mask):
        return float(correct[mask].mean()) if mask.any() else float("nan")

    a_over, a_under = acc(is_over), acc(is_under)
    return {"language": lang, "n": int(len(correct)), "accuracy": float(correct.mean()), "tvd": tvd,
            "n_over": int(is_over.sum()), "accuracy_over": a_over, "n_under": int(is_under.sum()),
            "accuracy_under": a_under, "reliance_gap": a_over - a_under, "over_classes": over,
            "under_classes": under}


def evaluate_job(job: Job, *, labels: Sequence[str], reliance_test: str, reliance_reference: str) -> None:
    """Snakemake job: input.predictions, params ``labels`` -> output.accuracy, output.distribution (CSV).

    With input.counts (the subsets' counts.csv) and output.reliance also the language
    reliance on the test variant ``reliance_test`` against the training shares of the
    variant ``reliance_reference``.
    """
    predictions = pd.read_parquet(job.input.predictions)
    labels = list(labels)
    accuracy, distribution = evaluate_predictions(predictions, labels)
    write_csv(accuracy, job.output.accuracy)
    write_csv(distribution, job.output.distribution)
    if getattr(job.output, "reliance", None) is not None:
        shares = training_shares(pd.read_csv(job.input.counts), len(labels), reliance_reference)
        reliance = language_reliance(predictions, shares, len(labels), reliance_test)
        write_csv(reliance, job.output.reliance)
        for r in reliance.itertuples():
            log_line = (f"{r.language}: accuracy {r.accuracy:.3f}, TVD {r.tvd:.3f}, over-represented classes "
                        f"{r.accuracy_over:.3f} vs under-represented {r.accuracy_under:.3f}")
            logger.info(log_line)
