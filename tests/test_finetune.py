"""Study A fine-tuning loop: loss, batching, schedule, outputs, and kill/resume equality."""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import job, make_tiny_classification_frames
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from langskew.errors import LangskewError
from langskew.io import read_json
from langskew.study_a.finetune import (epoch_batches, finetune, finetune_job, length_grouped_batches,
                                       make_optimizer, merge_hp, padding_stats, random_batches,
                                       weighted_cross_entropy)
from langskew.study_a.modeling import build_tiny_model, load_classifier, texts_of
from langskew.training import warmup_decay

LABELS = ["a", "b", "c"]
VARIANTS = ["balanced", "original"]
ARCH = {"vocab_size": 200, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 128, "max_position_embeddings": 64}
HP = {"epochs": 8, "batch_size": 8, "grad_accum": 2, "max_length": 64, "lr_encoder": 3e-3,
      "lr_head": 1e-2, "eval_every": 0.5, "eval_batch_size": 64, "checkpoint_every": 0, "num_workers": 0}
# resume tests: shorter, with frequent checkpoints
RESUME_HP = {**HP, "epochs": 3, "checkpoint_every": 4}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Dataset parquet files and a tiny model directory, shared by this module's tests."""
    root = tmp_path_factory.mktemp("ft")
    frames = make_tiny_classification_frames(root / "data")
    frames["test"].to_parquet(root / "data" / "test_original.parquet", index=False)
    build_tiny_model(texts_of(frames.values()), root / "tiny", ARCH, seed=0)
    return root, frames


def job_args(root: Path, run: Path, hp: dict, weighting: str = "per_language", seed: int = 0,
             mitigation: dict | None = None, model_selection: str = "val_loss"):
    """(the Job, the rule's params) of one fine-tuning run: call ``finetune_job(the_job, **params)``."""
    data = root / "data"
    inp = dict(train=str(data / "train.parquet"), validation=str(data / "validation.parquet"),
               tests=[str(data / "test.parquet"), str(data / "test_original.parquet")],
               model=str(root / "tiny"))
    out = dict(model=str(run / "model"), metrics=str(run / "metrics.json"),
               predictions=str(run / "predictions.parquet"), curve=str(run / "curve.csv"))
    params = dict(model={"path": "unused-hub-id", "revision": None, "trust_remote_code": False},
                  labels=LABELS, hp=hp, weighting=weighting, mitigation=dict(mitigation or {}), seed=seed,
                  ckpt_dir=str(run / "ckpt"),
                  keep_checkpoints=False, test_variants=VARIANTS, model_selection=model_selection)
    return job(inp, out, threads=1), params


# -- pure pieces -------------------------------------------------------------------------
def test_weighted_cross_entropy_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [0.3, 0.3, 3.0]])
    labels = torch.tensor([0, 2, 1])
    weights = torch.tensor([2.0, 1.0, 0.5])
    hand = 0.0
    for row, y, w in zip(logits.tolist(), labels.tolist(), weights.tolist()):
        hand += w * -(row[y] - math.log(sum(math.exp(v) for v in row)))
    hand /= 3  # mean over the batch, not divided by the weight sum
    assert weighted_cross_entropy(logits, labels, weights).item() == pytest.approx(hand, rel=1e-6)
    ones = weighted_cross_entropy(logits, labels, torch.ones(3))
    assert ones.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


def test_length_grouped_batches_cover_once_and_pad_less():
    rng = np.random.default_rng(3)
    lengths = rng.integers(5, 300, size=1003)
    for epoch in (0, 1):
        grouped = length_grouped_batches(lengths, 16, seed=7, epoch=epoch)
        plain = random_batches(len(lengths), 16, seed=7, epoch=epoch)
        for batches in (grouped, plain):
            flat = np.concatenate(batches)
            assert len(flat) == len(lengths) and np.array_equal(np.sort(flat), np.arange(len(lengths)))
            assert all(1 <= len(b) <= 16 for b in batches)
        real, padded_grouped = padding_stats(grouped, lengths)
        _, padded_plain = padding_stats(plain, lengths)
        assert padded_grouped < 0.7 * padded_plain and real <= padded_grouped
        assert lengths[grouped[0]].max() == lengths.max()  # longest batch first
    assert length_grouped_batches(lengths, 16, 7, 0) == length_grouped_batches(lengths, 16, 7, 0)
    assert length_grouped_batches(lengths, 16, 7, 0) != length_grouped_batches(lengths, 16, 7, 1)


