"""Study B alignment (langskew.study_b.alignment): representation and gradient alignment and the job."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import job, rejected
from langskew import devices
from langskew.errors import LangskewError
from langskew.study_b import alignment
from langskew.study_b.languages import load_packed_parallel as packed_sequences
from langskew.study_b.model import GPT, GPTConfig, save_model
from langskew.workflow import check_params
from test_perplexity import ALIGNMENT, CLONE, REAL, tiny_gpt, tokens  # noqa: F401 (tokens: a fixture)


def test_token_cosine_is_one_for_identical_states_and_matching_recovers_a_permutation():
    h = torch.randn(12, 16)
    assert alignment.token_cosine(h, h.clone(), match=False) == pytest.approx(1.0)
    perm = torch.randperm(12)
    assert alignment.token_cosine(h, h[perm], match=True) == pytest.approx(1.0)
    assert alignment.token_cosine(h, h[perm], match=False) < 0.9
    # matching unequal lengths: every token of the shorter side is matched to its copy
    assert alignment.token_cosine(h[:7], h[perm], match=True) == pytest.approx(1.0)


def test_representation_alignment_per_layer():
    model = tiny_gpt()
    rng = np.random.default_rng(0)
    same = [(s, s.copy()) for s in (rng.integers(0, 40, 10) for _ in range(3))]
    table = alignment.representation_alignment(model, same, match=False)
    assert list(table["layer"]) == [1, 2] and (table["n"] == 3).all()
    np.testing.assert_allclose(table["cosine_mean"], 1.0, atol=1e-5)
    other = [(rng.integers(0, 20, 10), rng.integers(20, 40, 10)) for _ in range(3)]
    assert (alignment.representation_alignment(model, other, match=False)["cosine_mean"] < 0.999).all()


def test_one_matching_on_the_layer_averaged_similarity_is_used_for_every_layer():
    # two tokens per side, two layers. Layer 1 prefers the identity matching strongly,
    # layer 2 weakly prefers the swap: one matching on the layer mean (identity) applies to
    # both layers, so layer 2 reports its identity cosines, not its own best matching.
    def unit(deg):
        return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]

    a1 = torch.tensor([unit(0), unit(90)])
    b1 = torch.tensor([unit(0), unit(90)])            # identity: cosines 1, 1; swap: 0, 0
    a2 = torch.tensor([unit(0), unit(90)])
    b2 = torch.tensor([unit(60), unit(20)])           # identity: .5, .34; swap: .94, .87
    got = alignment.layer_cosines([a1, a2], [b1, b2], match=True)
    identity_l2 = (math.cos(math.radians(60)) + math.cos(math.radians(70))) / 2
    np.testing.assert_allclose(got, [1.0, identity_l2], rtol=1e-6)
    # a separate matching per layer would have reported the swap for layer 2
    assert alignment.token_cosine(a2, b2, match=True) > identity_l2 + 0.3


def test_gradient_alignment_is_one_for_identical_inputs_and_lower_otherwise():
    model = tiny_gpt()
    rng = np.random.default_rng(1)
    seq = rng.integers(0, 40, 12)
    same = alignment.gradient_alignment(model, [(seq, seq.copy())])
    assert list(same["parameter"])[-2:] == [alignment.GRADIENT_MEAN, alignment.GRADIENT_MEAN_ALL]
    np.testing.assert_allclose(same["cosine_mean"], 1.0, atol=1e-5)
    diff = alignment.gradient_alignment(model, [(seq, rng.integers(0, 40, 12)), (seq, rng.integers(0, 40, 12))])
    assert (diff["n"] == 2).all()
    assert diff.set_index("parameter").loc["mean", "cosine_mean"] < 0.99
    assert all(p.grad is None for p in model.parameters())


def test_mean_gradient_cosine_is_over_block_tensors_with_q_k_v_separate():
    model = GPT(GPTConfig(vocab_size=40, n_layer=12, d_model=24, n_head=4, context=16)).eval()  # small: 12 blocks
    rng = np.random.default_rng(2)
    pairs = [(rng.integers(0, 20, 10), rng.integers(20, 40, 10))]  # disjoint ids, like clones
    table = alignment.gradient_alignment(model, pairs)
    tensors = table[~table["parameter"].isin([alignment.GRADIENT_MEAN, alignment.GRADIENT_MEAN_ALL])]
    in_mean = set(tensors.loc[tensors["in_mean"], "parameter"])
    per_block = {"ln1.weight", "ln1.bias", "attn.q.weight", "attn.q.bias", "attn.k.weight", "attn.k.bias",
                 "attn.v.weight", "attn.v.bias", "attn.proj.weight", "attn.proj.bias", "ln2.weight", "ln2.bias",
                 "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias"}
    assert in_mean == {f"blocks.{i}.{t}" for i in range(12) for t in per_block}  # 16 x 12 = 192 tensors
    assert set(tensors.loc[~tensors["in_mean"], "parameter"]) == {"wte.weight", "wpe.weight", "ln_f.weight",
                                                                   "ln_f.bias", "lm_head.weight"}
    assert not any(".attn.qkv." in p for p in tensors["parameter"])
    by = table.set_index("parameter")["cosine_mean"]
    assert by["wte.weight"] == pytest.approx(0.0, abs=1e-6)  # disjoint embedding rows are orthogonal
    assert by[alignment.GRADIENT_MEAN] == pytest.approx(tensors.loc[tensors["in_mean"], "cosine_mean"].mean())
    assert by[alignment.GRADIENT_MEAN_ALL] == pytest.approx(tensors["cosine_mean"].mean())
    # the split tensors are the rows of the fused projection's gradient
    grads = alignment.sequence_gradients(model, pairs[0][0], torch.device("cpu"))
    model.zero_grad(set_to_none=True)
    _, loss = model(torch.as_tensor(pairs[0][0][None, :-1]), torch.as_tensor(pairs[0][0][None, 1:]))
    loss.backward()
    fused = model.blocks[3].attn.qkv.weight.grad
    torch.testing.assert_close(grads["blocks.3.attn.k.weight"], fused[24:48].flatten())


# -- the job on tiny token streams ------------------------------------------------------
def test_alignment_job(tmp_path, tokens):  # noqa: F811 (the fixture)
    model = tiny_gpt(vocab=40)
    save_model(model, tmp_path / "model")
    params = dict(run=CLONE, seed=0, alignment_precision="fp16", **ALIGNMENT)
    outputs = {"representation": str(tmp_path / "rep.csv"), "gradient": str(tmp_path / "grad.csv")}
    alignment.alignment_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"]]}, outputs), **params)
    rep, grad = pd.read_csv(outputs["representation"]), pd.read_csv(outputs["gradient"])
    assert list(rep.columns) == ["layer", "cosine_mean", "cosine_sd", "n"] and list(rep["n"]) == [3, 3]
    assert list(grad["parameter"].iloc[-2:]) == ["mean", "mean_all_tensors"]
    # disjoint clone vocabularies: the two languages touch different embedding rows
    assert grad.set_index("parameter").loc["wte.weight", "cosine_mean"] == pytest.approx(0.0, abs=1e-6)

    # real languages: sentences (4..8 tokens) packed into sequences of 10..16 tokens per side
    parallel = str(tmp_path / "tokens" / "parallel.npz")
    n_packed = len(packed_sequences(parallel, 10, 16)["en"])
    assert 1 <= n_packed < 6
    real_params = dict(run=REAL, seed=0, n_parallel=n_packed, parallel_min_len=10, parallel_max_len=16,
                       clone_parallel="parallel", alignment_precision="fp16")
    alignment.alignment_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"], tokens["fr"]],
                                 "parallel": parallel}, outputs), **real_params)
    assert list(pd.read_csv(outputs["representation"])["n"]) == [n_packed] * 2
    # fewer packed sequences than n_parallel: an error that says how many exist, never a silent shortfall
    with pytest.raises(LangskewError, match=f"{n_packed} parallel sequences .* fewer than the {n_packed + 1} asked"):
        alignment.alignment_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"], tokens["fr"]],
                                     "parallel": parallel}, outputs), **{**real_params, "n_parallel": n_packed + 1})
    # clones on the packed parallel lines of their base language (the default)
    clone_params = dict(run=CLONE, seed=0, n_parallel=n_packed, parallel_min_len=10, parallel_max_len=16,
                        clone_parallel="parallel", alignment_precision="fp32")
    alignment.alignment_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"]], "parallel": parallel},
                                outputs), **clone_params)
    assert list(pd.read_csv(outputs["representation"])["n"]) == [n_packed] * 2
    with pytest.raises(LangskewError, match="parallel_max_len"):
        alignment.alignment_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"]], "parallel": parallel},
                                    outputs),
                                run=CLONE, seed=0, n_parallel=4, parallel_min_len=10, parallel_max_len=64,
                                clone_parallel="parallel", alignment_precision="fp16")
    # a setting the rule does not pass is named before the job starts
    with pytest.raises(LangskewError, match="n_parallel"):
        check_params(alignment.alignment_job, dict(run=CLONE, seed=0, parallel_min_len=10, parallel_max_len=16,
                                                   clone_parallel="parallel", alignment_precision="fp16"),
                     "study_b_alignment")


# -- precision: the authors' fp16 autocast without loss scaling, fp32 as an option ----------
@pytest.fixture
def cuda_precision(monkeypatch):
    """The device decision as on a GPU (precision settings apply); returns the autocast dtypes entered."""
    entered: list = []
    real = devices.autocast

    def recording(device, dtype):
        entered.append(dtype)
        return real(device, dtype)

    monkeypatch.setattr(devices, "mixed_precision_device", lambda device: True)
    monkeypatch.setattr(devices, "autocast", recording)
    return entered


def _pairs(n=3, length=13):
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 40, length), rng.integers(0, 40, length)) for _ in range(n)]


def test_fp16_alignment_autocasts_on_a_gpu_and_stays_close_to_fp32(cuda_precision):
    model, pairs = tiny_gpt(), _pairs()
    rep32 = alignment.representation_alignment(model, pairs, match=False, precision="fp32")
    grad32 = alignment.gradient_alignment(model, pairs, precision="fp32")
    assert set(cuda_precision) == {None}
    cuda_precision.clear()
    rep16 = alignment.representation_alignment(model, pairs, match=False, precision="fp16")
    grad16 = alignment.gradient_alignment(model, pairs, precision="fp16")
    assert set(cuda_precision) == {torch.float16} and len(cuda_precision) == 4 * len(pairs)
    # fp16 keeps 11 significant bits: the cosines move, by far less than their spread
    diff = np.abs(rep16["cosine_mean"] - rep32["cosine_mean"])
    assert 0 < diff.max() < 1e-2
    g16, g32 = grad16.set_index("parameter")["cosine_mean"], grad32.set_index("parameter")["cosine_mean"]
    assert 0 < abs(g16["mean"] - g32["mean"]) < 2e-2


def test_fp16_gradients_are_not_loss_scaled(cuda_precision):
    """With a tiny output layer every gradient below it is under fp16's smallest subnormal
    (6e-8): without loss scaling, as the authors, it rounds to zero; fp32 keeps it."""
    model = tiny_gpt()
    with torch.no_grad():
        model.lm_head.weight.mul_(1e-7)
    ids = _pairs(1)[0][0]
    g32 = alignment.sequence_gradients(model, ids, torch.device("cpu"), "fp32")
    g16 = alignment.sequence_gradients(model, ids, torch.device("cpu"), "fp16")
    below = [name for name in g32 if name != "lm_head.weight"]
    assert all(0 < float(g32[n].abs().max()) < 6e-8 for n in below)
    assert all(float(g16[n].abs().max()) == 0.0 for n in below)
    torch.testing.assert_close(g16["lm_head.weight"], g32["lm_head.weight"], atol=1e-3, rtol=1e-2)


def test_on_the_cpu_both_precisions_run_in_fp32():
    """As the authors' code (autocast enabled for CUDA tensors only): a CPU run is the same whichever is set."""
    model, pairs = tiny_gpt(), _pairs(2)
    pd.testing.assert_frame_equal(alignment.representation_alignment(model, pairs, False, precision="fp16"),
                                  alignment.representation_alignment(model, pairs, False, precision="fp32"))
    pd.testing.assert_frame_equal(alignment.gradient_alignment(model, pairs, precision="fp16"),
                                  alignment.gradient_alignment(model, pairs, precision="fp32"))


def test_a_bad_alignment_precision_is_named(demo_raw):
    with pytest.raises(LangskewError, match="alignment_precision must be one of fp16, fp32, got 'bf16'"):
        alignment.gradient_alignment(tiny_gpt(), _pairs(1), precision="bf16")
    msg = rejected(demo_raw, lambda c: c["study_b"].setdefault("eval", {}).update(alignment_precision="bf16"))
    assert "alignment_precision" in msg and "fp16" in msg
