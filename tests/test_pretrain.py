"""Study B pretraining: schedule, learning, resuming after SIGKILL/SIGTERM, and DDP on CPU."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import job, write_fake_token_stream
from langskew.errors import LangskewError
from langskew.study_b import pretrain as tr
from langskew.study_b.languages import build_mixture
from langskew.study_b.model import GPTConfig
from langskew.training import warmup_decay

SRC = Path(__file__).resolve().parents[1] / "src"
RUN = {"id": "tiny-clone", "kind": "clone", "size": "tiny", "scale": 1.0, "steps": 30, "base_languages": ["en"],
       "n_languages": 2, "schedule": [[0.7, 0.3]], "clone_fraction": 1.0, "vocab_mode": None,
       "data_fraction": 1.0, "language": None, "label": "tiny clone 70/30"}
MODEL = {"n_layer": 2, "d_model": 32, "n_head": 4}
HP = {"context": 16, "batch_size": 8, "micro_batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 3,
      "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.0, "grad_clip": None, "precision": "bf16",
      "compile": False, "eval_every": 10, "eval_batches": 2, "checkpoint_every": 5, "log_every": 5}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def meta(tmp_path):
    return write_fake_token_stream(tmp_path / "tokens" / "en", "en", vocab_size=24, n_train=6000, n_test=400)


def _job_args(tmp_path, meta, name, run=RUN, **extra):
    out = tmp_path / name
    params = {"run": run, "model": MODEL, "train": HP, "seed": 0, "ckpt_dir": str(out / "ckpt"),
              "keep_checkpoints": False, "num_gpus": 1, **extra}
    outputs = {"model": str(out / "model"), "curve": str(out / "curve.csv"), "metrics": str(out / "metrics.json")}
    return {"input": {"tokens": [meta]}, "output": outputs, "params": params, "threads": 1,
            "log": str(out / "job.log")}


def _call(args):
    Path(args["log"]).parent.mkdir(parents=True, exist_ok=True)
    return tr.pretrain_job(job(args["input"], args["output"], threads=args["threads"], log_file=args["log"]),
                           **args["params"])


# -- pieces -----------------------------------------------------------------------------
def test_lr_schedule_warms_up_then_decays_by_cosine_to_min_lr():
    hp = tr.TrainHP.from_dict({**HP, "lr": 1.0, "min_lr": 0.1, "warmup_steps": 4})
    lrs = [warmup_decay(s, 20, hp.warmup_steps, hp.lr, hp.min_lr, "cosine") for s in range(21)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0) and lrs[20] == pytest.approx(0.1)
    assert lrs[12] == pytest.approx(0.55)  # half-way through the cosine
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_training_follows_the_authors_schedule_by_default(meta):
    """The curve's lr is Languini's warm-up ramp x cosine over all steps (worked out here by hand)."""
    mixture = build_mixture({**RUN, "steps": 8}, [meta], 0)
    cfg = GPTConfig(vocab_size=mixture.vocab_size, context=16, **MODEL)
    hp = tr.TrainHP.from_dict({**HP, "lr": 1.0, "min_lr": 0.0, "warmup_steps": 4, "log_every": 1, "eval_every": 8})
    assert hp.lr_schedule == "warmup_times_cosine"
    curve = pd.DataFrame(tr.pretrain(mixture, cfg, hp, total_steps=8, seed=0, progress=False).curve)
    # step s (0-based) logs row s + 1: n = s + 1, lr = min(n, 4) / 4 * (1 + cos(pi * n / 8)) / 2
    expected = [min(n, 4) / 4 * (1 + math.cos(math.pi * n / 8)) / 2 for n in range(1, 9)]
    assert expected[3] == pytest.approx((1 + math.cos(math.pi / 2)) / 2) == pytest.approx(0.5)
    assert list(curve["lr"]) == pytest.approx(expected)
    with pytest.raises(LangskewError, match="lr_schedule"):
        tr.TrainHP.from_dict({**HP, "lr_schedule": "step"})


def test_bad_hyper_parameters_are_named(tmp_path, meta):
    with pytest.raises(LangskewError, match="learning_rate"):
        tr.TrainHP.from_dict({**HP, "learning_rate": 1e-3})
    with pytest.raises(LangskewError, match="micro_batch_size"):
        tr.TrainHP.from_dict({**HP, "micro_batch_size": 3}).micro_steps(1)
    with pytest.raises(LangskewError, match="d_model"):
        _call(_job_args(tmp_path, meta, "bad", model={"n_layer": 1, "n_head": 2}))


def test_prefetcher_yields_the_mixture_batches_in_order_and_reraises(meta):
    mixture = build_mixture(RUN, [meta], 0)
    loader = tr.BatchPrefetcher(mixture, range(3, 6), 4, 16)
    got = list(loader)
    assert [s for s, _ in got] == [3, 4, 5]
    torch.testing.assert_close(got[1][1]["x"], mixture.batch(4, 4, 16)["x"])

    class Broken:
        def batch(self, step, *a):
            raise RuntimeError(f"no data at step {step}")

    with pytest.raises(RuntimeError, match="step 0"):
        list(tr.BatchPrefetcher(Broken(), range(2), 4, 16))


def test_tiny_pretraining_lowers_the_loss(meta):
    mixture = build_mixture({**RUN, "steps": 40}, [meta], 0)
    cfg = GPTConfig(vocab_size=mixture.vocab_size, context=16, **MODEL)
    hp = tr.TrainHP.from_dict({**HP, "eval_every": 40, "log_every": 10})
    result = tr.pretrain(mixture, cfg, hp, total_steps=40, seed=0, progress=False)
    curve = pd.DataFrame(result.curve)
    assert list(curve["step"]) == [10, 20, 30, 40]
    assert curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0] - 0.3
    assert result.metrics["final_val_loss"]["L1"] < np.log(mixture.vocab_size) - 0.3
    assert sum(result.metrics["tokens_seen"].values()) == 40 * 8 * 16
    # both clones read the one stream: 40 x 8 sequences over its (6000 - 1) // 16 = 374 chunks of 16 tokens
    assert result.metrics["data_passes"] == pytest.approx({"L1": 320 / 374, "L2": 320 / 374})


# -- the job: outputs, resuming after kills ---------------------------------------------
CHILD = """
import json, sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[3])
from helpers import job
from langskew.study_b import languages, pretrain
from langskew.workflow import setup_logging
delay = float(sys.argv[2])
original = languages.Mixture.batch
def slow_batch(self, *args, **kwargs):
    time.sleep(delay)  # slow enough for the test to interrupt it
    return original(self, *args, **kwargs)
