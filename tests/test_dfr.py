"""The DFR stage (langskew.study_a.dfr): features of the classifier's last layer, the refitted head's
probabilities, the job's outputs and its refusals."""
import json

import numpy as np
import pandas as pd
import pytest

from helpers import build_tiny_encoder, job, make_tiny_classification_frames

from langskew.errors import LangskewError


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_features_are_what_the_last_linear_layer_turns_into_the_logits(tmp_path, kind):
    """Independent of the hook: the captured features through the classifier's own weights give
    the model's logits (BERT: pooler -> classifier; XLM-R: dense/tanh -> out_proj)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from langskew.study_a.dfr import classifier_features

    path = build_tiny_encoder(tmp_path / kind, kind=kind, num_labels=3)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    df = make_tiny_classification_frames(sizes={"test": 23})["test"]
    feats, logits = classifier_features(model, tok, df, max_length=32, batch_size=5)
    layer = model.classifier if kind == "bert" else model.classifier.out_proj
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    assert feats.shape == (23, 16) and logits.shape == (23, 3)
    np.testing.assert_allclose(feats @ w.T + b, logits, atol=1e-5)
    # row order: row 7 alone gives the same features as in the batch
    one, _ = classifier_features(model, tok, df.iloc[[7]], max_length=32, batch_size=5)
    np.testing.assert_allclose(one[0], feats[7], atol=1e-5)
    if kind == "bert":  # BERT's classifier reads the pooler output
        enc = tok(df["text"].iloc[[7]].tolist(), df["text_pair"].iloc[[7]].tolist(), return_tensors="pt")
        np.testing.assert_allclose(model.bert(**enc).pooler_output.detach().numpy()[0], feats[7], atol=1e-5)


def test_head_probabilities_are_liblinears(rng=np.random.default_rng(3)):
    """predict_proba against scikit-learn's own liblinear models on the same standardised features:
    one-vs-rest (normalised sigmoids) for three classes, the binary model for two."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from langskew.baselines import DFRHead, _l1_linear

    X = rng.normal(size=(90, 4))
    for n_classes in (3, 2):
        y = (X[:, 0] + 0.5 * rng.normal(size=90) > 0).astype(int) + (X[:, 1] > 0.8) * (n_classes - 2)
        coef, intercept = _l1_linear(X, y, n_classes, C=0.5)
        head = DFRHead(np.zeros(4), np.ones(4), coef, intercept, 0.5)
        clf = LogisticRegression(l1_ratio=1.0, C=0.5, solver="liblinear", random_state=0)
        ref = (OneVsRestClassifier(clf) if n_classes > 2 else clf).fit(X, y).predict_proba(X)
        np.testing.assert_allclose(head.predict_proba(X), ref, atol=1e-6)
        assert (head.predict_proba(X).argmax(axis=1) == head.predict(X)).all()


def _dfr_inputs(tmp_path, n_classes=3):
    frames = make_tiny_classification_frames(tmp_path / "data", n_classes=n_classes,
                                             sizes={"train": 60, "validation": 90, "test": 30, "balanced": 24})
    model = build_tiny_encoder(tmp_path / "model", num_labels=n_classes)
    return frames, {"model": str(model), "train": str(tmp_path / "data" / "train.parquet"),
                    "validation": str(tmp_path / "data" / "validation.parquet"),
                    "tests": [str(tmp_path / "data" / "test.parquet"), str(tmp_path / "data" / "balanced.parquet")]}


def test_job_writes_predictions_of_every_test_variant_and_its_choice(tmp_path):
    from langskew.baselines import DFR_C_OPTIONS
    from langskew.study_a.dfr import dfr_job

    frames, inputs = _dfr_inputs(tmp_path)
    out = {"predictions": str(tmp_path / "out" / "predictions.parquet"), "metrics": str(tmp_path / "out" / "m.json")}
    dfr_job(job(inputs, out), labels=["a", "b", "c"], test_variants=["original", "balanced"], max_length=32,
            settings={"n_retrains": 3}, model={"path": None}, seed=0)
    pred = pd.read_parquet(out["predictions"])
    assert pred.groupby("test_variant").size().to_dict() == {"original": 30, "balanced": 24}
    assert pred[pred["test_variant"] == "original"]["id"].tolist() == frames["test"]["id"].tolist()
    assert list(pred.columns) == ["test_variant", "id", "language", "label", "prediction", "prob_0", "prob_1", "prob_2"]
    probs = pred[["prob_0", "prob_1", "prob_2"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs.argmax(axis=1) == pred["prediction"]).all()
    metrics = json.loads(open(out["metrics"]).read())
    assert metrics["C"] in DFR_C_OPTIONS and metrics["n_retrains"] == 3 and metrics["n_validation_rows"] == 90
    assert metrics["n_groups"] == 6 and metrics["n_train_rows_standardised"] == 60
    assert "worst_group_accuracy" in metrics["model_selection"]


def test_job_refuses_a_group_without_two_validation_rows_before_loading_a_model(tmp_path):
    from langskew.study_a.dfr import dfr_job

    frames, inputs = _dfr_inputs(tmp_path)
    val = frames["validation"]
    drop = val[(val["language"] == "fr") & (val["label"] == 2)].index[1:]
    val.drop(index=drop).to_parquet(inputs["validation"], index=False)
    inputs["model"] = str(tmp_path / "no_model_here")  # never reached
    out = {"predictions": str(tmp_path / "p.parquet"), "metrics": str(tmp_path / "m.json")}
    with pytest.raises(LangskewError, match=r"language 'fr' has 1 validation rows of label 2"):
        dfr_job(job(inputs, out), labels=["a", "b", "c"], test_variants=["original", "balanced"], max_length=32,
                settings={}, model={}, seed=0)
    for bad, message in [({"n_retrains": 0}, "n_retrains"), ({"c_options": [1.0, -0.1]}, "c_options"),
                         ({"max_train_rows": 1}, "max_train_rows")]:
        with pytest.raises(LangskewError, match=message):
            dfr_job(job(inputs, out), labels=["a", "b", "c"], test_variants=["original", "balanced"], max_length=32,
                    settings=bad, model={}, seed=0)
