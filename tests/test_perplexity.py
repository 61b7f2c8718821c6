"""Study B held-out perplexity (langskew.study_b.perplexity): sliding windows and the job.

Also the tiny GPT, token streams and run specs that tests/test_alignment.py uses.
"""

import json
import math

import numpy as np
import pytest
import torch

from helpers import job, write_fake_token_stream
from langskew.errors import LangskewError
from langskew.study_b import perplexity
from langskew.study_b.model import GPT, GPTConfig, save_model


def tiny_gpt(vocab: int = 40, context: int = 16, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, n_layer=2, d_model=32, n_head=4, context=context)).eval()


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
    model = tiny_gpt()
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
        perplexity.sliding_window_perplexity(tiny_gpt(context=8), np.arange(20), window=16, stride=4)


# -- the job on tiny token streams ------------------------------------------------------
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


#: The evaluation jobs' params (keys of study_b.eval).
PERPLEXITY = {"window": 16, "stride": 4, "max_tokens": 200, "batch_size": 4, "precision": "fp16"}
ALIGNMENT = {"n_parallel": 3, "parallel_min_len": 12, "parallel_max_len": 12, "clone_parallel": "heldout"}


def test_perplexity_job(tmp_path, tokens):
    model = tiny_gpt(vocab=40)
    save_model(model, tmp_path / "model")
    params = dict(run=CLONE, seed=0, **PERPLEXITY)
    out = tmp_path / "ppl.json"
    result = perplexity.perplexity_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"]]}, [str(out)]),
                                       **params)
    assert json.loads(out.read_text()) == pytest.approx(result)
    assert set(result) == {"L1", "L2"} and all(1.0 < v < 200 for v in result.values())


def test_evaluation_autocasts_in_fp16_by_default_as_the_authors(monkeypatch, tmp_path, tokens):
    """The authors evaluate under torch.cuda.amp.autocast() (fp16); the precision is an option."""
    asked = []
    real = perplexity.amp_dtype

    def spy(device, precision):
        asked.append(precision)
        return real(device, precision)

    monkeypatch.setattr(perplexity, "amp_dtype", spy)
    model, ids = tiny_gpt(vocab=40), np.arange(30) % 40
    fp16 = perplexity.sliding_window_perplexity(model, ids, window=8, stride=4, device="cpu")
    fp32 = perplexity.sliding_window_perplexity(model, ids, window=8, stride=4, device="cpu", precision="fp32")
    assert asked == ["fp16", "fp32"] and fp16 == fp32  # the CPU runs in fp32 either way
    assert real(torch.device("cuda"), "fp16") is torch.float16
    save_model(model, tmp_path / "model")
    with pytest.raises(LangskewError, match="precision must be one of fp16, bf16, fp32"):
        perplexity.perplexity_job(job({"model": str(tmp_path / "model"), "tokens": [tokens["en"]]},
                                      [str(tmp_path / "p.json")]), run=CLONE, seed=0,
                                  **{**PERPLEXITY, "precision": "half"})
