"""One point of the Study B miniature search: run Study B alone for one configuration and
several seeds, collect the three capacity effects and append a row to a CSV.

Each seed is a separate Snakemake call (``study_b.seed`` is global) on ``presets/demo.yaml``
plus an overlay written into ``<root>/<name>/seed<k>/overlay.yaml``: Study A off, the grid cut
to what the effects need (clones 50/50 and 90/10, monolingual L1 at 0.25 / 0.5 / 1 / 2x for
the scaling fit), and only data (``--richness``: the synthetic grammar's lexicon size, for both
languages and the parallel pairs), model size and training budget changed. The evaluation is
the workflow's own; the effects are read from its report tables:

* ``teff``: the 50/50 run's TEff of L1 and L2 (the paper: 0.887 / 0.885, below 1);
* ``rep``: the clones' representation cosine per layer, 90/10 and 50/50, and their difference
  averaged over layers (the paper: 90/10 above 50/50 in every layer);
* ``grad``: the mean gradient cosine over the blocks' tensors, 90/10 and 50/50 (the paper:
  0.534 vs 0.072).

Over the seeds each value gets its mean and its range (min..max); an effect "shows" when its
direction holds in every seed. The CSV row also holds the wall time, the machine and its load
average at start and end (other jobs may share it), the parameters N of the 50/50 model, the
tokens D of a 1x run and the compute 6 N D.

    python benchmarks/miniature_search.py --name demo-d128 --n-layer 4 --d-model 128 --n-head 4 \
        --seeds 0 1 --cores 2 --nice 19
    python benchmarks/miniature_search.py --name demo-d128 ... --collect-only   # re-read finished runs
    python benchmarks/miniature_search.py --name synth-r4 --richness 4 ...   # 4x the grammar's lexicon
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
RUN_5050, RUN_9010 = "clone2-p0.50", "clone2-p0.10"
SKEWED_L1 = 0.9  # L1's share in the skewed mix by default: 90/10, or L1 0.9 and the other clones sharing 0.1
CONTEXT, BATCH = 64, 16  # the demo's sequence length and batch (study_b.train)


def mixes(clones: int = 2, skewed_l1: float = SKEWED_L1) -> tuple[str, str]:
    """(balanced, skewed) run-id endings: for two clones 50/50 and L1 at ``skewed_l1`` (90/10 by
    default); for K > 2 clones all K uniform and L1 at ``skewed_l1`` with the other K - 1 sharing
    the rest (grid ``p_l1``; the paper's ten-language grid: 0.5), on which the same effects are
    read for L1 and L2."""
    if clones == 2:
        return RUN_5050, f"clone2-p{1 - skewed_l1:.2f}"
    return f"clone{clones}-uniform", f"clone{clones}-l1p{skewed_l1:.2f}"


CSV_COLUMNS = [
    "name", "date", "machine", "load_start", "load_end", "wall_s", "status", "seeds", "data", "n_layer", "d_model",
    "n_head", "steps", "train_docs", "vocab", "richness", "clones", "skewed_l1", "params", "tokens", "compute",
    "teff_l1_mean", "teff_l1_lo", "teff_l1_hi", "teff_l2_mean", "teff_l2_lo", "teff_l2_hi", "fit_reliable",
    "rep_9010", "rep_5050", "rep_diff_mean", "rep_diff_lo", "rep_diff_hi",
    "grad_9010_mean", "grad_9010_lo", "grad_9010_hi", "grad_5050_mean", "grad_5050_lo", "grad_5050_hi",
    "grad_diff_mean", "grad_diff_lo", "grad_diff_hi", "shows_teff", "shows_rep", "shows_grad", "code",
]


class SearchError(Exception):
    """A report table lacks what an effect needs."""


# -- configuration ----------------------------------------------------------------------
def overlay(args: argparse.Namespace, seed: int, outdir: Path) -> dict[str, Any]:
    """The overlay of presets/demo.yaml for one seed of one configuration."""
    richness = int(getattr(args, "richness", 1))
    clones = int(getattr(args, "clones", 2))
    skewed_l1 = float(getattr(args, "skewed_l1", SKEWED_L1))
    if args.text:
        en = {"source": "local", "local": {"train": list(args.text), "document_split": args.document_split},
              "test_fraction": 0.02, "max_documents": {"train": args.train_docs, "test": 200}}
    else:
        en = {"source": "synthetic", "synthetic": {"grammar": "en", "n_documents": {"train": args.train_docs,
                                                                                       "test": 200}, "seed": 0,
                                                   "richness": richness},
              "max_documents": {"train": None, "test": None}}
    # fr and the parallel pairs keep the preset's other settings (Snakemake merges the overlay)
    languages = {"en": en, "fr": {"synthetic": {"richness": richness}}}
    return {
        "outdir": str(outdir / "results"),
        "checkpoint_dir": str(outdir / "checkpoints"),
        "keep_checkpoints": False,
        "study_a": {"enabled": False},
        "study_b": {
            "seed": int(seed),
            "languages": languages,
            "parallel": {"synthetic": {"richness": richness}},
            "tokenizer": {"vocab_size": args.vocab},
            "sizes": {"tiny": {"n_layer": args.n_layer, "d_model": args.d_model, "n_head": args.n_head}},
            "train": {"base_tokens": args.steps * BATCH * CONTEXT},
            "grid": [
                {"name": "balance", "kind": "clone", "sizes": ["tiny"], "p_l2": [0.5, round(1 - skewed_l1, 6)]} if clones == 2 else
                {"name": "balance", "kind": "clone", "sizes": ["tiny"], "n_languages": clones,
                 "p_l1": ["uniform", skewed_l1]},
                {"name": "mono", "kind": "mono", "sizes": ["tiny"], "languages": ["en"],
                 "fractions": [0.25, 0.5, 1, 2]},
            ],
        },
    }


# -- effects ----------------------------------------------------------------------------
def _rows(table: pd.DataFrame, mix: str, what: str) -> pd.DataFrame:
    for col in ("run", "scale"):
        if col not in table.columns:
            raise SearchError(f"{what}: no column {col!r}")
    rows = table[table["run"].astype(str).str.endswith(mix) & (table["scale"].astype(float) == 1.0)]
    if rows.empty:
        raise SearchError(f"{what}: no 1x run ending in {mix!r}")
    return rows


def _effects(teff_l1: float, teff_l2: float, reliable: bool, layers: dict[str, list[float]], g: dict[str, float],
             runs: tuple[str, str]) -> dict[str, Any]:
    """One seed's effects from its TEff, its per-layer representation cosines and its mean gradient
    cosines (both keyed by run-id ending), ``runs`` = (balanced, skewed)."""
    balanced, skewed = runs
    diffs = [a - b for a, b in zip(layers[skewed], layers[balanced])]
    return {"teff_l1": teff_l1, "teff_l2": teff_l2, "fit_reliable": bool(reliable),
            "rep_9010": layers[skewed], "rep_5050": layers[balanced], "rep_diff": sum(diffs) / len(diffs),
            "grad_9010": g[skewed], "grad_5050": g[balanced], "grad_diff": g[skewed] - g[balanced]}


def seed_effects(report_dir: Path, runs: tuple[str, str] = (RUN_5050, RUN_9010)) -> dict[str, Any]:
    """The three effects of one seed from the Study B report tables in ``report_dir``; ``runs``:
    the (balanced, skewed) run-id endings (:func:`mixes`)."""
    balanced, skewed = runs
    teff = pd.read_csv(report_dir / "token_efficiency.csv")
    rep = pd.read_csv(report_dir / "representation_alignment.csv")
    grad = pd.read_csv(report_dir / "gradient_alignment.csv")
    t = _rows(teff, balanced, "token_efficiency.csv").set_index("language")
    missing = {"L1", "L2"} - set(t.index)
    if missing:
        raise SearchError(f"token_efficiency.csv: 50/50 run lacks language(s) {sorted(missing)}")
    layers = {mix: _rows(rep, mix, "representation_alignment.csv").sort_values("layer")["cosine"].to_list()
              for mix in (skewed, balanced)}
    if len(layers[skewed]) != len(layers[balanced]):
        raise SearchError("representation_alignment.csv: 90/10 and 50/50 have different numbers of layers")
    g = {mix: float(_rows(grad, mix, "gradient_alignment.csv")["mean_cosine"].iloc[0]) for mix in (skewed, balanced)}
    reliable = t["fit_reliable"].astype(str).str.lower().isin(["true", "1"]).all() if "fit_reliable" in t else False
    return _effects(float(t.loc["L1", "TEff"]), float(t.loc["L2", "TEff"]), reliable, layers, g, runs)


def alignment_effects(runs_dir: Path, runs: tuple[str, str] = (RUN_5050, RUN_9010)) -> dict[str, Any]:
    """The representation and gradient effects of one seed from its clone runs' own alignment tables
    (``--skip-teff``: no monolingual runs, no fit, so no report); TEff is NaN."""
    balanced, skewed = runs
    layers, g = {}, {}
    for mix in (skewed, balanced):
        folders = sorted(runs_dir.glob(f"*-1x-{mix}"))
        if not folders:
            raise SearchError(f"{runs_dir}: no 1x run ending in {mix!r}")
        rep = pd.read_csv(folders[0] / "alignment_representation.csv").sort_values("layer")
        layers[mix] = rep["cosine_mean"].astype(float).to_list()
        grad = pd.read_csv(folders[0] / "alignment_gradient.csv").set_index("parameter")["cosine_mean"]
        if "mean" not in grad.index:
            raise SearchError(f"{folders[0]}/alignment_gradient.csv: no 'mean' row")
        g[mix] = float(grad["mean"])
    return _effects(math.nan, math.nan, False, layers, g, runs)


def _stats(values: Sequence[float]) -> tuple[float, float, float]:
    return sum(values) / len(values), min(values), max(values)


def summarise(per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and range over seeds of every effect, and whether each effect's direction holds in every seed."""
    if not per_seed:
        raise SearchError("no seed finished")
    out: dict[str, Any] = {}
    for key in ("teff_l1", "teff_l2", "rep_diff", "grad_9010", "grad_5050", "grad_diff"):
        out[f"{key}_mean"], out[f"{key}_lo"], out[f"{key}_hi"] = _stats([s[key] for s in per_seed])
    for mix in ("rep_9010", "rep_5050"):
        per_layer = zip(*(s[mix] for s in per_seed))
        out[mix] = " ".join(f"{sum(v) / len(v):.3f}" for v in per_layer)
    out["fit_reliable"] = all(s["fit_reliable"] for s in per_seed)
    # TEff below 1 in every seed, on scaling fits the workflow flags reliable in every seed (a TEff
    # read off a fit that misses its own points says nothing); False when TEff is NaN
    out["shows_teff"] = bool(out["teff_l1_hi"] < 1 and out["teff_l2_hi"] < 1 and out["fit_reliable"])
    out["shows_rep"] = out["rep_diff_lo"] > 0 and all(min(s["rep_9010"]) > 0 for s in per_seed)
    out["shows_grad"] = out["grad_diff_lo"] > 0
    return out


# -- running ----------------------------------------------------------------------------
def code_version(repo: Path = REPO, ignore: Sequence[Path] = ()) -> str:
    """The checkout the runs used: its short commit, "+changes" when tracked files differ from it
    (``ignore``: files the search itself writes, such as the CSV it appends to)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True).stdout.strip()
        top = Path(repo).resolve()
        excluded = [f":(exclude){Path(p).resolve()}" for p in ignore if Path(p).resolve().is_relative_to(top)]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
                               cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if dirty else "")


def machine(note: str) -> str:
    return f"{os.cpu_count()}-core {platform.machine()} CPU{', ' + note if note else ''}"


def start_seed(args: argparse.Namespace, seed: int, outdir: Path) -> subprocess.Popen:
    """Write the seed's overlay and start its Snakemake call (niced, one thread per job)."""
    outdir.mkdir(parents=True, exist_ok=True)
    ov = outdir / "overlay.yaml"
    ov.write_text(yaml.safe_dump(overlay(args, seed, outdir), sort_keys=False))
    targets = []
    if args.skip_teff:  # only the clone runs and their alignment
        runs = outdir / "results" / "study_b" / "runs"
        targets = [str(runs / f"tiny-1x-{mix}" / f"alignment_{what}.csv") for mix in mixes(args.clones, args.skewed_l1)
                   for what in ("representation", "gradient")]
    cmd = ["nice", "-n", str(args.nice), sys.executable, "-m", "snakemake", *targets, "--cores", str(args.cores),
           "--nolock", "--rerun-incomplete", "--configfile", str(REPO / "presets/demo.yaml"), str(ov)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(outdir / "snakemake.log", "a") as log:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def run_seeds(args: argparse.Namespace, base: Path) -> str:
    """Run every seed, one after the other or (``--parallel``) side by side; "ok" or what failed."""
    failed = []
    if args.parallel:
        procs = {seed: start_seed(args, seed, base / f"seed{seed}") for seed in args.seeds}
        failed = [seed for seed, proc in procs.items() if proc.wait() != 0]
    else:
        for seed in args.seeds:
            if start_seed(args, seed, base / f"seed{seed}").wait() != 0:
                failed.append(seed)
                break
    return "ok" if not failed else "failed seed(s) " + " ".join(map(str, failed)) + " (see their snakemake.log)"


def params_of(outdir: Path, balanced: str = RUN_5050) -> int:
    runs = outdir / "results" / "study_b" / "runs"
    metrics = [p for p in runs.glob(f"*{balanced}/metrics.json")]
    if not metrics:
        raise SearchError(f"no metrics.json of the 50/50 run under {runs}")
    return int(json.loads(metrics[0].read_text())["n_params"])


def upgrade_csv(path: Path) -> None:
    """Rewrite a CSV written before a column was added (e.g. ``richness``) with the current
    columns, the new ones empty in the old rows, so that appended rows line up."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        header = list(rows[0]) if rows else None
    if header is None or header == CSV_COLUMNS:
        return
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        raise SearchError(f"{path}: column(s) {unknown} are not the driver's; use another --csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def append_row(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    if not new:
        upgrade_csv(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="raise")
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else f"{v:.4g}" if isinstance(v, float)
                             else v) for k, v in row.items()})


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="name of the configuration (its folder and CSV row)")
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--n-head", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1000, help="optimizer steps of a 1x run (16 x 64 tokens each)")
    ap.add_argument("--train-docs", type=int, default=15000, help="train documents of L1's corpus")
    ap.add_argument("--vocab", type=int, default=512, help="tokenizer pieces per clone")
    ap.add_argument("--richness", type=int, default=1,
                    help="the synthetic grammar's lexicon size: k times the hand-written nouns, adjectives and verbs")
    ap.add_argument("--clones", type=int, default=2,
                    help="clones of L1 (more than 2: all uniform against L1 at --skewed-l1, the effects read for L1 and L2)")
    ap.add_argument("--skewed-l1", type=float, default=SKEWED_L1,
                    help="L1's share in the skewed run (0.9: 90/10 for two clones; the paper's ten languages: 0.5)")
    ap.add_argument("--text", nargs="*", default=None, help="local text files (globs) instead of the synthetic grammar")
    ap.add_argument("--document-split", default="blank_line", choices=["file", "blank_line", "line"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--cores", type=int, default=2, help="Snakemake --cores (one thread per job)")
    ap.add_argument("--nice", type=int, default=19)
    ap.add_argument("--parallel", action="store_true", help="run the seeds side by side (each with --cores)")
    ap.add_argument("--root", type=Path, default=REPO / "results" / "miniature", help="folder of the runs")
    ap.add_argument("--csv", type=Path, default=REPO / "benchmarks/miniature_runs.csv")
    ap.add_argument("--machine-note", default="", help="appended to the machine, e.g. 'shared with other jobs'")
    ap.add_argument("--skip-teff", action="store_true",
                    help="train only the clones and measure their alignment (no monolingual runs, fit or TEff)")
    ap.add_argument("--collect-only", action="store_true", help="do not run; read the finished seeds")
    args = ap.parse_args(argv)
    if args.richness < 1:
        ap.error(f"--richness must be at least 1, got {args.richness}")
    if args.text and args.richness != 1:
        ap.error("--richness sets the synthetic grammar; with --text L1 is your text")
    if args.clones < 2:
        ap.error(f"--clones must be at least 2, got {args.clones}")
    if not 1 / args.clones < args.skewed_l1 < 1:
        ap.error(f"--skewed-l1 is L1's share in the skewed run: above the uniform 1/{args.clones} and below 1, "
                 f"got {args.skewed_l1}")
    runs = mixes(args.clones, args.skewed_l1)

    base = args.root / args.name
    load_start, start, status = os.getloadavg()[0], time.monotonic(), "ok"
    if not args.collect_only:
        status = run_seeds(args, base)
    wall = time.monotonic() - start
    per_seed, done = [], []
    for seed in args.seeds:
        results = base / f"seed{seed}" / "results"
        report = results / "report" / "study_b"
        if (report / "token_efficiency.csv").exists():
            per_seed.append(seed_effects(report, runs))
            done.append(seed)
        elif args.skip_teff and all((results / "study_b" / "runs" / f"tiny-1x-{mix}" / "alignment_gradient.csv").exists()
                                    for mix in runs):
            per_seed.append(alignment_effects(results / "study_b" / "runs", runs))
            done.append(seed)
    summary = summarise(per_seed)
    params = params_of(base / f"seed{done[0]}", runs[0])
    tokens = args.steps * BATCH * CONTEXT
    row = {"name": args.name, "date": dt.date.today().isoformat(), "machine": machine(args.machine_note),
           "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2),
           "wall_s": "" if args.collect_only else round(wall),
           "status": status + (" (--skip-teff: no monolingual runs, no TEff)" if args.skip_teff else ""),
           "seeds": " ".join(map(str, done)), "data": "text" if args.text else "synthetic",
           "n_layer": args.n_layer, "d_model": args.d_model, "n_head": args.n_head, "steps": args.steps,
           "train_docs": args.train_docs, "vocab": args.vocab, "richness": args.richness, "clones": args.clones,
           "skewed_l1": args.skewed_l1, "params": params,
           "tokens": tokens, "compute": float(6 * params * tokens), **summary, "code": code_version(ignore=[args.csv])}
    append_row(args.csv, row)
    print(json.dumps(row, indent=1, default=str))
    return row


if __name__ == "__main__":
    main()