languages.Mixture.batch = slow_batch
spec = json.loads(open(sys.argv[1]).read())
setup_logging(spec["log"])
pretrain.pretrain_job(job(spec["input"], spec["output"], log_file=spec["log"]), **spec["params"])
"""


def _start(args, tmp_path, delay):
    spec = tmp_path / f"spec-{Path(args['output']['metrics']).parent.name}.json"
    Path(args["log"]).parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(args))
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(spec), str(delay), str(Path(__file__).parent)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _outputs(args):
    out = args["output"]
    from safetensors.torch import load_file

    metrics = json.loads(Path(out["metrics"]).read_text())
    return pd.read_csv(out["curve"]), load_file(str(Path(out["model"]) / "model.safetensors")), metrics


def _steps_saved(ckpt: Path) -> set[int]:
    return {int(p.name[5:-3]) for p in ckpt.glob("step-*.pt")}


def _interrupt(args, tmp_path, sig, after: set[int]) -> int:
    """Start the job slowed down, send ``sig`` once a checkpoint beyond ``after`` exists."""
    ckpt = Path(args["params"]["ckpt_dir"])
    proc = _start(args, tmp_path, 0.08)
    end = time.time() + 90
    while not (_steps_saved(ckpt) - after) if ckpt.is_dir() else True:
        assert proc.poll() is None and time.time() < end, "the run ended before it could be interrupted"
        time.sleep(0.02)
    proc.send_signal(sig)
    return proc.wait(timeout=60)


def test_resume_after_sigkill_and_sigterm_gives_the_uninterrupted_result(tmp_path, meta):
    ref = _job_args(tmp_path, meta, "ref")
    _call(ref)  # in this process, also on one thread
    ref_curve, ref_weights, ref_metrics = _outputs(ref)
    assert not Path(ref["params"]["ckpt_dir"]).exists()  # removed after the final outputs

    args = _job_args(tmp_path, meta, "killed")
    ckpt = Path(args["params"]["ckpt_dir"])
    assert _interrupt(args, tmp_path, signal.SIGKILL, set()) == -signal.SIGKILL
    killed_at = max(_steps_saved(ckpt))
    # SIGTERM: a checkpoint at the current step, then exit status 128 + 15
    assert _interrupt(args, tmp_path, signal.SIGTERM, {killed_at}) == 128 + signal.SIGTERM
    assert not Path(args["output"]["metrics"]).exists()
    termed_at = max(_steps_saved(ckpt))
    assert killed_at < termed_at < RUN["steps"]
    assert "resuming from checkpoint at step" in Path(args["log"]).read_text()

    assert _start(args, tmp_path, 0.0).wait(timeout=120) == 0
    curve, weights, metrics = _outputs(args)
    assert metrics["resumed_from_step"] == termed_at
    assert metrics["steps_run"] == RUN["steps"] - termed_at
    pd.testing.assert_frame_equal(curve, ref_curve)
    for name, tensor in ref_weights.items():
        assert torch.equal(weights[name], tensor), name
    for key in ("final_train_loss", "final_val_loss", "tokens_seen", "tokens", "n_params"):
        assert metrics[key] == ref_metrics[key], key
    assert not ckpt.exists()


def test_job_outputs_and_ddp_on_two_cpu_processes_match_one_process(tmp_path, meta):
    single = _job_args(tmp_path, meta, "single", run={**RUN, "steps": 12})
    _call(single)
    curve, weights, metrics = _outputs(single)
    assert list(curve.columns) == ["step", "tokens", "lr", "train_loss", "val_loss_L1", "val_loss_L2"]
    assert list(curve["step"]) == [5, 10, 12] and curve["val_loss_L1"].isna().tolist() == [True, False, False]
    assert metrics["run"] == RUN["id"] and metrics["steps"] == 12
    assert metrics["tokens_seen"]["L1"] + metrics["tokens_seen"]["L2"] == 12 * 8 * 16
    assert json.loads((Path(single["output"]["model"]) / "config.json").read_text())["vocab_size"] == 48

    ddp = _job_args(tmp_path, meta, "ddp", run={**RUN, "steps": 12}, num_gpus=2)
    ddp["threads"] = 2
    _call(ddp)
    ddp_curve, ddp_weights, ddp_metrics = _outputs(ddp)
    assert ddp_metrics["world_size"] == 2 and metrics["world_size"] == 1
    assert ddp_metrics["tokens_seen"] == metrics["tokens_seen"]
    np.testing.assert_allclose(ddp_curve.to_numpy(dtype=float), curve.to_numpy(dtype=float), rtol=1e-4, atol=1e-5)
    for name, tensor in weights.items():
        torch.testing.assert_close(ddp_weights[name], tensor, rtol=1e-3, atol=1e-4, msg=name)
