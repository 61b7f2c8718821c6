"""The Study B GPT: causality, SDPA vs hand-written attention, hidden states, save/load."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from langskew.errors import LangskewError
from langskew.study_b.model import GPT, GPTConfig, flops_per_token, load_model, save_model

CFG = GPTConfig(vocab_size=50, n_layer=2, d_model=32, n_head=4, context=16)


def _model(attention: str = "sdpa", seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CFG, attention=attention).eval()


def test_output_at_t_is_independent_of_later_inputs():
    model = _model()
    idx = torch.randint(0, CFG.vocab_size, (2, 12))
    changed = idx.clone()
    changed[:, 6:] = torch.randint(0, CFG.vocab_size, (2, 6))
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_sdpa_model_matches_naive_attention_with_shared_weights():
    fast, naive = _model("sdpa"), _model("naive", seed=1)
    naive.load_state_dict(fast.state_dict())  # the mask buffer is not part of the state
    assert set(fast.state_dict()) == set(naive.state_dict())
    idx = torch.randint(0, CFG.vocab_size, (3, CFG.context))
    targets = torch.randint(0, CFG.vocab_size, (3, CFG.context))
    la, loss_a = fast(idx, targets)
    lb, loss_b = naive(idx, targets)
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)
    loss_a.backward()
    loss_b.backward()
    for (name, pa), pb in zip(fast.named_parameters(), naive.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_loss_is_mean_next_token_cross_entropy_and_hidden_states_feed_the_head():
    model = _model()
    idx = torch.randint(0, CFG.vocab_size, (2, 10))
    targets = torch.randint(0, CFG.vocab_size, (2, 10))
    logits, loss, hidden = model(idx, targets, return_hidden=True)
    assert len(hidden) == CFG.n_layer and hidden[0].shape == (2, 10, CFG.d_model)
    torch.testing.assert_close(model.lm_head(model.ln_f(hidden[-1])), logits)
    expected = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).mean()
    torch.testing.assert_close(loss, expected)


def test_init_scales_residual_projections_and_unties_embeddings():
    cfg = GPTConfig(vocab_size=1000, n_layer=8, d_model=256, n_head=4, context=16)
    torch.manual_seed(0)
    model = GPT(cfg)
    assert model.lm_head.weight.data_ptr() != model.wte.weight.data_ptr()
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].mlp.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    # only the MLP output projection is residual-scaled; the attention output keeps 0.02
    assert model.blocks[0].attn.proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    # no materialised mask in the fast model
    assert not any("mask" in name for name, _ in model.named_buffers())
    assert flops_per_token(cfg, model.num_params()) > 6 * model.num_params()


def test_head_dim_sets_the_attention_width_and_the_parameter_count():
    """The authors' mini shape (8 heads of 32 at d_model 512, attention width 256) with a small test
    vocabulary of 1,000 ids, counted by hand (the real vocabularies: the next test)."""
    V, T, d, L, w = 1000, 512, 512, 4, 8 * 32
    attn = d * 3 * w + 3 * w + w * d + d  # qkv and output projections with biases
    mlp = d * 4 * d + 4 * d + 4 * d * d + d
    per_block = attn + mlp + 2 * 2 * d  # two LayerNorms
    expected = V * d + T * d + L * per_block + 2 * d + d * V  # embeddings, blocks, final LayerNorm, head
    assert per_block == 2_627_328 and expected == 11_796_480
    cfg = GPTConfig(vocab_size=V, n_layer=L, d_model=d, n_head=8, context=T, head_dim=32)
    model = GPT(cfg)
    assert model.num_params() == expected
    assert model.num_params(include_embeddings=False) == expected - V * d - T * d
    derived = GPT(GPTConfig(vocab_size=V, n_layer=L, d_model=d, n_head=8, context=T))  # head_dim 64
    assert derived.cfg.head_dim == 64
    assert derived.num_params() - model.num_params() == L * (d * 3 * 256 + 3 * 256 + 256 * d)
    x = torch.randint(0, V, (2, 10))
    assert model(x)[0].shape == (2, 10, V)
    torch.manual_seed(0)
    small = GPTConfig(vocab_size=50, n_layer=2, d_model=32, n_head=4, context=16, head_dim=4)
    sdpa, naive = GPT(small, "sdpa").eval(), GPT(small, "naive").eval()
    naive.load_state_dict(sdpa.state_dict())
    torch.testing.assert_close(sdpa(x % 50)[0], naive(x % 50)[0])


def mini_params_by_hand(V: int) -> int:
    """The mini model's parameters with V ids: embeddings, positions, 4 blocks, final LN, untied head."""
    T, d, L, w = 512, 512, 4, 8 * 32
    per_block = (d * 3 * w + 3 * w + w * d + d) + (d * 4 * d + 4 * d + 4 * d * d + d) + 2 * 2 * d
    return V * d + T * d + L * per_block + 2 * d + d * V


@pytest.mark.parametrize("V", [16384, 32768])
def test_real_mini_parameter_counts_are_those_docs_quote(V):
    """One language's 16,384 ids, and two clones' 32,768: the counts docs/studies.md quotes."""
    expected = mini_params_by_hand(V)
    model = GPT(GPTConfig(vocab_size=V, n_layer=4, d_model=512, n_head=8, context=512, head_dim=32))
    assert model.num_params() == expected
    docs = (Path(__file__).resolve().parents[1] / "docs/studies.md").read_text()
    assert f"{expected:,}" in docs


def test_save_load_round_trip(tmp_path):
    model = _model()
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(tmp_path / "m")
    assert loaded.cfg == CFG
    idx = torch.randint(0, CFG.vocab_size, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx)[0], model(idx)[0], atol=0, rtol=0)


def test_bad_configs_and_inputs_are_named():
    with pytest.raises(LangskewError, match="n_head"):
        GPTConfig(vocab_size=10, n_layer=1, d_model=30, n_head=4, context=8)
    with pytest.raises(LangskewError, match="context"):
        _model()(torch.zeros(1, CFG.context + 1, dtype=torch.long))
    with pytest.raises(LangskewError, match="attention"):
        GPT(CFG, attention="flash")


def test_token_embeddings_are_scaled_by_sqrt_d_model_before_positions():
    model = _model()
    idx = torch.randint(0, CFG.vocab_size, (1, 6))
    with torch.no_grad():
        _, _, hidden = model(idx, return_hidden=True)
        x = model.wte(idx) * math.sqrt(CFG.d_model) + model.wpe(torch.arange(6))
        torch.testing.assert_close(hidden[0], model.blocks[0](x))
        unscaled = model.wte(idx) + model.wpe(torch.arange(6))
        assert not torch.allclose(hidden[0], model.blocks[0](unscaled), atol=1e-3)


def test_mlp_uses_the_tanh_gelu():
    model = _model()
    mlp = model.blocks[0].mlp
    x = torch.randn(2, 5, CFG.d_model) * 3
    with torch.no_grad():
        expected = mlp.proj(F.gelu(mlp.fc(x), approximate="tanh"))
        torch.testing.assert_close(mlp(x), expected, atol=0, rtol=0)
        assert not torch.allclose(mlp(x), mlp.proj(F.gelu(mlp.fc(x))), atol=1e-7, rtol=0)
