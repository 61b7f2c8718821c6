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
    tokenizer, model = inference.load_for_inference(tiny_models[kind])
    df = tiny_frame(5, pair=pair)
    reps = probe.sentence_representations(model, tokenizer, df, ["last", "all"], batch_size=4, max_length=32)
    assert list(reps) == ["last", "0", "1", "2"]  # 2 layers + embeddings
    for arr in reps.values():
        assert arr.shape == (len(df), 16)
    encoder = probe.encoder_of(model)
    first = df.iloc[[3]]
    import torch

    with torch.no_grad():
        out = encoder(**probe.encode_batch(tokenizer, first, 32, "cpu"), output_hidden_states=True)
    expected_last = out.pooler_output if kind == "bert" else out.hidden_states[-1][:, 0]
    # row order is restored after length-sorted batching
    np.testing.assert_allclose(reps["last"][3], expected_last[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(reps["1"][3], out.hidden_states[1][0, 0].numpy(), atol=1e-5)
    if kind == "bert":  # the pooler output is not the raw first-token vector
        assert not np.allclose(reps["last"], reps["2"])
    else:
        np.testing.assert_allclose(reps["last"], reps["2"], atol=1e-6)


def test_bad_layer_is_rejected(tiny_models):
    tokenizer, model = inference.load_for_inference(tiny_models["bert"])
    with pytest.raises(LangskewError, match="layer 7"):
        probe.sentence_representations(model, tokenizer, tiny_frame(2), [7])


def test_probe_job_with_base_model_path(tiny_models, tmp_path):
    data = tmp_path / "test.parquet"
    tiny_frame(10).to_parquet(data)
    out = tmp_path / "probe.csv"
    settings = dict(layers=["last", 0], C=1e-4, folds=5, max_examples=16, batch_size=8, max_length=32, seed=0)
    probe.probe_base_job(job({"data": str(data)}, [str(out)]), settings=settings,
                         model={"path": str(tiny_models["roberta"])}, num_labels=3)
    table = pd.read_csv(out)
    assert list(table.columns) == ["layer", "accuracy_mean", "accuracy_sd", "n_examples", "n_languages"]
    assert table["layer"].astype(str).tolist() == ["last", "0"]
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
