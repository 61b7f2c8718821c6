"""LID probe: the classifier separates what is separable, and representations have the right shapes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import build_tiny_encoder, job, tiny_frame  # noqa: E402

from langskew.errors import LangskewError  # noqa: E402
from langskew.study_a import inference, probe  # noqa: E402
from langskew.workflow import check_params  # noqa: E402


def _clusters(shift: float, n: int = 60, dim: int = 16, seed: int = 0):
    """Three languages, Gaussian features; language k's mean is shifted by k * shift."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(k * shift, 1.0, size=(n, dim)) for k in range(3)])
    langs = np.repeat(["de", "en", "fr"], n)
    return X, langs


def test_probe_separates_clusters():
    X, langs = _clusters(shift=3.0)
    res = probe.lid_probe(X, langs, C=1e-4, folds=5, seed=0)
    assert res["mean"] > 0.95
    assert len(res["folds"]) == 5
    assert res["sd"] == pytest.approx(np.std(res["folds"], ddof=1))


def test_probe_is_at_chance_on_identical_distributions():
    X, langs = _clusters(shift=0.0, n=100)
    res = probe.lid_probe(X, langs, C=1e-4, folds=5, seed=0)
    assert res["mean"] < 0.5  # chance is 1/3


def test_two_language_probe_is_the_authors_multinomial_model_by_hand():
    """x = +1 (fr) and x = -1 (en). Multinomial, weights w_en, w_fr, v = w_fr - w_en, intercepts 0 by symmetry:
    minimise 2C log(1 + e^-v) + (w_en^2 + w_fr^2) / 2, whose optimum splits v evenly (penalty v^2 / 4), so
    v / 2 = 2C sigma(-v). With C = ln 3 the root is v = ln 3 (sigma(-ln 3) = 1/4): P(fr | x = 1) = 3/4.
    (The binary model at C = ln 3 solves w = 2C sigma(-w) instead: w = 0.75, P = 0.68.)"""
    clf = probe.lid_classifier(np.log(3), 2).fit(np.array([[1.0], [-1.0]]), np.array(["fr", "en"]))
    assert clf.predict_proba(np.array([[1.0]]))[0] == pytest.approx([0.25, 0.75], abs=1e-3)
    assert probe.lid_classifier(1e-4, 2).C == pytest.approx(2e-4)  # the paper's C on two languages
    assert probe.lid_classifier(1e-4, 6).C == pytest.approx(1e-4)


def test_paper_config_probes_fp32_representations():
    import torch

    from langskew.config import load_config
    from langskew.devices import amp_dtype

    cfg = load_config(Path(__file__).parents[1] / "config.yaml")
    assert cfg["study_a"]["probe"]["precision"] == "fp32"
    assert amp_dtype(torch.device("cuda"), cfg["study_a"]["probe"]["precision"]) is None  # no autocast on a GPU


