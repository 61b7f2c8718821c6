"""Expand Study B's ``grid:`` blocks into pretraining run specs with stable, readable ids.

Each block of ``study_b.grid`` is one family of runs; lists in a block are crossed:

* ``kind: clone`` - cloned copies of ``base_language`` (default: the first configured
  language). The mix is one of ``p_l2`` (p of the second of two languages), ``p_l1``
  ("uniform" or L1's share, the other ``n_languages - 1`` clones sharing the rest) or
  ``schedules`` (strings such as "0.1_0.9": p(L2) per equal stage).
  Ids: ``small-1x-clone2-p0.10``, ``small-1x-clone10-uniform``, ``small-1x-clone10-l1p0.50``,
  ``small-2x-sched-0.1_0.9``; ``-c0.50`` is appended when ``clone_fractions`` < 1.
* ``kind: real`` - two base languages (``base_languages``, default en+fr) with ``p_l2``
  (p of the second) and ``vocab_modes`` (disjoint / anchored): ``small-1x-enfr-anchored-p0.30``.
* ``kind: mono`` - monolingual runs per language and ``fractions`` for the scaling fit.
  With ``fraction_mode: steps`` (default, as the paper) a fraction f trains f x base_steps
  steps on the full stream (``small-mono-en-f0.25``); with ``fraction_mode: data`` it
  trains ``scales`` x base_steps on the first fraction f of the stream
  (``small-1x-mono-en-d0.25``).
"""

from __future__ import annotations

from typing import Any, Iterable

from langskew.errors import LangskewError
from langskew.study_b.languages import VOCAB_MODES, check_schedule, parse_schedule

BLOCK_KINDS = ("clone", "real", "mono")
_BLOCK_KEYS = {
    "common": {"name", "kind", "sizes", "scales", "enabled"},
    "clone": {"base_language", "n_languages", "p_l2", "p_l1", "schedules", "clone_fractions"},
    "real": {"base_languages", "p_l2", "vocab_modes"},
    "mono": {"languages", "fractions", "fraction_mode"},
}


def fmt_num(x: float) -> str:
    """Short number for ids: 1 -> "1", 0.25 -> "0.25", 2.0 -> "2"."""
    return f"{float(x):g}"


def _base_steps(cfg: dict, size: str) -> int | None:
    steps = _size_cfg(cfg, size).get("base_steps") or (cfg.get("train") or {}).get("base_steps")
    return int(steps) if steps else None


def _tokens_per_step(cfg: dict, size: str) -> int | None:
    hp = {**(cfg.get("train") or {}), **(_size_cfg(cfg, size).get("train") or {})}
    if hp.get("batch_size") is None or hp.get("context") is None:
        return None
    return int(hp["batch_size"]) * int(hp["context"])


def budget_tokens(cfg: dict, size: str) -> int | None:
    """Tokens of a 1x run of ``size``: ``train.base_tokens`` (the paper: 1,197,015,040 for every size).

    ``base_steps`` (per size, or under ``train``), when set, defines the budget instead as
    that many steps at the size's batch size and context.
    """
    steps = _base_steps(cfg, size)
    if steps:
        per_step = _tokens_per_step(cfg, size)
        return steps * per_step if per_step else None
    tokens = (cfg.get("train") or {}).get("base_tokens")
    if not tokens:
        raise LangskewError("study_b.train: set base_tokens (tokens of a 1x run) or base_steps")
    return int(tokens)