def test_default_batches_are_uniformly_shuffled_whatever_the_lengths():
    """The authors' loader shuffles uniformly: which examples share a batch cannot depend on their lengths."""
    rng = np.random.default_rng(3)
    short_first, long_first = np.arange(5, 505), np.arange(505, 5, -1)
    random_lengths = rng.integers(5, 300, size=500)
    uniform = [epoch_batches(lengths, 16, seed=7, epoch=0, length_grouped=False)
               for lengths in (short_first, long_first, random_lengths)]
    assert uniform[0] == uniform[1] == uniform[2]
    assert sorted(np.concatenate(uniform[0]).tolist()) == list(range(500))
    grouped = [epoch_batches(lengths, 16, seed=7, epoch=0, length_grouped=True) for lengths in (short_first, long_first)]
    assert grouped[0] != grouped[1]  # grouping reads the lengths


def test_paper_config_fine_tunes_in_fp16_with_uniform_batches():
    from langskew.config import finetune_hp, load_config
    from langskew.devices import amp_dtype

    cfg = load_config(Path(__file__).parents[1] / "config.yaml")
    for dataset in ("xnli", "amazon"):
        hp = merge_hp(finetune_hp(cfg, dataset))
        assert hp["precision"] == "fp16" and hp["length_grouped"] is False
        # fp16 autocast on CUDA (with a GradScaler: finetune.train enables it for float16); fp32 on the CPU
        assert amp_dtype(torch.device("cuda"), hp["precision"]) is torch.float16
        assert amp_dtype(torch.device("cpu"), hp["precision"]) is None
    assert merge_hp({})["precision"] == "fp16" and merge_hp({})["length_grouped"] is False
    with pytest.raises(LangskewError, match="precision 'half'"):
        merge_hp({"precision": "half"})


def test_lr_schedule_decays_linearly_to_final_fraction():
    def lr_factor(step, total_steps, warmup_steps, final_fraction):  # Study A's factor of its learning rates
        return warmup_decay(step, total_steps, warmup_steps, 1.0, final_fraction, "linear")

    assert lr_factor(0, 100, 0, 0.01) == 1.0
    assert lr_factor(50, 100, 0, 0.01) == pytest.approx(1 - 0.99 * 0.5)
    assert lr_factor(100, 100, 0, 0.01) == pytest.approx(0.01)
    assert lr_factor(0, 100, 10, 0.01) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, 0.01) == 1.0


def test_optimizer_has_encoder_and_head_groups(setup):
    root, _ = setup
    _, model = load_classifier(root / "tiny", 3)
    opt = make_optimizer(model, {"lr_encoder": 1e-5, "lr_head": 1e-4, "adam_eps": 1e-8, "weight_decay": 0.0})
    assert isinstance(opt, torch.optim.RAdam)
    enc, head = opt.param_groups
    assert (enc["lr"], head["lr"]) == (1e-5, 1e-4) and enc["eps"] == 1e-8 and head["weight_decay"] == 0
    head_ids = {id(p) for p in head["params"]}
    assert head_ids == {id(p) for p in model.classifier.parameters()}
    assert len(enc["params"]) + len(head["params"]) == len(list(model.parameters()))


def test_bad_input_is_rejected_before_training(setup, tmp_path):
    root, frames = setup
    tests = {"t": frames["test"]}
    with pytest.raises(LangskewError, match="text_pair"):
        finetune(frames["train"].drop(columns="text_pair"), frames["validation"], tests, root / "tiny", LABELS, HP)
    with pytest.raises(LangskewError, match="label 3"):
        finetune(frames["train"].assign(label=3), frames["validation"], tests, root / "tiny", LABELS, HP)
    with pytest.raises(LangskewError, match="epochz"):
        finetune(frames["train"], frames["validation"], tests, root / "tiny", LABELS, {"epochz": 1})
    with pytest.raises(LangskewError, match="'de'"):
        finetune(frames["train"], frames["validation"].assign(language="de"), tests, root / "tiny", LABELS, HP,
                 weighting="per_language")
    with pytest.raises(LangskewError, match="test_variants"):
        the_job, params = job_args(root, tmp_path, HP)
        finetune_job(the_job, **{**params, "test_variants": ["x"]})


