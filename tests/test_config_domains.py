"""Every numeric config value outside its domain stops validation (and so the dry run), naming
the key and the allowed range.

The domains below are written out here, from what each value means (a share lies in (0, 1), a
seed is a non-negative integer, ...), not read from the schema. The walk visits every numeric
value of Study B in the paper configuration and in the demo overlay: a value without a domain
here fails the test, so a new numeric setting must be given one.
"""

from __future__ import annotations

import copy
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import rejected
from langskew.config import ConfigError, load_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
INF = math.inf

# (pattern of the dotted key, low, low included, high, high included, integer)
DOMAINS = [
    (r"study_b\.seed", 0, True, INF, False, True),
    (r"study_b\.languages\.\w+\.(synthetic\.seed|holdout_seed)", 0, True, INF, False, True),
    (r"study_b\.parallel\.synthetic\.seed", 0, True, INF, False, True),
    (r"study_b\.languages\.\w+\.test_fraction", 0, False, 1, False, False),
    (r"study_b\.languages\.\w+\.(synthetic\.n_documents\.\w+|max_documents\.\w+|hub\.shards|synthetic\.richness)",
     1, True, INF, False, True),
    (r"study_b\.parallel\.(n_pairs|hub\.shards|synthetic\.richness)", 1, True, INF, False, True),
    (r"study_b\.tokenizer\.vocab_size", 300, True, INF, False, True),
    # SentencePiece's own ranges (its trainer stops on values outside them; checked below)
    (r"study_b\.tokenizer\.character_coverage", 0.98, True, 1, True, False),
    (r"study_b\.tokenizer\.input_sentence_size", 101, True, INF, False, True),
    (r"study_b\.tokenizer\.max_sentence_length", 10, True, 2 ** 30, True, True),
    (r"study_b\.tokenizer\.max_sentencepiece_length", 1, True, 512, True, True),
    (r"study_b\.sizes\.\w+\.(n_layer|d_model|n_head|head_dim|base_steps)", 1, True, INF, False, True),
    (r"study_b\.sizes\.\w+\.resources\.gpu", 0, True, INF, False, True),
    (r"study_b\.(sizes\.\w+\.)?resources\.(cpu\.)?(cpus|cpus_per_gpu|mem_mb|runtime)", 1, True, INF, False, True),
    (r"study_b\.sizes\.\w+\.resources\.(perplexity|alignment)\.(mem_mb|runtime)", 1, True, INF, False, True),
    (r"study_b\.(sizes\.\w+\.)?train\.(base_tokens|batch_size|micro_batch_size|eval_every|eval_batches"
     r"|checkpoint_every|log_every)", 1, True, INF, False, True),
    (r"study_b\.(sizes\.\w+\.)?train\.context", 2, True, INF, False, True),
    (r"study_b\.(sizes\.\w+\.)?train\.warmup_steps", 0, True, INF, False, True),
    (r"study_b\.(sizes\.\w+\.)?train\.(lr|eps)", 0, False, INF, False, False),
    (r"study_b\.(sizes\.\w+\.)?train\.(min_lr|weight_decay)", 0, True, INF, False, False),
    (r"study_b\.(sizes\.\w+\.)?train\.betas\.\d+", 0, True, 1, False, False),
    (r"study_b\.eval\.(window|parallel_max_len)", 2, True, INF, False, True),
    (r"study_b\.eval\.(stride|max_tokens|batch_size|n_parallel|parallel_min_len)", 1, True, INF, False, True),
    (r"study_b\.eval\.fit_bootstrap", 0, True, INF, False, True),
    (r"study_b\.eval\.fit_max_rel_error", 0, False, INF, False, False),
    (r"study_b\.grid\.\d+\.(p_l2|p_l1)\.\d+", 0, False, 1, False, False),
    (r"study_b\.grid\.\d+\.clone_fractions\.\d+", 0, True, 1, True, False),
    (r"study_b\.grid\.\d+\.(scales|fractions)\.\d+", 0, False, INF, False, False),
    (r"study_b\.grid\.\d+\.n_languages", 2, True, INF, False, True),
]

CONFIGS = {"paper": ("config.yaml",), "demo": ("config.yaml", "presets/demo.yaml")}


def numeric_leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from numeric_leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from numeric_leaves(v, path + (i,))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def set_at(cfg, path, value):
    for k in path[:-1]:
        cfg = cfg[k]
    cfg[path[-1]] = value


def interval(lo, lo_in, hi, hi_in) -> str:
    left = ("[" if lo_in else "(") + ("-inf" if lo == -INF else f"{lo:g}")
    right = ("inf" if hi == INF else f"{hi:g}") + ("]" if hi_in else ")")
    return f"{left}, {right}"


def outside(lo, lo_in, hi, hi_in, integer) -> list:
    """Values just outside the domain: below the low bound, above the high one."""
    step = 1 if integer else 1e-3
    out = []
    if lo != -INF:
        out.append(lo - step if lo_in else lo)
    if hi != INF:
        out.append(hi + step if hi_in else hi)
    return out


def domain_of(key: str):
    found = [d for d in DOMAINS if re.fullmatch(d[0], key)]
    return found[0][1:] if found else None


def cases():
    for name, files in CONFIGS.items():
        raw = load_config(*[ROOT / f for f in files], validate=False)
        full = validate_config(copy.deepcopy(raw))  # with the schema's defaults
        for path, _ in numeric_leaves({"study_b": full["study_b"]}):
            yield name, raw, path