def _multinomial_by_scipy(X, y, C):
    """Class probabilities of C * sum -log softmax(W x + b)[y] + ||W||^2 / 2, minimised by scipy."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    classes = np.unique(y)
    k, d = len(classes), X.shape[1]
    onehot = (y[:, None] == classes[None, :]).astype(float)

    def objective(theta):
        W, b = theta[:k * d].reshape(k, d), theta[k * d:]
        return -C * (onehot * log_softmax(X @ W.T + b, axis=1)).sum() + 0.5 * (W ** 2).sum()

    theta = minimize(objective, np.zeros(k * d + k), method="BFGS", options={"gtol": 1e-10}).x
    W, b = theta[:k * d].reshape(k, d), theta[k * d:]
    return np.exp(log_softmax(X @ W.T + b, axis=1))


@pytest.mark.parametrize("n_languages", [2, 3])
def test_probe_classifier_equals_an_independent_multinomial_fit(n_languages):
    rng = np.random.default_rng(4)
    X = np.concatenate([rng.normal(0.7 * k, 1.0, size=(15, 3)) for k in range(n_languages)])
    y = np.repeat(["de", "en", "fr"][:n_languages], 15)
    C = 0.05
    expected = _multinomial_by_scipy(X, y, C)
    clf = probe.lid_classifier(C, n_languages).set_params(tol=1e-10).fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(X), expected, atol=1e-5)
    assert np.ptp(expected) > 0.2  # a fit that moves the probabilities, not a flat one


def test_probe_rejects_too_few_examples():
    X, langs = _clusters(shift=1.0, n=3)
    with pytest.raises(LangskewError, match="fewer than folds"):
        probe.lid_probe(X, langs, folds=5)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_models")
    return {kind: build_tiny_encoder(root / kind, kind=kind) for kind in ("bert", "roberta")}


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("pair", [False, True])
def test_representation_shapes(tiny_models, kind, pair):
    import torch

    tokenizer, model = inference.load_for_inference(tiny_models[kind])
    df = tiny_frame(5, pair=pair)
    reps = probe.sentence_representations(model, tokenizer, df, ["last", "all"], batch_size=4, max_length=32,
                                          pair_input="pair")
    assert list(reps) == ["last", "0", "1", "2"]  # 2 layers + embeddings
    for arr in reps.values():
        assert arr.shape == (len(df), 16)
    encoder = probe.encoder_of(model)
    first = df.iloc[[3]]
    with torch.no_grad():  # one row: no padding, every token counts
        out = encoder(**probe.encode_batch(tokenizer, first, 32, "cpu"), output_hidden_states=True)
    expected_last = out.pooler_output if kind == "bert" else out.hidden_states[-1][:, 0]
    # row order is restored after length-sorted batching
    np.testing.assert_allclose(reps["last"][3], expected_last[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(reps["1"][3], out.hidden_states[1][0].mean(dim=0).numpy(), atol=1e-5)
    # the sweep reads the token mean: its last layer is not the "last" row's first token / pooler output
    assert not np.allclose(reps["last"], reps["2"])


def test_sweep_pools_tokens_because_the_first_token_carries_no_input_at_the_embeddings(tiny_models):
    import torch

    tokenizer, model = inference.load_for_inference(tiny_models["bert"])
    df = tiny_frame(4)
    with torch.no_grad():
        enc = probe.encode_batch(tokenizer, df, 32, "cpu")
        first_tokens = probe.encoder_of(model)(**enc, output_hidden_states=True).hidden_states[0][:, 0]
    assert torch.allclose(first_tokens, first_tokens[0].expand_as(first_tokens))  # the same [CLS] row for all
    reps = probe.sentence_representations(model, tokenizer, df, [0], batch_size=3, max_length=32)
    assert np.unique(reps["0"].round(5), axis=0).shape[0] > 1
    # padding does not enter the mean: a row batched with longer rows equals the row alone
    alone = probe.sentence_representations(model, tokenizer, df.iloc[[0]], [0], max_length=32)
    np.testing.assert_allclose(reps["0"][0], alone["0"][0], atol=1e-5)


def test_premise_input_is_what_the_authors_feature_pipeline_computes(tiny_models):
    """transformers' FeatureExtractionPipeline, called as the authors call it (``text_pair=``), drops
    the hypothesis: the vectors equal those of the premise alone, and the probe's "premise" input."""
    from transformers.pipelines import FeatureExtractionPipeline

    tokenizer, model = inference.load_for_inference(tiny_models["roberta"])
    df = tiny_frame(3, pair=True)
    pipe = FeatureExtractionPipeline(model=probe.encoder_of(model), tokenizer=tokenizer, device="cpu",
                                     tokenize_kwargs={"truncation": True})
    row = df.iloc[0]
    with_pair = np.asarray(pipe(row["text"], text_pair=row["text_pair"]))[0]
    alone = np.asarray(pipe(row["text"]))[0]
    np.testing.assert_allclose(with_pair, alone)
    premise = probe.sentence_representations(model, tokenizer, df, ["last"], max_length=32,
                                             pair_input="premise")["last"]
    np.testing.assert_allclose(premise[0], alone[0], atol=1e-5)  # first token of the last layer (no pooler)
    pair = probe.sentence_representations(model, tokenizer, df, ["last"], max_length=32, pair_input="pair")["last"]
    assert not np.allclose(pair[0], alone[0], atol=1e-3)
    with pytest.raises(LangskewError, match="pair_input 'both'"):
        probe.sentence_representations(model, tokenizer, df, ["last"], pair_input="both")