# -- end to end ----------------------------------------------------------------------------
def test_finetune_job_learns_and_writes_the_contract(setup, tmp_path):
    root, frames = setup
    the_job, params = job_args(root, tmp_path, HP)
    finetune_job(the_job, **params)
    out = the_job.output

    metrics = read_json(out.metrics)
    assert metrics["accuracy"]["balanced"]["all"] > 0.8  # chance is 1/3
    assert set(metrics["accuracy"]["original"]) == {"all", "en", "fr"}
    assert metrics["steps_run"] == metrics["total_steps"] == 8 * math.ceil(math.ceil(240 / 8) / 2)
    assert metrics["resumed_from"] is None and metrics["best_step"] > 0

    curve = pd.read_csv(out.curve)
    assert list(curve.columns) == ["step", "epoch", "train_loss", "val_loss", "lr"]
    assert curve["val_loss"].min() == pytest.approx(metrics["best_val_loss"], rel=1e-6)
    assert curve.loc[curve["val_loss"].idxmin(), "step"] == metrics["best_step"]
    assert curve["lr"].is_monotonic_decreasing and curve["epoch"].iloc[-1] == pytest.approx(8)
    assert curve["lr"].iloc[-1] == pytest.approx(HP["lr_encoder"] * 0.01)

    pred = pd.read_parquet(out.predictions)
    assert list(pred.columns) == ["test_variant", "id", "language", "label", "prediction",
                                  "prob_0", "prob_1", "prob_2"]
    assert pred["test_variant"].value_counts().to_dict() == {"balanced": 60, "original": 60}
    assert np.allclose(pred[["prob_0", "prob_1", "prob_2"]].sum(axis=1), 1.0, atol=1e-5)
    assert not (Path(tmp_path) / "ckpt").exists()  # dropped after the outputs were written

    # the saved best model reloads through from_pretrained and reproduces the predictions
    tok = AutoTokenizer.from_pretrained(out.model)
    model = AutoModelForSequenceClassification.from_pretrained(out.model).eval()
    assert model.config.id2label == dict(enumerate(LABELS))
    rows = frames["test"].iloc[:5]
    with torch.no_grad():
        enc = tok(rows["text"].tolist(), rows["text_pair"].tolist(), padding=True, return_tensors="pt")
        probs = torch.softmax(model(**enc).logits, -1).numpy()
    expect = pred[pred["test_variant"] == "balanced"].iloc[:5][["prob_0", "prob_1", "prob_2"]].to_numpy()
    assert np.allclose(probs, expect, atol=1e-4)


# -- kill and resume -----------------------------------------------------------------------
RUNNER = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from langskew.workflow import setup_logging
    from langskew.study_a.finetune import finetune_job
    sys.path.insert(0, {here!r})
    from test_finetune import job_args
    if {sleep!r}:
        step = torch.optim.RAdam.step
        def slow_step(self, *a, **k):
            time.sleep({sleep!r})
            return step(self, *a, **k)
        torch.optim.RAdam.step = slow_step
    setup_logging({log!r})
    from pathlib import Path
    the_job, params = job_args(Path({root!r}), Path({run!r}), {hp!r})
    finetune_job(the_job, **params)
