"""A model whose activations exceed fp16's range (as a bf16-trained model's may) stops the
perplexity evaluation under fp16 autocast with a named error that says which precision to use.

fp16 autocast runs on the CPU here (torch's CPU autocast supports float16); the precision
decision of :mod:`langskew.devices` is given its CUDA answer, so the job's own code path runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from langskew import devices
from langskew.study_b.model import GPT, GPTConfig
from langskew.study_b.perplexity import NonFiniteLossError, sliding_window_nll, sliding_window_perplexity

FP16_MAX = 65504.0  # largest finite float16
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def loud_model(scale: float) -> GPT:
    """A tiny GPT whose MLP weights are multiplied by ``scale`` (before the final LayerNorm, which
    brings the logits back to a small range)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=24, n_layer=2, d_model=32, n_head=4, context=16)).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.mlp.fc.weight.mul_(scale)
            block.mlp.proj.weight.mul_(scale)
    return model


def largest_block_output(model: GPT, ids: np.ndarray) -> float:
    """Largest |value| of any block's MLP output in fp32."""
    seen = []
    hooks = [b.mlp.register_forward_hook(lambda m, i, o: seen.append(float(o.abs().max()))) for b in model.blocks]
    with torch.no_grad():
        model(torch.as_tensor(ids[:16], dtype=torch.long)[None])
    for h in hooks:
        h.remove()
    return max(seen)


@pytest.fixture
def on_gpu_path(monkeypatch):
    monkeypatch.setattr(devices, "mixed_precision_device", lambda device: True)


IDS = np.random.default_rng(0).integers(0, 24, size=200)


def test_torch_autocasts_fp16_on_this_cpu():
    with torch.autocast("cpu", dtype=torch.float16):
        out = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert out.dtype == torch.float16


def test_fp16_overflow_is_named_with_the_precision_to_use(on_gpu_path):
    model = loud_model(1e4)
    assert largest_block_output(model, IDS) > FP16_MAX  # the premise: beyond fp16's range
    # fp32 and bf16 (8 exponent bits, as fp32) evaluate it
    plain, n = sliding_window_nll(model, IDS, window=16, stride=4, precision="fp32")
    bf16, m = sliding_window_nll(model, IDS, window=16, stride=4, precision="bf16")
    assert np.isfinite(plain) and np.isfinite(bf16) and n == m
    with pytest.raises(NonFiniteLossError) as err:
        sliding_window_perplexity(model, IDS, window=16, stride=4, precision="fp16")
    msg = str(err.value)
    assert "fp16" in msg and "65504" in msg and "study_b.eval.precision: bf16" in msg


def test_a_model_within_fp16_range_evaluates_in_fp16(on_gpu_path):
    model = loud_model(1.0)
    assert largest_block_output(model, IDS) < FP16_MAX
    half, n = sliding_window_nll(model, IDS, window=16, stride=4, precision="fp16")
    plain, m = sliding_window_nll(model, IDS, window=16, stride=4, precision="fp32")
    assert n == m and half == pytest.approx(plain, rel=1e-2)


def test_a_non_finite_loss_in_fp32_says_no_precision_helps():
    model = loud_model(1.0)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="non-finite in fp32 too"):
        sliding_window_perplexity(model, IDS, window=16, stride=4, precision="fp16")  # CPU: fp32
