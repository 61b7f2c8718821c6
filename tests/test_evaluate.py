"""Accuracy and predicted-label shares from a predictions table."""

import pandas as pd
import pytest
from helpers import named

from langskew.errors import LangskewError
from langskew.study_a.evaluate import evaluate_job, evaluate_predictions

LABELS = ["neg", "neu", "pos"]


def predictions() -> pd.DataFrame:
    rows = [  # (variant, language, label, prediction)
        ("balanced", "en", 0, 0), ("balanced", "en", 1, 0), ("balanced", "en", 2, 2), ("balanced", "en", 2, 2),
        ("balanced", "fr", 0, 2), ("balanced", "fr", 1, 1),
        ("original", "en", 0, 0), ("original", "fr", 2, 0),
    ]
    df = pd.DataFrame(rows, columns=["test_variant", "language", "label", "prediction"])
    df.insert(1, "id", [f"r{i}" for i in range(len(df))])
    return df


def test_accuracy_per_variant_and_language():
    acc, _ = evaluate_predictions(predictions(), LABELS)
    got = {(r.test_variant, r.language): (r.n, r.accuracy) for r in acc.itertuples()}
    assert got == {("balanced", "all"): (6, pytest.approx(4 / 6)), ("balanced", "en"): (4, 0.75),
                   ("balanced", "fr"): (2, 0.5), ("original", "all"): (2, 0.5),
                   ("original", "en"): (1, 1.0), ("original", "fr"): (1, 0.0)}


def test_distribution_lists_every_label_and_sums_to_one():
    _, dist = evaluate_predictions(predictions(), LABELS)
    assert list(dist.columns[:4]) == ["test_variant", "language", "predicted_label", "share"]
    en = dist[(dist.test_variant == "balanced") & (dist.language == "en")].set_index("predicted_label")["share"]
    assert en.to_dict() == {0: 0.5, 1: 0.0, 2: 0.5}
    assert dist.groupby(["test_variant", "language"])["share"].sum().round(12).eq(1).all()
    assert dist.loc[dist.predicted_label == 1, "label_name"].unique().tolist() == ["neu"]


def test_bad_predictions_are_named():
    with pytest.raises(LangskewError, match="prediction"):
        evaluate_predictions(predictions().drop(columns="prediction"), LABELS)
    with pytest.raises(LangskewError, match="predicted label 3"):
        evaluate_predictions(predictions().assign(prediction=3), LABELS)


def test_evaluate_job_writes_csvs(tmp_path):
    predictions().to_parquet(tmp_path / "p.parquet")
    out = named(accuracy=str(tmp_path / "acc.csv"), distribution=str(tmp_path / "dist.csv"))
    evaluate_job(named(predictions=str(tmp_path / "p.parquet")), out, named(labels=LABELS))
    assert len(pd.read_csv(out.accuracy)) == 6 and len(pd.read_csv(out.distribution)) == 18
