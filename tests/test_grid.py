"""Study B grid: the paper config expands to the listed blocks with unique, readable ids."""

import copy
from pathlib import Path

import pytest
import yaml

from langskew import config as lsconfig
from langskew.errors import LangskewError
from langskew.study_b.grid import expand_runs, fit_plan, model_params, train_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    lsconfig.validate_schema(cfg["study_b"], ROOT / "schemas" / "study_b.schema.yaml", prefix="study_b")
    return cfg["study_b"]


def test_paper_grid_has_the_listed_blocks(paper):
    runs = expand_runs(paper)
    assert len(runs) >= 60
    assert all(rid == r["id"] for rid, r in runs.items())
    clone2 = {r["id"] for r in runs.values() if r["kind"] == "clone" and r["n_languages"] == 2
              and len(r["schedule"]) == 1 and r["size"] == "small" and r["scale"] == 1}
    assert {f"small-1x-clone2-p{p:.2f}" for p in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)} <= clone2
    for scale in (2, 3):
        assert {f"small-{scale}x-clone2-p0.50", f"small-{scale}x-clone2-p0.10"} <= set(runs)
        assert f"small-{scale}x-sched-0.1_0.9" in runs
    assert {"medium-1x-clone2-p0.50", "medium-1x-clone2-p0.10", "small-1x-sched-0.1_0.9"} <= set(runs)
    assert runs["small-1x-clone10-uniform"]["schedule"] == [[pytest.approx(0.1)] * 10]
    l1 = runs["small-1x-clone10-l1p0.50"]["schedule"][0]
    assert l1[0] == 0.5 and l1[1:] == [pytest.approx(0.5 / 9)] * 9
    enfr = [r for r in runs.values() if r["kind"] == "real"]
    p_fr = sorted({r["schedule"][0][1] for r in enfr})
    assert p_fr[0] == 0.05 and p_fr[-1] == 0.95 and len(p_fr) == 11
    assert {r["vocab_mode"] for r in enfr} == {"disjoint", "anchored"}
    assert runs["small-1x-enfr-anchored-p0.30"]["base_languages"] == ["en", "fr"]


def test_schedule_and_steps(paper):
    runs = expand_runs(paper)
    sched = runs["small-2x-sched-0.1_0.9"]
    assert sched["schedule"] == [[0.9, 0.1], [pytest.approx(0.1), 0.9]]
    assert sched["steps"] == 2 * 18265
    mono = runs["small-mono-en-f0.25"]
    assert mono["kind"] == "mono" and mono["language"] == "en" and mono["steps"] == 4566  # floor(0.25 x 18,265)


def test_medium_1x_is_the_same_token_budget_as_small(paper):
    """Dry run of the paper grid: 1x is 1.197B tokens for every size, whatever its batch size."""
    runs = expand_runs(paper)
    small, medium = runs["small-1x-clone2-p0.50"], runs["medium-1x-clone2-p0.50"]
    assert train_params(paper, "medium")["batch_size"] == 256 and train_params(paper, "small")["batch_size"] == 128
    assert small["steps"] == 18265 and medium["steps"] == 9132
    assert small["tokens"] == 18265 * 128 * 512 == 1_197_015_040
    assert medium["tokens"] == 9132 * 256 * 512 and abs(medium["tokens"] / small["tokens"] - 1) < 1e-4
    assert small["budget_tokens"] == medium["budget_tokens"] == 1_197_015_040
    assert runs["medium-mono-en-f0.5"]["steps"] == 4566
    # a fit over the medium runs measures x in the same token budget: the 1x monolingual run is at x ~ 1
    from langskew.study_b.fit import budget_tokens, mono_x
    assert budget_tokens(medium, 256, 512) == 1_197_015_040
    assert mono_x(runs["medium-mono-en-f1"]) == pytest.approx(1.0, abs=1e-4)
    # base_steps, when set, is a step count at each size's own batch size
    legacy = copy.deepcopy(paper)
    legacy["train"]["base_steps"] = 100
    assert expand_runs(legacy)["medium-1x-clone2-p0.50"]["tokens"] == 100 * 256 * 512


