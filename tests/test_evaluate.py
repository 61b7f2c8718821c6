"""Accuracy and predicted-label shares from a predictions table."""

import pandas as pd
import pytest
from helpers import job, named

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
    evaluate_job(job({"predictions": str(tmp_path / "p.parquet")}, dict(out.items())), labels=LABELS,
                 reliance_test="balanced", reliance_reference="imbalanced")
    assert len(pd.read_csv(out.accuracy)) == 6 and len(pd.read_csv(out.distribution)) == 18


# --- language reliance on the balanced test set ----------------------------------------------

from langskew.study_a.evaluate import language_reliance, training_shares  # noqa: E402


def _counts(imbalanced_train: dict[str, list[int]]) -> pd.DataFrame:
    rows = [("train", "imbalanced", lang, c, n) for lang, ns in imbalanced_train.items() for c, n in enumerate(ns)]
    rows += [("train", "balanced", lang, c, 10) for lang in imbalanced_train for c in range(3)]
    return pd.DataFrame(rows, columns=["split", "variant", "language", "label", "n"])


def test_language_reliance_on_a_constructed_case():
    # en trained 1:2:3 (class 2 over, class 0 under), fr 3:2:1. Balanced test, 2 per class.
    shares = training_shares(_counts({"en": [10, 20, 30], "fr": [30, 20, 10]}), 3)
    assert shares.loc["en"].tolist() == pytest.approx([1 / 6, 1 / 3, 1 / 2])
    labels = [0, 0, 1, 1, 2, 2]
    rows = ([("balanced", "en", y, p) for y, p in zip(labels, [2, 0, 1, 2, 2, 2])]     # en leans to class 2
            + [("balanced", "fr", y, p) for y, p in zip(labels, [0, 0, 1, 1, 2, 2])]   # fr perfect
            + [("original", "en", 0, 1)])                                              # other variant ignored
    preds = pd.DataFrame(rows, columns=["test_variant", "language", "label", "prediction"])
    rel = language_reliance(preds, shares, 3).set_index("language")
    # en: predicted shares (1/6, 1/6, 4/6) vs true (1/3, 1/3, 1/3): TVD = 1/2 (1/6 + 1/6 + 1/3) = 1/3
    assert rel.loc["en", "tvd"] == pytest.approx(1 / 3)
    assert rel.loc["en", "accuracy"] == pytest.approx(4 / 6)
    assert (rel.loc["en", "accuracy_over"], rel.loc["en", "accuracy_under"]) == (1.0, 0.5)
    assert rel.loc["en", "reliance_gap"] == pytest.approx(0.5)
    assert (rel.loc["en", "over_classes"], rel.loc["en", "under_classes"]) == ("2", "0")
    assert rel.loc["fr", "tvd"] == 0 and rel.loc["fr", "reliance_gap"] == 0
    assert rel.loc["all", "tvd"] == pytest.approx(1 / 6)  # mean of the languages'
    assert rel.loc["all", "n"] == 12 and rel.loc["all", "accuracy_under"] == pytest.approx(3 / 4)


def test_language_reliance_errors_name_the_problem():
    shares = training_shares(_counts({"en": [1, 2, 3]}), 3)
    preds = pd.DataFrame({"test_variant": ["balanced"], "language": ["de"], "label": [0], "prediction": [0]})
    with pytest.raises(LangskewError, match="language 'de' has no training counts"):
        language_reliance(preds, shares, 3)
    with pytest.raises(LangskewError, match="no rows of test variant 'balanced'"):
        language_reliance(preds.assign(test_variant="original"), shares, 3)
    with pytest.raises(LangskewError, match="no training rows of variant 'imbalanced'"):
        training_shares(_counts({"en": [1, 2, 3]}).query("variant == 'balanced'"), 3)


def test_evaluate_job_writes_reliance(tmp_path):
    df = predictions()
    df.to_parquet(tmp_path / "p.parquet")
    _counts({"en": [1, 2, 3], "fr": [3, 2, 1]}).to_csv(tmp_path / "counts.csv", index=False)
    out = named(accuracy=str(tmp_path / "acc.csv"), distribution=str(tmp_path / "dist.csv"),
                reliance=str(tmp_path / "rel.csv"))
    evaluate_job(job({"predictions": str(tmp_path / "p.parquet"), "counts": str(tmp_path / "counts.csv")},
                     dict(out.items())),
                 labels=LABELS, reliance_test="balanced", reliance_reference="imbalanced")
    rel = pd.read_csv(out.reliance).set_index("language")
    assert list(rel.index) == ["en", "fr", "all"]
    # en balanced rows: labels 0,1,2,2 predicted 0,0,2,2; class 2 over (1.0), class 0 under (1.0)
    assert rel.loc["en", "accuracy_over"] == 1.0 and rel.loc["en", "n_under"] == 1
