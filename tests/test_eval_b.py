"""Study B evaluation: sliding-window perplexity, scaling fits, alignment, and their jobs
(langskew.study_b.perplexity, .fit and .alignment)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import job, write_fake_token_stream
from langskew.errors import LangskewError
from langskew.study_b import alignment, fit, perplexity
from langskew.study_b.languages import load_packed_parallel as packed_sequences
from langskew.study_b.model import GPT, GPTConfig, save_model


def _tiny(vocab: int = 40, context: int = 16, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, n_layer=2, d_model=32, n_head=4, context=context)).eval()


# -- perplexity -------------------------------------------------------------------------
@pytest.mark.parametrize("n,window,stride", [(30, 8, 3), (29, 8, 4), (9, 8, 2), (6, 8, 3), (40, 8, 8)])
def test_window_plan_scores_the_last_stride_targets_of_every_window(n, window, stride):
    scored = []
    plan = perplexity.window_plan(n, window, stride)
    for start, k in plan:
        length = min(window, n - 1)
        assert start >= 0 and start + length <= n - 1
        assert k <= stride
        scored += list(range(start + length - k + 1, start + length + 1))  # target positions
    # the first window scores only its last `stride` targets (the authors' last_n), like every
    # other window: the first window - stride targets are never scored, the rest exactly once
    first = min(window, n - 1) - min(stride, n - 1) + 1
    assert plan[0][1] == min(stride, n - 1)
    assert scored == list(range(first, n))


def _context_start(t: int, n: int, window: int, stride: int) -> int:
    """Start of the context that target position t gets, derived by hand from the scheme."""
    if t <= window:
        return 0  # first window
    last_end = n - 1
    k = math.ceil((t - window) / stride)  # window k (start k*stride) scores (k*stride+window-stride, k*stride+window]
    end = min(k * stride + window, last_end)
    return end - window


@pytest.mark.parametrize("n", [27, 31])
def test_sliding_window_perplexity_matches_token_by_token_scoring(n):
    model = _tiny()
    ids = np.random.default_rng(n).integers(0, 40, size=n)
    window, stride = 8, 3
    nll, count = 0.0, 0
    with torch.no_grad():
        for t in range(window - stride + 1, n):  # the first window - stride targets are not scored
            s = _context_start(t, n, window, stride)
            assert t - s <= window
            logits, _ = model(torch.as_tensor(ids[s:t])[None])
            nll -= torch.log_softmax(logits[0, -1].double(), -1)[ids[t]].item()
            count += 1
    expected = math.exp(nll / count)
    got = perplexity.sliding_window_perplexity(model, ids, window=window, stride=stride, batch_size=3, device="cpu")
    assert got == pytest.approx(expected, rel=1e-5)
    # stride == window gives non-overlapping chunks: a different (higher-context-loss) value
    chunked = perplexity.sliding_window_perplexity(model, ids, window=8, stride=8, device="cpu")
    assert chunked != pytest.approx(got, rel=1e-7)


def test_perplexity_rejects_bad_windows():
    with pytest.raises(LangskewError, match="stride"):
        perplexity.window_plan(100, 8, 9)
    with pytest.raises(LangskewError, match="context"):
        perplexity.sliding_window_perplexity(_tiny(context=8), np.arange(20), window=16, stride=4)


# -- scaling fit ------------------------------------------------------------------------
def test_fit_power_law_recovers_known_parameters():
    c, a, b = 0.06, 0.012, 0.45
    x = np.array([0.05, 0.1, 0.25, 0.5, 1.0, 2.0])
    got = fit.fit_power_law(x, fit.power_law(x, c, a, b))
    np.testing.assert_allclose(got, (c, a, b), rtol=1e-4)
    with pytest.raises(LangskewError, match="3 distinct"):
        fit.fit_power_law([0.5, 1.0], [0.03, 0.04])


def test_mlte_teff_and_mlpe_on_a_constructed_fit():
    c, a, b, budget = 0.05, 0.01, 0.5, 1000.0
    ppl_at_quarter = 1.0 / (c - a * 0.25 ** -0.5)  # the fit's PPL after 250 tokens
    assert fit.mlte(ppl_at_quarter, c, a, b, budget) == pytest.approx(250.0)
    assert fit.mlte(1.0 / c, c, a, b, budget) == math.inf  # beyond the asymptote
    assert fit.mlpe(250.0, c, a, b, budget) == pytest.approx(ppl_at_quarter)
    # a bilingual language that saw 125 tokens and reached the 250-token PPL: TEff 2
    table = fit.fit_table(
        mono_runs=[{"id": f"m{f}", "kind": "mono", "size": "s", "scale": f, "data_fraction": 1.0, "steps": 10 * f,
                    "language": "en", "base_languages": ["en"]} for f in (0.1, 0.25, 0.5, 1.0)],
        mono_ppl=[{"en": 1.0 / float(fit.power_law(f, c, a, b))} for f in (0.1, 0.25, 0.5, 1.0)],
        target_runs=[{"id": "t", "kind": "clone", "size": "s", "scale": 1.0, "steps": 10, "n_languages": 2,
                      "base_languages": ["en"], "schedule": [[0.875, 0.125]]}],
        target_ppl=[{"L1": 1.0 / float(fit.power_law(0.875, c, a, b)), "L2": ppl_at_quarter}],
        batch_size=4, context=25)  # budget = 10 steps * 4 * 25 = 1000 tokens
    row = table.set_index("language").loc["L2"]
    assert row["tokens_seen"] == pytest.approx(125.0)
    assert row["MLTE"] == pytest.approx(250.0, rel=1e-3)
    assert row["TEff"] == pytest.approx(2.0, rel=1e-3)
    assert row["MLPE"] == pytest.approx(fit.mlpe(125.0, c, a, b, 1000.0), rel=1e-3)
    assert table.set_index("language").loc["L1", "TEff"] == pytest.approx(1.0, rel=1e-3)
    assert row["base_language"] == "en"


def test_fit_reports_residuals_bounds_and_bootstrap_intervals():
    c, a, b = 0.05, 0.01, 0.5
    fractions = (0.1, 0.25, 0.5, 0.75, 1.0)
    noise = np.array([1.01, 0.99, 1.005, 0.995, 1.0])
    mono = [{"id": f"m{f}", "kind": "mono", "size": "s", "scale": f, "data_fraction": 1.0, "steps": 10 * f,
             "language": "en", "base_languages": ["en"]} for f in fractions]
    mono_ppl = [{"en": 1.0 / (float(fit.power_law(f, c, a, b)) * k)} for f, k in zip(fractions, noise)]
    target = [{"id": "t", "kind": "clone", "size": "s", "scale": 1.0, "steps": 10, "n_languages": 2,
               "base_languages": ["en"], "schedule": [[0.5, 0.5]]}]
    target_ppl = [{"L1": 1.0 / float(fit.power_law(0.4, c, a, b)), "L2": 1.0 / float(fit.power_law(0.6, c, a, b))}]
    table = fit.fit_table(mono, mono_ppl, target, target_ppl, batch_size=4, context=25, n_boot=200, seed=0)
    row = table.set_index("language").loc["L1"]
    assert row["fit_at_bound"] == "" and row["fit_reliable"]
    assert 0 < row["fit_rmse"] < 0.01 * c and row["fit_max_rel_error"] < 0.02
    assert row["TEff_lo"] <= row["TEff"] <= row["TEff_hi"] and row["TEff_hi"] - row["TEff_lo"] > 0
    assert row["MLPE_lo"] <= row["MLPE"] <= row["MLPE_hi"] and 0 < row["n_boot_ok"] <= 200
    points = fit.fit_points_table(mono, mono_ppl)
    np.testing.assert_allclose(points["residual"], points["inv_ppl"] - points["fitted_inv_ppl"])
    assert list(points["run"]) == [m["id"] for m in mono]
    # perplexities that keep falling fast: the asymptote c runs into its bound (1/PPL <= 1)
    steep = [{"en": 1.0 / min(0.9, 0.9 * f ** 1.5 + 0.01)} for f in fractions]
    flagged = fit.fit_table(mono, steep, target, target_ppl, batch_size=4, context=25, n_boot=20)
    assert "c=1" in flagged["fit_at_bound"].iloc[0] and not flagged["fit_reliable"].any()
    assert fit.params_at_bound((1.0, 0.2, 0.5)) == ["c=1"] and fit.params_at_bound((0.3, 0.2, 5.0)) == ["b=5"]


def test_fit_job_reads_perplexities_and_metrics(tmp_path):
    c, a, b = 0.05, 0.01, 0.5
    mono = [{"id": f"m-f{f}", "kind": "mono", "size": "s", "scale": f, "data_fraction": 1.0, "steps": int(20 * f),
             "language": "en", "base_languages": ["en"]} for f in (0.1, 0.25, 0.5, 1.0)]
    paths = []
    for run in mono:
        p = tmp_path / f"{run['id']}.json"
        p.write_text(json.dumps({"en": 1.0 / float(fit.power_law(run["scale"], c, a, b))}))
        paths.append(str(p))
    target = {"id": "t", "kind": "clone", "size": "s", "scale": 1.0, "steps": 20, "n_languages": 2,
              "base_languages": ["en"], "schedule": [[0.5, 0.5]]}
    (tmp_path / "t.json").write_text(json.dumps({"L1": 30.0, "L2": 31.0}))
    (tmp_path / "t-metrics.json").write_text(json.dumps({"tokens_seen": {"L1": 900, "L2": 1100}}))
    out = tmp_path / "fit.csv"
    inputs = {"mono": paths, "target": [str(tmp_path / "t.json")], "metrics": [str(tmp_path / "t-metrics.json")]}
    fit.fit_job(job(inputs, {"table": str(out), "points": str(tmp_path / "points.csv")}),
                mono_ids=mono, target_runs=[target], train={"batch_size": 2, "context": 50},
                fit={"n_boot": 50, "seed": 0})
    table = pd.read_csv(out)
    assert len(pd.read_csv(tmp_path / "points.csv")) == 4 and table["TEff_lo"].notna().all()
    assert list(table["language"]) == ["L1", "L2"]
    assert list(table["tokens_seen"]) == [900, 1100]
    np.testing.assert_allclose(table[["c", "a", "b"]].iloc[0], (c, a, b), rtol=1e-3)
    assert (table["TEff"] > 0).all()
    with pytest.raises(LangskewError, match="mono"):
        fit.fit_job(job({"mono": paths[:2], "target": []}, [str(out)]),
                    mono_ids=mono, target_runs=[], train={"batch_size": 2, "context": 50}, fit={})


# -- alignment --------------------------------------------------------------------------
def test_token_cosine_is_one_for_identical_states_and_matching_recovers_a_permutation():
    h = torch.randn(12, 16)
    assert alignment.token_cosine(h, h.clone(), match=False) == pytest.approx(1.0)
    perm = torch.randperm(12)
    assert alignment.token_cosine(h, h[perm], match=True) == pytest.approx(1.0)
    assert alignment.token_cosine(h, h[perm], match=False) < 0.9
    # matching unequal lengths: every token of the shorter side is matched to its copy
    assert alignment.token_cosine(h[:7], h[perm], match=True) == pytest.approx(1.0)


def test_representation_alignment_per_layer():
    model = _tiny()
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
    model = _tiny()
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


# -- jobs on tiny token streams ---------------------------------------------------------
@pytest.fixture
def tokens(tmp_path):
    metas = {lang: write_fake_token_stream(tmp_path / "tokens" / lang, lang, vocab_size=20, n_train=2000,
                                           n_test=300, seed=i) for i, lang in enumerate(("en", "fr"))}
    rng = np.random.default_rng(0)
    arrays = {}
    for lang in ("en", "fr"):
        lengths = rng.integers(4, 9, size=6)
        arrays[f"{lang}_ids"] = rng.integers(3, 20, size=int(lengths.sum())).astype(np.int64)
        arrays[f"{lang}_offsets"] = np.concatenate([[0], np.cumsum(lengths)])
    np.savez(tmp_path / "tokens" / "parallel.npz", **arrays)
    return metas


CLONE = {"id": "c", "kind": "clone", "size": "tiny", "scale": 1.0, "steps": 10, "base_languages": ["en"],
         "n_languages": 2, "schedule": [[0.5, 0.5]], "clone_fraction": 1.0, "vocab_mode": None,
         "data_fraction": 1.0, "language": None, "label": "clone"}
REAL = {**CLONE, "id": "r", "kind": "real", "base_languages": ["en", "fr"], "vocab_mode": "disjoint"}


def test_perplexity_and_alignment_jobs(tmp_path, tokens):
    model = _tiny(vocab=40)
    save_model(model, tmp_path / "model")
    params = dict(run=CLONE, seed=0, eval={"window": 16, "stride": 4, "max_tokens": 200, "batch_size": 4,
                                           "n_parallel": 3, "parallel_min_len": 12, "parallel_max_len": 12,
                                           "clone_parallel": "heldout"})
    out = tmp_path / "ppl.json"
    result = perplexity.perplexity_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"]]}, [str(out)]),
                                       **params)
    assert json.loads(out.read_text()) == pytest.approx(result)
    assert set(result) == {"L1", "L2"} and all(1.0 < v < 200 for v in result.values())

    outputs = {"representation": str(tmp_path / "rep.csv"), "gradient": str(tmp_path / "grad.csv")}
    alignment.alignment_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"]]}, outputs), **params)
    rep, grad = pd.read_csv(outputs["representation"]), pd.read_csv(outputs["gradient"])
    assert list(rep.columns) == ["layer", "cosine_mean", "cosine_sd", "n"] and list(rep["n"]) == [3, 3]
    assert list(grad["parameter"].iloc[-2:]) == ["mean", "mean_all_tensors"]
    # disjoint clone vocabularies: the two languages touch different embedding rows
    assert grad.set_index("parameter").loc["wte.weight", "cosine_mean"] == pytest.approx(0.0, abs=1e-6)

    # real languages: sentences (4..8 tokens) packed into sequences of 10..16 tokens per side
    real_params = dict(run=REAL, seed=0, eval={"n_parallel": 4, "parallel_min_len": 10, "parallel_max_len": 16})
    parallel = str(tmp_path / "tokens" / "parallel.npz")
    alignment.alignment_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"], tokens["fr"]],
                                 "parallel": parallel}, outputs), **real_params)
    n_packed = len(packed_sequences(parallel, 10, 16)["en"])
    assert 1 <= n_packed < 6 and list(pd.read_csv(outputs["representation"])["n"]) == [min(4, n_packed)] * 2
    # clones on the packed parallel lines of their base language (the default)
    clone_params = dict(run=CLONE, seed=0, eval={"n_parallel": 4, "parallel_min_len": 10, "parallel_max_len": 16})
    alignment.alignment_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"]], "parallel": parallel},
                                outputs), **clone_params)
    assert list(pd.read_csv(outputs["representation"])["n"]) == [min(4, n_packed)] * 2
    with pytest.raises(LangskewError, match="parallel_max_len"):
        alignment.alignment_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"]], "parallel": parallel},
                                    outputs),
                                run=CLONE, seed=0,
                                eval={"n_parallel": 4, "parallel_min_len": 10, "parallel_max_len": 64})
    with pytest.raises(LangskewError, match="n_parallel"):
        alignment.alignment_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"]]}, outputs),
                                run=CLONE, seed=0, eval={})


def test_mlpe_is_inf_where_the_fit_has_no_positive_inverse_perplexity():
    c, a, b = 0.05, 0.04, 0.5
    # 1/PPL = c - a * x^-b <= 0 for x <= (a / c)^(1/b) = 0.64
    assert fit.mlpe(0.5, c, a, b) == float("inf")
    assert 0 < fit.mlpe(1.0, c, a, b) < float("inf")