""")


def run_job(root: Path, run: Path, sleep: float = 0.0) -> subprocess.Popen:
    here = str(Path(__file__).parent)
    code = RUNNER.format(tests=here, here=here, sleep=sleep, log=str(run / "job.log"),
                         root=str(root), run=str(run), hp=RESUME_HP)
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "stderr.txt", "ab") as err:
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=err)


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    """An uninterrupted run with the resume settings (in this process, one thread)."""
    root, _ = setup
    run = tmp_path_factory.mktemp("reference")
    the_job, params = job_args(root, run, RESUME_HP)
    finetune_job(the_job, **params)
    return run


def ckpt_steps(run: Path) -> list[int]:
    return sorted(int(p.name[5:-3]) for p in (run / "ckpt").glob("step-*.pt"))


def wait_for_checkpoint(proc: subprocess.Popen, run: Path, after: int = -1, timeout: float = 120) -> None:
    """Poll until a checkpoint newer than step ``after`` exists; the run must still be going."""
    deadline = time.time() + timeout
    while not [s for s in ckpt_steps(run) if s > after] and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "run ended before it saved a checkpoint"


def test_killed_run_resumes_to_identical_results(setup, reference, tmp_path):
    """SIGTERM (save and stop), resume, SIGKILL (no save), resume again: same final numbers."""
    root, _ = setup
    run = tmp_path / "run"
    proc = run_job(root, run, sleep=0.15)
    wait_for_checkpoint(proc, run)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    stopped_at = ckpt_steps(run)[-1]
    assert stopped_at > 0 and not (run / "metrics.json").exists()

    proc = run_job(root, run, sleep=0.15)
    wait_for_checkpoint(proc, run, after=stopped_at)
    proc.kill()  # SIGKILL: nothing saved on the way out
    assert proc.wait(timeout=60) == -signal.SIGKILL
    killed_after = ckpt_steps(run)[-1]
    assert "resuming from checkpoint" in (run / "job.log").read_text()

    assert run_job(root, run).wait(timeout=120) == 0, (run / "stderr.txt").read_text()[-3000:]
    log = (run / "job.log").read_text()
    assert f"(step {stopped_at})" in log and f"(step {killed_after})" in log
    metrics, ref = read_json(run / "metrics.json"), read_json(reference / "metrics.json")
    assert metrics["resumed_from"] == killed_after
    assert metrics["steps_run"] == ref["total_steps"] - killed_after < ref["steps_run"]
    for key in ("steps_run", "resumed_from"):
        metrics.pop(key), ref.pop(key)
    assert metrics == ref
    pd.testing.assert_frame_equal(pd.read_parquet(run / "predictions.parquet"),
                                  pd.read_parquet(reference / "predictions.parquet"))
    pd.testing.assert_frame_equal(pd.read_csv(run / "curve.csv"), pd.read_csv(reference / "curve.csv"))
    assert not (run / "ckpt").exists()


# -- mitigations ---------------------------------------------------------------------------
ALL_MITIGATIONS = {"mask_entropy": 1.0, "adversary": {"kind": "reversal", "coef": 0.1}, "logit_adjustment": 1.0,
                   "group_dro": {"step_size": 0.05}, "sampling": "per_language_balanced"}


def test_mitigation_run_resumes_to_identical_results(setup, tmp_path, monkeypatch):
    """Every mitigation at once: the run records its settings, and a run stopped by SIGTERM and
    resumed (adversary head, group weights and sampler draws restored) ends with the numbers of
    an uninterrupted one."""
    root, _ = setup
    hp = {**RESUME_HP, "checkpoint_every": 3}
    selection = "worst_group_accuracy"
    ref_job, ref_params = job_args(root, tmp_path / "ref", hp, mitigation=ALL_MITIGATIONS, model_selection=selection)
    finetune_job(ref_job, **ref_params)
    ref = read_json(tmp_path / "ref" / "metrics.json")
    assert ref["mitigation"] == {"mask_entropy": 1.0, "adversary": "reversal", "adversary_coef": 0.1,
                                 "logit_adjustment": 1.0, "group_dro": 0.05, "group_dro_adjustment": 0.0,
                                 "group_dro_weight_decay": 0.0, "sampling": "per_language_balanced"}
    assert ref["model_selection"] == selection and 0 <= ref["best_val_worst_group_accuracy"] <= 1
    frames = setup[1]
    groups = {f"{lang}/{LABELS[y]}" for lang, y in zip(frames["train"]["language"], frames["train"]["label"])}
    assert set(ref["group_dro_q"]) >= groups and sum(ref["group_dro_q"].values()) == pytest.approx(1.0)
    assert len(set(ref["group_dro_q"].values())) > 1  # q moved

    the_job, params = job_args(root, tmp_path / "run", hp, mitigation=ALL_MITIGATIONS, model_selection=selection)
    step, calls = torch.optim.RAdam.step, []

    def stop_at_ten(self, *a, **k):
        calls.append(1)
        if len(calls) == 10:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop saves a checkpoint and exits
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.RAdam, "step", stop_at_ten)
    with pytest.raises(SystemExit):
        finetune_job(the_job, **params)
    monkeypatch.setattr(torch.optim.RAdam, "step", step)
    assert not (tmp_path / "run" / "metrics.json").exists()
    finetune_job(the_job, **params)
    again = read_json(tmp_path / "run" / "metrics.json")
    assert 0 < again["resumed_from"] < ref["total_steps"]
    for key in ("steps_run", "resumed_from"):
        again.pop(key), ref.pop(key)
    assert again == ref
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / "predictions.parquet"),
                                  pd.read_parquet(tmp_path / "ref" / "predictions.parquet"))


def test_mitigation_changes_training_and_bad_keys_stop_early(setup, tmp_path):
    root, _ = setup
    hp = {**RESUME_HP, "epochs": 1}
    runs = {}
    for name, mitigation in {"plain": {}, "dro": {"group_dro": {"step_size": 0.5}}}.items():
        the_job, params = job_args(root, tmp_path / name, hp, weighting="none", mitigation=mitigation)
        finetune_job(the_job, **params)
        runs[name] = pd.read_csv(tmp_path / name / "curve.csv")
    assert not np.allclose(runs["plain"]["train_loss"], runs["dro"]["train_loss"])
    the_job, params = job_args(root, tmp_path / "bad", hp, mitigation={"mask_entropie": 1})
    with pytest.raises(LangskewError, match="unknown key 'mask_entropie'"):
        finetune_job(the_job, **params)


def test_model_selection_keeps_the_best_checkpoint_by_its_rule(setup, tmp_path, monkeypatch):
    """val_loss keeps the validation with the lowest loss; worst_group_accuracy the first with the highest
    worst-group accuracy (scripted here, so the two rules pick different validations)."""
    import langskew.study_a.finetune as ft
    from langskew.mitigation import group_accuracies

    root, frames = setup
    hp = {**RESUME_HP, "epochs": 2, "checkpoint_every": 0}
    seen, scripted = [], iter(())

    def scripted_accuracies(pred, labels, languages):
        out = group_accuracies(pred, labels, languages)
        assert len(labels) == len(frames["validation"])  # computed on the validation rows
        seen.append(next(scripted))
        return {**out, "worst_group_accuracy": seen[-1]}

    monkeypatch.setattr(ft, "group_accuracies", scripted_accuracies)
    for rule in ("worst_group_accuracy", "val_loss"):
        seen.clear()
        scripted = iter([0.2, 0.6, 0.4, 0.6, 0.1, 0.3, 0.5, 0.2])
        the_job, params = job_args(root, tmp_path / rule, hp, model_selection=rule)
        finetune_job(the_job, **params)
        metrics, curve = read_json(tmp_path / rule / "metrics.json"), pd.read_csv(tmp_path / rule / "curve.csv")
        assert metrics["model_selection"] == rule and len(seen) == len(curve) >= 3
        if rule == "worst_group_accuracy":
            assert metrics["best_step"] == int(curve["step"].iloc[1]) and metrics["best_val_worst_group_accuracy"] == 0.6
        else:
            best = int(curve["val_loss"].idxmin())
            assert metrics["best_step"] == int(curve["step"].iloc[best])
            assert metrics["best_val_worst_group_accuracy"] == seen[best]
    the_job, params = job_args(root, tmp_path / "bad", hp, model_selection="val_accuracy")
    with pytest.raises(LangskewError, match="model_selection 'val_accuracy' unknown"):
        finetune_job(the_job, **params)


def test_group_dro_weight_decay_is_decoupled_and_spares_biases_and_layer_norms(setup):
    root, _ = setup
    _, model = load_classifier(str(root / "tiny"), 3, {0: "a", 1: "b", 2: "c"})
    hp = {"lr_encoder": 1e-5, "lr_head": 1e-4, "adam_eps": 1e-8, "weight_decay": 0.0}
    opt = make_optimizer(model, hp, decoupled_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        decayed = group["weight_decay"] == 0.1
        assert all(decayed != ("bias" in names[id(p)] or "LayerNorm.weight" in names[id(p)]) for p in group["params"])
        assert group["decoupled_weight_decay"] is True
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    # decoupled: one step with zero gradient shrinks a decayed weight by lr * wd, as AdamW does
    w = model.classifier.weight
    before = w.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(w.detach(), before * (1 - 1e-4 * 0.1), atol=1e-9)