CASES = list(cases())


@pytest.fixture(scope="module")
def raws():
    return {name: load_config(*[ROOT / f for f in files], validate=False) for name, files in CONFIGS.items()}


def test_the_walk_sees_the_study_b_grid():
    keys = {".".join(map(str, path)) for _, _, path in CASES}
    for key in ("study_b.grid.0.p_l2.0", "study_b.train.betas.1", "study_b.seed", "study_b.eval.window"):
        assert key in keys
    assert any(re.fullmatch(r"study_b\.grid\.\d+\.fractions\.\d+", k) for k in keys)
    assert any(re.fullmatch(r"study_b\.grid\.\d+\.p_l1\.\d+", k) for k in keys)
    assert any(re.fullmatch(r"study_b\.grid\.\d+\.scales\.\d+", k) for k in keys)


@pytest.mark.parametrize("config,raw,path", CASES, ids=[f"{c}:{'.'.join(map(str, p))}" for c, _, p in CASES])
def test_every_numeric_study_b_value_outside_its_domain_is_named_with_its_range(config, raw, path):
    key = ".".join(map(str, path))
    domain = domain_of(key)
    assert domain is not None, f"{key}: no domain in tests/test_config_domains.py; give it one"
    for bad in outside(*domain):
        cfg = copy.deepcopy(raw)
        _set_with_parents(cfg, path, bad)
        with pytest.raises(ConfigError) as err:
            validate_config(cfg)
        msg = str(err.value)
        assert f"config key '{key}'" in msg, (bad, msg)
        assert interval(*domain[:4]) in msg, (bad, msg)


def _set_with_parents(cfg, path, value):
    """Set a value, creating the dicts above it that only the schema's defaults filled in."""
    for k in path[:-1]:
        if isinstance(cfg, dict):
            cfg = cfg.setdefault(k, {})
        else:
            cfg = cfg[k]
    cfg[path[-1]] = value


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_named_everywhere(raws, bad):
    """NaN and infinities pass every JSON-schema bound; each numeric key of the config is tried."""
    raw = raws["demo"]
    paths = [p for p, _ in numeric_leaves(raw)]
    assert len(paths) > 50
    for path in paths:
        cfg = copy.deepcopy(raw)
        set_at(cfg, path, bad)
        with pytest.raises(ConfigError) as err:
            validate_config(cfg)
        assert f"config key '{'.'.join(map(str, path))}': {bad} is not a finite number" in str(err.value)


def test_min_lr_above_lr_is_named(raws):
    msg = rejected(raws["demo"], lambda c: c["study_b"]["train"].update(min_lr=0.5))
    assert "config key 'study_b.train.min_lr'" in msg and "exceeds lr=" in msg
    msg = rejected(raws["paper"], lambda c: c["study_b"]["sizes"]["medium"].setdefault("train", {}).update(lr=1e-7))
    assert "config key 'study_b.sizes.medium.train.min_lr'" in msg


def test_data_fraction_above_one_is_named(raws):
    def mutate(c):
        c["study_b"]["grid"].append({"name": "d", "kind": "mono", "languages": ["en"], "fractions": [0.5, 1.5],
                                     "fraction_mode": "data"})
    msg = rejected(raws["demo"], mutate)
    assert "study_b.grid" in msg and "1.5 is outside (0, 1]" in msg


def test_schedule_share_above_one_is_named(raws):
    def mutate(c):
        c["study_b"]["grid"][0]["schedules"] = ["0.5_1.5"]
    msg = rejected(raws["demo"], mutate)
    assert "study_b.grid" in msg and "outside [0, 1]" in msg


def test_shap_random_state_is_a_seed(raws):
    msg = rejected(raws["demo"], lambda c: c["study_a"]["shap"].update(random_state=-1))
    assert "config key 'study_a.shap.random_state'" in msg and "[0, inf)" in msg


def test_a_negative_monolingual_fraction_stops_the_dry_run(tmp_path):
    """Before, a fraction of -1 (or 0) became a one-step monolingual run and jobs started."""
    overlay = tmp_path / "bad.yaml"
    raw = load_config(ROOT / "config.yaml", ROOT / "presets/demo.yaml", validate=False)
    grid = copy.deepcopy(raw["study_b"]["grid"])
    mono = next(b for b in grid if b["kind"] == "mono")
    mono["fractions"] = [-1, *mono["fractions"][1:]]
    import yaml

    overlay.write_text(yaml.safe_dump({"study_b": {"grid": grid}, "outdir": str(tmp_path / "out")}))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile",
                           "presets/demo.yaml", str(overlay)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert ".fractions.0'" in out and "(allowed range: (0, inf))" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key,inside,outside_", [("character_coverage", 0.98, 0.97),
                                                 ("input_sentence_size", 101, 100),
                                                 ("max_sentence_length", 10, 9),
                                                 ("max_sentencepiece_length", 512, 513)])
def test_tokenizer_ranges_are_sentencepieces(tmp_path, key, inside, outside_):
    """The tokenizer domains above are SentencePiece's: its trainer takes the bound and stops just past it."""
    import sentencepiece as spm

    text = tmp_path / "t.txt"
    text.write_text("\n".join(f"ab{i % 7} cd{i % 5}" for i in range(300)))  # lines under 10 bytes

    def train(value):
        spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "m"), vocab_size=60,
                                       hard_vocab_limit=False, minloglevel=2, **{key: value})

    train(inside)
    with pytest.raises(RuntimeError):
        train(outside_)