def _steps(cfg: dict, size: str, scale: float) -> int:
    """Optimizer steps of a run: scale x the 1x token budget / tokens per step, rounded down (at least 1)."""
    steps = _base_steps(cfg, size)
    if steps:
        return max(int(round(float(scale) * steps)), 1)
    per_step = _tokens_per_step(cfg, size)
    if not per_step:
        raise LangskewError(f"study_b: size {size!r} needs train.batch_size and train.context to turn "
                            f"base_tokens into steps")
    return max(int(float(scale) * budget_tokens(cfg, size) // per_step), 1)


def _size_cfg(cfg: dict, size: str) -> dict:
    sizes = cfg.get("sizes") or {}
    if size not in sizes:
        raise LangskewError(f"study_b: model size {size!r} is not defined under study_b.sizes "
                            f"(defined: {', '.join(sorted(sizes)) or 'none'})")
    return sizes[size]


def _spec(cfg: dict, *, kind: str, size: str, scale: float, base_languages: list[str], schedule: list,
          run_id: str, label: str, mix: str, clone_fraction: float = 1.0, vocab_mode: str | None = None,
          data_fraction: float = 1.0, language: str | None = None) -> dict:
    n_languages = len(schedule[0])
    steps = _steps(cfg, size, scale)
    per_step = _tokens_per_step(cfg, size)
    return {"id": run_id, "kind": kind, "size": size, "scale": float(scale), "steps": steps,
            "tokens": steps * per_step if per_step else None, "budget_tokens": budget_tokens(cfg, size),
            "base_languages": list(base_languages), "n_languages": n_languages,
            "schedule": [[float(p) for p in stage] for stage in schedule], "clone_fraction": float(clone_fraction),
            "vocab_mode": vocab_mode, "data_fraction": float(data_fraction), "language": language,
            "label": label, "mix": mix}


def _clone_mixes(block: dict, where: str) -> list[tuple[str, str, list]]:
    """(id part, label part, schedule) for each mix of a clone block."""
    K = int(block.get("n_languages", 2))
    mixes: list[tuple[str, str, list]] = []
    for p in block.get("p_l2") or []:
        if K != 2:
            raise LangskewError(f"{where}: p_l2 needs n_languages 2 (got {K}); use p_l1 for more languages")
        mixes.append((f"clone2-p{float(p):.2f}", f"p(L2)={float(p):g}", [[1.0 - float(p), float(p)]]))
    for q in block.get("p_l1") or []:
        if q == "uniform":
            mixes.append((f"clone{K}-uniform", f"{K} languages uniform", [[1.0 / K] * K]))
        else:
            q = float(q)
            mixes.append((f"clone{K}-l1p{q:.2f}", f"{K} languages, L1 {q:g}",
                          [[q] + [(1.0 - q) / (K - 1)] * (K - 1)]))
    for text in block.get("schedules") or []:
        if K != 2:
            raise LangskewError(f"{where}: schedules need n_languages 2 (got {K})")
        mixes.append((f"sched-{text}", f"schedule {text}", parse_schedule(text)))
    if not mixes:
        raise LangskewError(f"{where}: a clone block needs p_l2, p_l1 or schedules")
    return mixes


def _clone_runs(cfg: dict, block: dict, where: str) -> Iterable[dict]:
    base = block.get("base_language") or next(iter(cfg.get("languages") or {"en": None}))
    for size in block.get("sizes") or [cfg.get("default_size", "small")]:
        for scale in block.get("scales") or [1]:
            for mix_id, mix_label, schedule in _clone_mixes(block, where):
                for cf in block.get("clone_fractions") or [1.0]:
                    suffix = "" if float(cf) == 1.0 else f"-c{float(cf):.2f}"
                    run_id = f"{size}-{fmt_num(scale)}x-{mix_id}{suffix}"
                    label = f"{size} {fmt_num(scale)}x, {mix_label}" + (f", clone fraction {cf:g}" if suffix else "")
                    yield _spec(cfg, kind="clone", size=size, scale=scale, base_languages=[base],
                                schedule=check_schedule(schedule, len(schedule[0]), where).tolist(),
                                run_id=run_id, label=label, mix=mix_id + suffix, clone_fraction=float(cf))


def _real_runs(cfg: dict, block: dict, where: str) -> Iterable[dict]:
    langs = list(block.get("base_languages") or ["en", "fr"])
    if len(langs) != 2:
        raise LangskewError(f"{where}: base_languages must name two languages, got {langs}")
    pair = "".join(langs)
    for size in block.get("sizes") or [cfg.get("default_size", "small")]:
        for scale in block.get("scales") or [1]:
            for mode in block.get("vocab_modes") or ["disjoint"]:
                if mode not in VOCAB_MODES:
                    raise LangskewError(f"{where}: vocab mode {mode!r} is not one of {', '.join(VOCAB_MODES)}")
                for p in block.get("p_l2") or []:
                    p = float(p)
                    yield _spec(cfg, kind="real", size=size, scale=scale, base_languages=langs,
                                schedule=[[1.0 - p, p]], run_id=f"{size}-{fmt_num(scale)}x-{pair}-{mode}-p{p:.2f}",
                                label=f"{size} {fmt_num(scale)}x, {langs[0]}+{langs[1]} {mode}, p({langs[1]})={p:g}",
                                mix=f"p{p:.2f}", vocab_mode=mode)


def _mono_runs(cfg: dict, block: dict, where: str) -> Iterable[dict]:
    mode = block.get("fraction_mode", "steps")
    if mode not in ("steps", "data"):
        raise LangskewError(f"{where}: fraction_mode {mode!r} is not one of steps, data")
    for size in block.get("sizes") or [cfg.get("default_size", "small")]:
        for lang in block.get("languages") or [next(iter(cfg.get("languages") or {"en": None}))]:
            for f in block.get("fractions") or []:
                f = float(f)
                if mode == "steps":
                    yield _spec(cfg, kind="mono", size=size, scale=f, base_languages=[lang], schedule=[[1.0]],
                                run_id=f"{size}-mono-{lang}-f{fmt_num(f)}", language=lang, mix=f"f{fmt_num(f)}",
                                label=f"{size} monolingual {lang}, {fmt_num(f)}x steps")
                    continue
                if not 0 < f <= 1:
                    raise LangskewError(f"{where}: data fraction {f} is outside (0, 1]")
                for scale in block.get("scales") or [1]:
                    yield _spec(cfg, kind="mono", size=size, scale=scale, base_languages=[lang], schedule=[[1.0]],
                                run_id=f"{size}-{fmt_num(scale)}x-mono-{lang}-d{fmt_num(f)}", language=lang,
                                mix=f"d{fmt_num(f)}", data_fraction=f,
                                label=f"{size} {fmt_num(scale)}x monolingual {lang}, {fmt_num(f)} of the data")


_EXPANDERS = {"clone": _clone_runs, "real": _real_runs, "mono": _mono_runs}


def expand_runs(study_b_cfg: dict) -> dict[str, dict]:
    """All pretraining runs of the enabled ``grid`` blocks, keyed by run id (config order).

    A run listed by two blocks with the same spec appears once; two different specs
    under one id are an error, as are unknown block keys, sizes and languages.
    """
    cfg = study_b_cfg
    languages = set((cfg.get("languages") or {}).keys())
    runs: dict[str, dict] = {}
    for i, block in enumerate(cfg.get("grid") or []):
        where = f"study_b.grid[{i}] ({block.get('name', 'unnamed')})"
        kind = block.get("kind")
        if kind not in BLOCK_KINDS:
            raise LangskewError(f"{where}: kind {kind!r} is not one of {', '.join(BLOCK_KINDS)}")
        unknown = set(block) - _BLOCK_KEYS["common"] - _BLOCK_KEYS[kind]
        if unknown:
            raise LangskewError(f"{where}: unknown key {sorted(unknown)[0]!r} for a {kind} block")
        if not block.get("enabled", True):
            continue
        for run in _EXPANDERS[kind](cfg, block, where):
            for lang in run["base_languages"]:
                if languages and lang not in languages:
                    raise LangskewError(f"{where}: language {lang!r} is not defined under study_b.languages")
            old = runs.get(run["id"])
            if old is not None and {k: v for k, v in old.items() if k != "block"} != run:
                raise LangskewError(f"{where}: run id {run['id']!r} is produced twice with different settings")
            run["block"] = old["block"] if old else block.get("name", kind)
            runs[run["id"]] = run
    return runs


# ---------------------------------------------------------------------------------------
# Per-run parameters for the rules
# ---------------------------------------------------------------------------------------
def model_params(cfg: dict, size: str) -> dict[str, int | None]:
    """Architecture of a size: {n_layer, d_model, n_head, head_dim} (head_dim None: d_model / n_head)."""
    s = _size_cfg(cfg, size)
    return {**{k: int(s[k]) for k in ("n_layer", "d_model", "n_head")},
            "head_dim": int(s["head_dim"]) if s.get("head_dim") else None}


TRAIN_KEYS = ("context", "batch_size", "micro_batch_size", "lr", "min_lr", "warmup_steps", "lr_schedule", "betas", "eps",
              "weight_decay", "grad_clip", "precision", "compile", "eval_every", "eval_batches",
              "checkpoint_every", "log_every")


def train_params(cfg: dict, size: str) -> dict[str, Any]:
    """Training hyper-parameters of a size: ``study_b.train`` with the size's overrides."""
    merged = {**cfg["train"], **(_size_cfg(cfg, size).get("train") or {})}
    out = {k: merged.get(k) for k in TRAIN_KEYS}
    if out["micro_batch_size"] is None:  # null: the whole batch in one forward pass
        out["micro_batch_size"] = out["batch_size"]
    return out


def size_resources(cfg: dict, size: str) -> dict[str, Any]:
    """SLURM resources of a size's pretraining jobs (runtime in minutes at 1x)."""
    return dict(_size_cfg(cfg, size).get("resources") or {})


def fit_plan(runs: dict[str, dict]) -> dict[str, dict[str, list[str]]]:
    """Scaling-fit groups per model size: {size: {"mono": [ids], "targets": [ids]}}.

    A bilingual run is a target when every base language it uses has monolingual runs of
    the same size (at least two fractions, needed for a fit); sizes without targets are left out.
    """
    mono: dict[tuple[str, str], list[str]] = {}
    for rid, r in runs.items():
        if r["kind"] == "mono":
            mono.setdefault((r["size"], r["language"]), []).append(rid)
    plan: dict[str, dict[str, list[str]]] = {}
    for rid, r in runs.items():
        if r["kind"] == "mono":
            continue
        needed = [(r["size"], lang) for lang in r["base_languages"]]
        if all(len(mono.get(key, [])) >= 2 for key in needed):
            group = plan.setdefault(r["size"], {"mono": [], "targets": []})
            group["targets"].append(rid)
            for key in needed:
                group["mono"].extend(m for m in mono[key] if m not in group["mono"])
    return plan
