"""The GPU code paths, executed on the CPU where torch allows it, each against the fp32 path.

Which path a job takes is decided by small functions in :mod:`langskew.devices`
(``mixed_precision_device``, ``bf16_supported``, ``fused_optimizer``); the fixture
``cuda_answers`` gives them their CUDA answers, so the real code of pretraining,
fine-tuning, SHAP and perplexity runs under bf16 (or fp16) autocast, with the fused AdamW
kernel and with ``torch.compile`` (CPU inductor) here. Tolerances: bf16 keeps 8 significant
bits (relative rounding 2^-9 = 2e-3 per operation), so bf16 results are compared with
fp32 within a few 1e-2; fp16 within 1e-2; fused AdamW and compiled graphs compute in fp32
and are compared within 1e-5 / 1e-4 (only the order of floating-point operations differs).

CUDA only by nature, not run here: NCCL (``devices.dist_backend`` gives gloo without a GPU;
DDP on gloo is tests/test_pretrain.py's), the GPU's own bf16 check
(``torch.cuda.is_bf16_supported``, inside ``devices.bf16_supported``; its fp16 fallback is
tested below), TF32 switches and CUDA graphs.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import build_tiny_encoder, make_tiny_classification_frames, tiny_frame, write_fake_token_stream
from langskew import devices
from langskew.study_b import pretrain as tr
from langskew.study_b.languages import build_mixture
from langskew.study_b.model import GPT, GPTConfig

CPU = torch.device("cpu")
HAS_CXX = any(shutil.which(c) for c in ("g++", "c++", "clang++"))
needs_cxx = pytest.mark.skipif(not HAS_CXX, reason="torch.compile on the CPU (inductor) needs a C++ compiler")

RUN = {"id": "tiny-clone", "kind": "clone", "size": "tiny", "scale": 1.0, "steps": 12, "base_languages": ["en"],
       "n_languages": 2, "schedule": [[0.7, 0.3]], "clone_fraction": 1.0, "vocab_mode": None,
       "data_fraction": 1.0, "language": None, "label": "tiny clone"}
MODEL = {"n_layer": 2, "d_model": 32, "n_head": 4}
HP = {"context": 16, "batch_size": 8, "micro_batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 3,
      "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.0, "grad_clip": 1.0, "precision": "bf16",
      "compile": False, "eval_every": 12, "eval_batches": 2, "checkpoint_every": 0, "log_every": 4}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def cuda_answers(monkeypatch):
    """The device decisions as on a GPU with bf16; returns the autocast dtypes the code entered."""
    entered: list[torch.dtype | None] = []
    real = devices.autocast

    def recording(device, dtype):
        entered.append(dtype)
        return real(device, dtype)

    monkeypatch.setattr(devices, "mixed_precision_device", lambda device: True)
    monkeypatch.setattr(tr, "fused_optimizer", lambda device: True)  # imported by name there
    for module in ("langskew.study_b.pretrain", "langskew.study_b.perplexity", "langskew.study_a.finetune"):
        monkeypatch.setattr(f"{module}.autocast", recording)
    monkeypatch.setattr(devices, "autocast", recording)  # shap_fast imports it when it runs
    return entered


def test_device_decisions_on_the_cpu_and_as_on_a_gpu(monkeypatch):
    # the CPU's own answers: full precision, no fused kernel, gloo
    assert devices.amp_dtype(CPU, "bf16") is None and devices.amp_dtype(CPU, True) is None
    assert not devices.fused_optimizer(CPU)
    if not torch.cuda.is_available():
        assert devices.dist_backend() == "gloo"
    # a GPU's: bf16 for "bf16"/True, fp16 for "fp16", none for fp32/False/None ...
    monkeypatch.setattr(devices, "mixed_precision_device", lambda device: True)
    assert [devices.amp_dtype(CPU, p) for p in ("bf16", True, "fp16", "fp32", False, None)] == \
        [torch.bfloat16, torch.bfloat16, torch.float16, None, None, None]
    # ... and fp16 on a GPU without bf16 (e.g. a V100)
    monkeypatch.setattr(devices, "bf16_supported", lambda device: False)
    assert devices.amp_dtype(CPU, "bf16") is torch.float16


# -- Study B: pretraining ----------------------------------------------------------------
@pytest.fixture
def mixture(tmp_path):
    meta = write_fake_token_stream(tmp_path / "tokens" / "en", "en", vocab_size=24, n_train=6000, n_test=400)
    return build_mixture(RUN, [meta], 0)


def _pretrain(mixture, **hp):
    cfg = GPTConfig(vocab_size=mixture.vocab_size, context=16, **MODEL)
    return tr.pretrain(mixture, cfg, tr.TrainHP.from_dict({**HP, **hp}), total_steps=12, seed=0, progress=False)


def test_pretraining_in_bf16_autocast_with_fused_adamw_matches_fp32(mixture, monkeypatch):
    plain = _pretrain(mixture)  # CPU: fp32, unfused
    entered = []
    real = devices.autocast
    monkeypatch.setattr(devices, "mixed_precision_device", lambda device: True)
    monkeypatch.setattr(tr, "fused_optimizer", lambda device: True)
    monkeypatch.setattr(tr, "autocast", lambda device, dtype: entered.append(dtype) or real(device, dtype))
    made = []
    monkeypatch.setattr(tr, "make_optimizer", lambda *a, f=tr.make_optimizer: made.append(f(*a)) or made[-1])
    mixed = _pretrain(mixture)
    assert set(entered) == {torch.bfloat16}  # every training and validation forward pass
    assert made[0].defaults["fused"] is True
    a, b = pd.DataFrame(plain.curve), pd.DataFrame(mixed.curve)
    assert not np.array_equal(a["train_loss"], b["train_loss"])  # another arithmetic ran ...
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=3e-2)  # ... to the same losses
    np.testing.assert_allclose(b["val_loss_L1"].dropna(), a["val_loss_L1"].dropna(), rtol=3e-2)


def _steps(module, optimizer, batches, hp):
    return [float(tr.train_step(module, optimizer, b, 2, hp, CPU, None)) for b in batches]


def test_fused_adamw_matches_the_default_adamw(mixture, monkeypatch):
    hp = tr.TrainHP.from_dict({**HP, "precision": "fp32"})
    cfg = GPTConfig(vocab_size=mixture.vocab_size, context=16, **MODEL)
    batches = [mixture.batch(s, 8, 16) for s in range(4)]
    torch.manual_seed(0)
    plain = GPT(cfg)
    fused = GPT(cfg)
    fused.load_state_dict(plain.state_dict())
    opt_plain = tr.make_optimizer(plain, hp, CPU)
    monkeypatch.setattr(tr, "fused_optimizer", lambda device: True)
    opt_fused = tr.make_optimizer(fused, hp, CPU)
    assert not opt_plain.defaults["fused"] and opt_fused.defaults["fused"] is True
    np.testing.assert_allclose(_steps(fused, opt_fused, batches, hp), _steps(plain, opt_plain, batches, hp),
                               rtol=1e-5)
    # 4 steps of lr 3e-3 move a weight by up to 1.2e-2; Adam's m / sqrt(v) of a near-zero gradient
    # is sensitive to the order of operations, so the weights agree to 1e-5 (not to rounding)
    for p, q in zip(fused.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)


@needs_cxx
def test_compiled_gpt_training_step_matches_eager(mixture):
    hp = tr.TrainHP.from_dict({**HP, "precision": "fp32", "compile": True})
    cfg = GPTConfig(vocab_size=mixture.vocab_size, context=16, **MODEL)
    batches = [mixture.batch(s, 8, 16) for s in range(3)]
    torch.manual_seed(0)
    eager = GPT(cfg)
    model = GPT(cfg)
    model.load_state_dict(eager.state_dict())
    compiled = tr._wrap(model, hp, tr.DistInfo(), CPU)  # the pretraining job's wrapper: torch.compile
    assert compiled is not model and hasattr(compiled, "_orig_mod")
    torch._dynamo.reset()
    losses = _steps(compiled, tr.make_optimizer(model, hp, CPU), batches, hp)
    np.testing.assert_allclose(losses, _steps(eager, tr.make_optimizer(eager, hp, CPU), batches, hp), rtol=1e-4)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


# -- Study B: perplexity -----------------------------------------------------------------
def test_perplexity_in_bf16_autocast_matches_fp32(cuda_answers, monkeypatch):
    from langskew.study_b.perplexity import sliding_window_nll

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, context=16, **MODEL)).eval()
    ids = np.random.default_rng(0).integers(0, 40, size=300)
    mixed, n = sliding_window_nll(model, ids, window=16, stride=4, batch_size=8, precision="bf16")
    assert set(cuda_answers) == {torch.bfloat16}
    monkeypatch.setattr(devices, "mixed_precision_device", lambda device: False)
    plain, m = sliding_window_nll(model, ids, window=16, stride=4, batch_size=8, precision="bf16")
    assert n == m and mixed != plain
    assert mixed == pytest.approx(plain, rel=1e-2)


# -- Study A: fine-tuning ----------------------------------------------------------------
@pytest.fixture(scope="module")
def classification(tmp_path_factory):
    from langskew.study_a.modeling import build_tiny_model, texts_of

    root = tmp_path_factory.mktemp("cuda_paths")
    frames = make_tiny_classification_frames(sizes={"train": 96, "validation": 32, "test": 32})
    arch = {"vocab_size": 200, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 64}
    build_tiny_model(texts_of(frames.values()), root / "tiny", arch, seed=0)
    return root / "tiny", frames


FT_HP = {"epochs": 2, "batch_size": 8, "grad_accum": 1, "max_length": 64, "lr_encoder": 1e-3, "lr_head": 3e-3,
         "eval_every": 1.0, "eval_batch_size": 32, "checkpoint_every": 0, "num_workers": 0}


def _finetune(classification, precision):
    from langskew.study_a.finetune import finetune

    path, frames = classification
    return finetune(frames["train"], frames["validation"], {"test": frames["test"]}, path, ["a", "b", "c"],
                    {**FT_HP, "precision": precision}, seed=0, device="cpu")


@pytest.mark.parametrize("precision,dtype,rtol", [("bf16", torch.bfloat16, 3e-2), ("fp16", torch.float16, 1e-2)])
def test_finetuning_in_mixed_precision_matches_fp32(classification, cuda_answers, monkeypatch, precision, dtype,
                                                     rtol):
    """bf16 autocast, and fp16 autocast with the GradScaler (torch has a CPU GradScaler)."""
    mixed = _finetune(classification, precision)
    assert mixed.metrics["mixed_precision"] == str(dtype).replace("torch.", "")
    assert set(cuda_answers) == {dtype}
    monkeypatch.setattr(devices, "mixed_precision_device", lambda device: False)
    plain = _finetune(classification, precision)
    assert plain.metrics["mixed_precision"] is None
    a, b = plain.curve, mixed.curve
    assert not np.array_equal(a["train_loss"], b["train_loss"])
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=rtol)
    np.testing.assert_allclose(b["val_loss"], a["val_loss"], rtol=rtol)
    probs = [c for c in a.columns if c.startswith("prob_")]
    np.testing.assert_allclose(mixed.predictions[probs], plain.predictions[probs], atol=5 * rtol)


@needs_cxx
def test_compiled_finetuning_step_matches_eager(classification):
    from langskew.study_a.finetune import _forward, collate, encode, make_optimizer
    from langskew.study_a.modeling import load_classifier

    path, frames = classification
    torch.manual_seed(0)
    tokenizer, eager = load_classifier(path, 3, {0: "a", 1: "b", 2: "c"})
    torch.manual_seed(0)
    _, model = load_classifier(path, 3, {0: "a", 1: "b", 2: "c"})
    torch.testing.assert_close(dict(model.named_parameters()), dict(eager.named_parameters()))
    feats = encode(tokenizer, frames["train"], 64, np.ones(len(frames["train"])))
    # one padded shape, so that inductor compiles the forward and backward graphs once
    batches = [collate(feats[i:i + 8], tokenizer.pad_token_id, pad_to=64) for i in range(0, 24, 8)]
    torch._dynamo.reset()
    compiled = torch.compile(model)
    hp = {"lr_encoder": 1e-3, "lr_head": 3e-3, "adam_eps": 1e-8, "weight_decay": 0.0}
    runs = []
    for module, params in ((compiled, model), (eager, eager)):
        module.eval()  # no dropout: compiled code draws other random numbers than eager code
        optimizer = make_optimizer(params, hp)
        losses = []
        for batch in batches:
            logits, loss = _forward(module, batch, CPU, None)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss))
        runs.append(losses)
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-4)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


# -- Study A: SHAP -----------------------------------------------------------------------
def test_shap_in_bf16_autocast_matches_fp32(tmp_path, cuda_answers):
    from langskew.study_a import shap_values as sv
    from langskew.study_a.inference import load_for_inference
    from langskew.study_a.shap_fast import ProbabilityModel

    tokenizer, model = load_for_inference(build_tiny_encoder(tmp_path / "bert", kind="bert"))
    df = tiny_frame(2)
    texts = df["text"].tolist()
    mixed = ProbabilityModel(model, tokenizer, 32, pair=False, precision="auto")
    plain = ProbabilityModel(model, tokenizer, 32, pair=False, precision="fp32")
    assert mixed.dtype is torch.bfloat16 and plain.dtype is None
    p_mixed, p_plain = mixed(texts), plain(texts)
    assert not np.array_equal(p_mixed, p_plain)
    np.testing.assert_allclose(p_mixed, p_plain, atol=2e-2)
    cuda_answers.clear()
    v_mixed = sv.explain(model, tokenizer, df, batch_size=8, max_evals=60, max_length=32, precision="auto")
    assert set(cuda_answers) == {torch.bfloat16}
    v_plain = sv.explain(model, tokenizer, df, batch_size=8, max_evals=60, max_length=32, precision="fp32")
    scale = np.abs(v_plain["value"]).max()
    np.testing.assert_allclose(v_mixed["value"], v_plain["value"], atol=0.05 * scale)