def test_standardised_sweep_features_keep_c_meaningful_at_any_scale():
    X, langs = _clusters(shift=3.0)
    small = X * 1e-3  # the same clusters on a scale where C = 1e-4 holds the weights near 0
    raw_large, raw_small = probe.lid_probe(X, langs)["mean"], probe.lid_probe(small, langs)["mean"]
    assert raw_large > 0.95 and raw_small < 0.6  # raw: the accuracy measures the scale as much as the clusters
    standardised = [probe.lid_probe(x, langs, standardise=True)["folds"] for x in (X, small, X * 1e3)]
    assert standardised[0] == pytest.approx(standardised[1]) == standardised[2]  # the same at every scale
    table = probe.probe_table({"last": small, "0": small}, list(langs), 1e-4, 5, 0)
    assert table["features"].tolist() == ["raw", "standardised"]
    assert table["representation"].tolist() == ["first token", "token mean"]
    assert table["feature_norm"].iloc[0] == pytest.approx(np.linalg.norm(small, axis=1).mean())
    raw = probe.probe_table({"0": small}, list(langs), 1e-4, 5, 0, sweep_features="raw")
    assert raw["features"].tolist() == ["raw"] and raw["accuracy_mean"].iloc[0] == pytest.approx(raw_small)
    with pytest.raises(LangskewError, match="sweep_features 'unit'"):
        probe.probe_table({"0": small}, list(langs), 1e-4, 5, 0, sweep_features="unit")


def test_bad_layer_is_rejected(tiny_models):
    tokenizer, model = inference.load_for_inference(tiny_models["bert"])
    with pytest.raises(LangskewError, match="layer 7"):
        probe.sentence_representations(model, tokenizer, tiny_frame(2), [7])
    with pytest.raises(LangskewError, match="probe precision 'half'"):
        probe.sentence_representations(model, tokenizer, tiny_frame(2), precision="half")


def test_probe_job_with_base_model_path(tiny_models, tmp_path):
    data = tmp_path / "test.parquet"
    tiny_frame(10).to_parquet(data)
    out = tmp_path / "probe.csv"
    settings = dict(layers=["last", 0], C=1e-4, folds=5, max_examples=16, batch_size=8, max_length=32, seed=0,
                    precision="fp32")
    probe.probe_base_job(job({"data": str(data)}, [str(out)]), settings=settings,
                         model={"path": str(tiny_models["roberta"])}, num_labels=3)
    table = pd.read_csv(out)
    assert list(table.columns) == ["layer", "representation", "features", "feature_norm", "C", "accuracy_mean",
                                   "accuracy_sd", "n_examples", "n_languages"]
    assert table["layer"].astype(str).tolist() == ["last", "0"]
    assert table["representation"].tolist() == ["first token", "token mean"]  # roberta: no pooler
    assert table["features"].tolist() == ["raw", "standardised"] and (table["C"] == 1e-4).all()
    assert (table["n_examples"] == 16).all() and (table["n_languages"] == 2).all()
    assert table["accuracy_mean"].between(0, 1).all()


def test_probe_jobs_take_their_rules_params():
    """The fine-tuned model's probe has no num_labels (its head is the fine-tuned one); the base probe needs it."""
    with pytest.raises(LangskewError, match="params the function does not take: num_labels"):
        check_params(probe.probe_job, {"settings": {}, "model": {}, "num_labels": 3}, "study_a_probe")
    with pytest.raises(LangskewError, match="arguments the rule does not pass: num_labels"):
        check_params(probe.probe_base_job, {"settings": {}, "model": {}}, "study_a_probe_base")
    check_params(probe.probe_job, {"settings": {}, "model": {}})
    check_params(probe.probe_base_job, {"settings": {}, "model": {}, "num_labels": 3})


def test_probe_pair_settings_are_validated_and_the_paper_reads_the_premise(demo_raw):
    from helpers import rejected

    from langskew.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    assert cfg["study_a"]["probe"]["pair_input"] == "premise"
    assert cfg["study_a"]["probe"]["sweep_features"] == "standardised"
    message = rejected(demo_raw, lambda c: c["study_a"]["probe"].update(pair_input="hypothesis"))
    assert "pair_input" in message and "premise" in message and "pair" in message
    message = rejected(demo_raw, lambda c: c["study_a"]["probe"].update(sweep_features="scaled"))
    assert "sweep_features" in message and "standardised" in message