def test_every_fit_has_monolingual_runs_up_to_the_largest_scale(paper):
    runs = expand_runs(paper)
    plan = fit_plan(runs)
    bilingual = {rid for rid, r in runs.items() if r["kind"] != "mono"}
    assert bilingual == {t for group in plan.values() for t in group["targets"]}
    for size, group in plan.items():
        mono_scales = {runs[m]["scale"] for m in group["mono"] if runs[m]["language"] == "en"}
        target_scales = {runs[t]["scale"] for t in group["targets"]}
        assert max(mono_scales) >= max(target_scales), size


def test_size_parameters(paper):
    assert model_params(paper, "medium") == {"n_layer": 24, "d_model": 1024, "n_head": 16, "head_dim": None}
    assert model_params(paper, "mini") == {"n_layer": 4, "d_model": 512, "n_head": 8, "head_dim": 32}
    assert train_params(paper, "small")["lr_schedule"] == "warmup_times_cosine"
    assert train_params(paper, "medium")["batch_size"] == 256
    small = train_params(paper, "small")
    assert small["batch_size"] == 128 and small["betas"] == [0.9, 0.95] and small["grad_clip"] is None


def test_bad_blocks_are_named(paper):
    cfg = copy.deepcopy(paper)
    cfg["grid"] = [{"name": "oops", "kind": "clone", "sizes": ["huge"], "p_l2": [0.5]}]
    with pytest.raises(LangskewError, match="'huge'"):
        expand_runs(cfg)
    cfg["grid"] = [{"name": "oops", "kind": "mono", "p_l2": [0.5], "fractions": [1]}]
    with pytest.raises(LangskewError, match="oops.*p_l2"):
        expand_runs(cfg)
    cfg["grid"] = [{"name": "oops", "kind": "real", "base_languages": ["en", "de"], "p_l2": [0.5]}]
    with pytest.raises(LangskewError, match="'de'"):
        expand_runs(cfg)


def test_duplicate_runs_collapse(paper):
    cfg = copy.deepcopy(paper)
    block = {"name": "a", "kind": "clone", "sizes": ["small"], "p_l2": [0.5]}
    cfg["grid"] = [block, dict(block, name="b")]
    assert list(expand_runs(cfg)) == ["small-1x-clone2-p0.50"]
    cfg["grid"].append({"name": "c", "kind": "clone", "sizes": ["small"], "p_l2": [0.5], "clone_fractions": [0.5]})
    assert "small-1x-clone2-p0.50-c0.50" in expand_runs(cfg)


def test_demo_preset_is_small(paper):
    demo = yaml.safe_load((ROOT / "presets" / "demo.yaml").read_text())["study_b"]
    cfg = copy.deepcopy(paper)
    for key, value in demo.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    lsconfig.validate_schema(cfg, ROOT / "schemas" / "study_b.schema.yaml", prefix="study_b")
    runs = expand_runs(cfg)
    kinds = {r["kind"] for r in runs.values()}
    assert kinds == {"clone", "real", "mono"}
    assert {r["vocab_mode"] for r in runs.values() if r["kind"] == "real"} == {"disjoint", "anchored"}
    assert len([r for r in runs.values() if r["kind"] == "mono" and r["language"] == "en"]) >= 3
    assert all(r["size"] == "tiny" and r["steps"] <= 2000 for r in runs.values())
    assert sum(r["steps"] for r in runs.values()) <= 15000  # CPU minutes, not hours
    # the smallest monolingual run leaves the warm-up
    warmup = cfg["train"]["warmup_steps"]
    assert min(r["steps"] for r in runs.values() if r["kind"] == "mono") >= 4 * warmup
