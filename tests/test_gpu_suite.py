"""benchmarks/gpu_suite.py: its CPU mode runs every part, and its budget arithmetic."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

PARTS = ["pretrain", "pretrain_eager", "finetune", "shap", "eval", "loaders"]
RATES = ["pretrain_tokens_per_s", "pretrain_authors_tokens_per_s", "pretrain_eager_tokens_per_s",
         "finetune_max_length_examples_per_s", "finetune_dynamic_examples_per_s", "finetune_grouped_examples_per_s",
         "shap_authors_examples_per_s", "shap_examples_per_s", "probe_sentences_per_s", "perplexity_tokens_per_s",
         "alignment_pairs_per_s", "study_b_loader_batches_per_s", "study_a_loader_batches_per_s"]
FAMILIES = ["study_b_pretrain", "study_b_perplexity", "study_b_alignment", "study_a_finetune",
            "study_a_shap_values", "study_a_probe"]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_cpu_mode_runs_every_part_and_writes_the_budget(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "benchmarks/gpu_suite.py", "--cpu", "--threads", "1", "--out", str(tmp_path)]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    [js] = list(tmp_path.glob("*.json"))
    [md] = list(tmp_path.glob("*.md"))
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_cpu-1threads-tiny", js.stem) and md.stem == js.stem
    report = json.loads(js.read_text())
    assert list(report["parts"]) == PARTS
    assert all(p["ok"] for p in report["parts"].values()), report["parts"]
    for key in RATES:
        assert _positive(report["rates"].get(key)), key
    for study in ("study_a", "study_b"):
        assert _positive(report["loaders_vs_step"][study]["headroom"])
    budget = report["budget"]
    for family in FAMILIES:
        assert _positive(budget["families"][family]["gpu_hours"]), family
    keys = {f"study_b.sizes.{s}.resources.runtime (1x)" for s in ("mini", "small", "medium")} | \
        {"models.mbert.resources.runtime", "models.xlmr.resources.runtime"}
    assert set(budget["runtime_minutes"]) == keys
    assert all(isinstance(v, int) and v > 0 for v in budget["runtime_minutes"].values())
    text = md.read_text()
    for heading in ("## Parts", "## Rates", "## Loaders against the step", "## Budget"):
        assert heading in text
    for name in PARTS + RATES + FAMILIES + sorted(keys):
        assert name in text, name


def test_the_gpu_arguments_parse(monkeypatch):
    """The paper-size command lines, which only a GPU runs, are valid for their scripts."""
    import argparse

    from gpu_suite import MAINS, part_arguments

    class Parsed(Exception):
        pass

    real = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        raise Parsed(real(self, args, namespace))  # an unknown flag or bad value exits with status 2

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    gpu = part_arguments(tiny=False, threads=None)
    assert set(gpu) == set(MAINS)
    for name, argv in gpu.items():
        with pytest.raises(Parsed) as parsed:
            MAINS[name](argv)
        assert not getattr(parsed.value.args[0], "tiny", False), name


def _study_b(sizes, grid):
    return {"enabled": True, "tokenizer": {"vocab_size": 16384},
            "train": {"base_tokens": 1_197_015_040, "context": 512, "batch_size": 128},
            "eval": {"max_tokens": 2_000_000, "n_parallel": 500}, "languages": {"en": {}},
            "sizes": sizes, "grid": grid}


def test_budget_of_pretraining_by_hand():
    from gpu_suite import compute_budget

    sizes = {"small": {"n_layer": 12, "d_model": 768, "n_head": 12},
             "mini": {"n_layer": 4, "d_model": 512, "n_head": 8}}
    grid = [{"name": "g", "kind": "clone", "sizes": ["small", "mini"], "scales": [1], "p_l2": [0.5]}]
    cfg = {"study_b": _study_b(sizes, grid), "study_a": {"enabled": False}}
    budget = compute_budget({"pretrain_tokens_per_s": 1e5, "perplexity_tokens_per_s": 1e4,
                             "alignment_pairs_per_s": 0.5}, cfg)
    # small: 1,197,015,040 tokens (18,265 steps of 128 x 512) at 100k tokens/s = 3.3250 h = 199.5 min
    # mini: training FLOPs per token 6 N + 12 L d T with N = 12 L d^2 + d x 32,768:
    #   small 6 x 110,100,480 + 56,623,104 = 717,225,984; mini 6 x 29,360,128 + 12,582,912 = 188,743,680,
    #   3.8x fewer, so 380k tokens/s: 0.87501 h = 52.5 min
    pre = budget["families"]["study_b_pretrain"]
    assert pre["jobs"] == 2
    assert pre["per_size_gpu_hours"]["small"] == pytest.approx(3.325042, rel=1e-6)
    assert pre["per_size_gpu_hours"]["mini"] == pytest.approx(0.875011, rel=1e-5)
    assert budget["runtime_minutes"]["study_b.sizes.small.resources.runtime (1x)"] == 300  # ceil(1.5 x 199.50)
    assert budget["runtime_minutes"]["study_b.sizes.mini.resources.runtime (1x)"] == 79  # ceil(1.5 x 52.50)
    # perplexity: 2 languages x 2M tokens per run, at 10k (small) and 38k (mini) tokens/s
    assert budget["families"]["study_b_perplexity"]["gpu_hours"] == pytest.approx(
        4e6 / 1e4 / 3600 + 4e6 / 3.8e4 / 3600, rel=1e-6)
    # alignment: 500 pairs per run at 0.5 (small) and 1.9 (mini) pairs/s
    assert budget["families"]["study_b_alignment"]["gpu_hours"] == pytest.approx(
        (1000 + 500 / 1.9) / 3600, rel=1e-6)


def test_budget_of_finetuning_and_shap_by_hand():
    from gpu_suite import compute_budget

    ds = {"languages": ["en"], "labels": ["a", "b", "c"], "ratios": {"en": "1:1:1"},
          "split_sizes": {"train": 300, "validation": 30, "test": 60}, "report_tests": ["balanced"],
          "finetune": {"epochs": 2}, "shap": {"n_examples": 90}}
    cfg = {"datasets": {"toy": ds}, "study_b": {"enabled": False},
           "study_a": {"enabled": True, "datasets": ["toy"], "models": ["m"], "seeds": [0, 1],
                       "conditions": {"balanced": {"train": "balanced"}},
                       "finetune": {"length_grouped": False, "eval_every": 0.5}, "shap": {"n_examples": None}}}
    budget = compute_budget({"finetune_dynamic_examples_per_s": 2.0, "finetune_grouped_examples_per_s": 99.0,
                             "shap_examples_per_s": 0.5}, cfg)
    # 3 classes x (300 / 3 - 1) = 297 training rows, 2 epochs; 4 validations of 30 rows + 60 test rows
    # as forward passes at a third of a training example: (594 + 180 / 3) / 2 examples/s = 327 s per job
    ft = budget["families"]["study_a_finetune"]
    assert ft["jobs"] == 2 and ft["gpu_hours"] == pytest.approx(2 * 327 / 3600)
    # SHAP: 90 examples at 0.5/s = 180 s per job; the model's runtime covers its longest job (327 s)
    assert budget["families"]["study_a_shap_values"]["gpu_hours"] == pytest.approx(2 * 180 / 3600)
    assert budget["runtime_minutes"] == {"models.m.resources.runtime": math.ceil(1.5 * 327 / 60)}
