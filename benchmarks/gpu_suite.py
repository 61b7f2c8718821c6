"""Every GPU benchmark in one run, at the paper's sizes, with the compute budget they imply.

Runs, in one process and in this order, each part under its own time limit (a part that
fails or runs out of time is recorded as such and the others still run):

========================  ===============================================================  ========
part                      what (paper sizes on a GPU)                                       limit s
========================  ===============================================================  ========
``pretrain``              small GPT (12 x 768, vocab 32,768, context 512, batch 32):         150
                          authors'-style step vs ours with ``torch.compile``
                          (5 warm-up steps, compilation included; 20 timed)
``pretrain_eager``        ours without compilation (3 warm-up, 20 timed)                      40
``finetune``              mBERT-sized classifier, batch 16: pad-to-512 fp16 + GradScaler      60
                          vs ours (bf16) with random batches and dynamic padding, and
                          with length-grouped batches (1 warm-up, 30 timed steps each)
``shap``                  mBERT-sized classifier, 8 examples, max_evals 500: the studies'    120
                          route (pipeline padded to 512) vs ours (fp32, and bf16 autocast)
``eval``                  probe (4,096 pairs, mBERT-sized), perplexity (500k tokens of the    60
                          small GPT), alignment (50 pairs of 128-512 tokens)
``loaders``               Study B batches (128 x 512, clone mixture over a memmap stream)     20
                          and Study A batches (DataLoader + collate, 2 workers) per second
                          against the measured steps per second
========================  ===============================================================  ========

The limits add up to 450 s; with the interpreter start and the CUDA context (~15 s) the
whole suite stays under 8 minutes on one H100 even if every part used its full limit
(expected: about 4 minutes; the compiled pretraining step's compilation is ~1 minute of
it). ``gpu_suite.sh`` wraps it in ``timeout 480``; every part's result is written to the
JSON as soon as it is measured, so a run cut short keeps the parts it finished.

From the measured rates and the grid of ``--config`` (the paper's ``config.yaml``) it
prints the GPU-hours per rule family and a suggested ``runtime`` (minutes, 1.5x the
estimate) for the config's ``resources`` entries. The estimates assume what the section
"budget" of the markdown states (e.g. mini and medium GPTs at the small GPT's model
FLOPs utilisation; published split sizes of XNLI and Amazon reviews where the config
leaves ``split_sizes`` null).

``--cpu`` (alias ``--tiny``) runs the same code on the CPU at tiny sizes in under a minute
(tests/test_gpu_suite.py runs it), so that the GPU run cannot fail on a typo.

    bash benchmarks/gpu_suite.sh                  # on the GPU machine: results/<date>_<device>.{json,md}
    python benchmarks/gpu_suite.py --cpu --out /tmp/suite
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import math
import re
import signal
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

import eval_throughput
import finetune_throughput
import pretrain_throughput
import shap_throughput
from common import machine_name

ROOT = Path(__file__).resolve().parents[1]
MARGIN = 1.5  # suggested runtime = MARGIN x the estimate

#: Published training/validation/test rows per language, used where the config leaves a split size null.
PUBLISHED_SPLITS = {"xnli": {"train": 392_702, "validation": 2_490, "test": 5_010},
                    "amazon": {"train": 200_000, "validation": 5_000, "test": 5_000}}


# ---------------------------------------------------------------------------------------
# The parts: (name, GPU limit s, CPU limit s, arguments per mode)
# ---------------------------------------------------------------------------------------
def part_arguments(tiny: bool, threads: int | None) -> dict[str, list[str]]:
    """Command lines of the benchmark scripts for each part (paper sizes, or tiny on the CPU)."""
    machine = ["--device", "cpu"] + (["--threads", str(threads)] if threads else []) if tiny else []
    if tiny:
        return {
            "pretrain": ["--tiny", "--steps", "2", "--warmup", "1", *machine],
            "pretrain_eager": ["--tiny", "--steps", "2", "--warmup", "1", "--steps-to-run", "ours",
                               "--compile-mode", "none", *machine],
            "finetune": ["--steps", "3", "--batch-size", "8", "--max-length", "64", "--median-length", "16",
                         "--hidden", "32", "--layers", "1", "--heads", "2", "--vocab", "500", *machine],
            "shap": ["--size", "tiny", "--examples", "2", "--max-evals", "30", "--max-length", "64",
                     "--median-words", "8", "--corpus-texts", "300", "--routes", "authors,ours", *machine],
            "eval": ["--tiny", "--sentences", "32", *machine],
        }
    return {
        "pretrain": ["--steps", "20", "--warmup", "5"],
        "pretrain_eager": ["--steps", "20", "--warmup", "3", "--steps-to-run", "ours", "--compile-mode", "none"],
        "finetune": ["--size", "mbert", "--steps", "30"],
        "shap": ["--size", "mbert", "--examples", "8", "--max-evals", "500", "--routes", "authors,ours"],
        "eval": [],
    }


#: Seconds per part: (GPU, CPU). On the CPU the limit only guards against a hang (a shared
#: machine may be several times slower than an idle one).
LIMITS = {"pretrain": (150, 300), "pretrain_eager": (40, 300), "finetune": (60, 300), "shap": (120, 300),
          "eval": (60, 300), "loaders": (20, 300)}


class PartTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    """Raise PartTimeout in the main thread after ``seconds`` (SIGALRM)."""
    def expire(signum, frame):
        raise PartTimeout(f"ran past its limit of {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(int(seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------------------
# Data loaders against the step
# ---------------------------------------------------------------------------------------
def _fake_stream(folder: Path, vocab: int, n_tokens: int) -> str:
    """A token stream of random ids (uint16) with its meta.json, as the tokens rule writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_tokens), ("test", n_tokens // 100 + 1024)):
        rng.integers(3, vocab, size=n).astype(np.uint16).tofile(folder / f"{split}.bin")
    meta = {"language": "en", "vocab_size": vocab, "dtype": "uint16", "eod_id": 2, "pad_id": 0,
            "n_tokens": {"train": n_tokens, "test": n_tokens // 100 + 1024}, "tokenizer": "none.model"}
    (folder / "meta.json").write_text(json.dumps(meta))
    return str(folder / "meta.json")


def loader_figures(tiny: bool, batch: int, context: int, n_batches: int, workers: int) -> dict[str, Any]:
    """Batches per second of Study B's mixture (the paper's full step: ``batch`` x ``context``,
    clone run, memmap stream) and of Study A's DataLoader (collate, ``workers`` workers)."""
    from langskew.study_a.finetune import collate, random_batches
    from langskew.study_b.languages import build_mixture

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        meta = _fake_stream(Path(tmp) / "en", 16384, max(4 * n_batches * batch * (context + 1), 1_000_000))
        run = {"id": "loader", "kind": "clone", "n_languages": 2, "schedule": [[0.9, 0.1]], "steps": 10_000,
               "base_languages": ["en"], "clone_fraction": 1.0}
        mixture = build_mixture(run, [meta], 0)
        mixture.batch(0, batch, context)  # warm-up: page cache, permutation
        start = time.perf_counter()
        for step in range(1, n_batches + 1):
            mixture.batch(step, batch, context)
        out["study_b_batches_per_s"] = n_batches / (time.perf_counter() - start)
    out["study_b_batch"] = f"{batch} x {context}"
    feats = finetune_throughput.synthetic_features(n_batches * 16 * 2, 64 if tiny else 512, 500 if tiny else 119547,
                                                   16 if tiny else 48, 0)
    loader = torch.utils.data.DataLoader(feats, batch_sampler=random_batches(len(feats), 16, 0, 0),
                                         collate_fn=partial(collate, pad_token_id=0), num_workers=workers)
    it = iter(loader)
    next(it)  # workers started
    start = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    out["study_a_batches_per_s"] = n_batches / (time.perf_counter() - start)
    out["study_a_batch"] = f"16 examples, dynamic padding, {workers} workers"
    del it, loader
    return out


# ---------------------------------------------------------------------------------------
# Running the parts
# ---------------------------------------------------------------------------------------
def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


#: The benchmark script of each part (the loaders' figures are this module's).
MAINS = {"pretrain": pretrain_throughput.main, "pretrain_eager": pretrain_throughput.main,
         "finetune": finetune_throughput.main, "shap": shap_throughput.main, "eval": eval_throughput.main}


def run_parts(tiny: bool, threads: int | None, device: torch.device, save: Callable[[dict], None],
              only: list[str] | None = None) -> dict[str, Any]:
    args = part_arguments(tiny, threads)
    parts: dict[str, Any] = {}
    for name in ["pretrain", "pretrain_eager", "finetune", "shap", "eval", "loaders"]:
        if only and name not in only:
            continue
        limit = LIMITS[name][1 if tiny else 0]
        print(f"\n=== {name} (limit {limit} s)", flush=True)
        start = time.perf_counter()
        try:
            with time_limit(limit):
                if name == "loaders":
                    result = loader_figures(tiny, 4 if tiny else 128, 128 if tiny else 512, 3 if tiny else 20, 2)
                else:
                    result = MAINS[name](args[name])
            parts[name] = {"ok": True, "seconds": time.perf_counter() - start,
                           "argv": args.get(name, []), "result": result}
        except (Exception, PartTimeout) as err:  # recorded; the other parts still run
            traceback.print_exc()
            parts[name] = {"ok": False, "seconds": time.perf_counter() - start, "argv": args.get(name, []),
                           "error": f"{type(err).__name__}: {err}"}
        _free(device)
        save(parts)
    return parts


def rates(parts: dict[str, Any]) -> dict[str, float]:
    """The figures the compute budget needs, from the parts that ran (missing ones are left out)."""
    out: dict[str, float] = {}

    def result(name):
        p = parts.get(name) or {}
        return p.get("result") if p.get("ok") else None

    if (r := result("pretrain")):
        for row in r["results"]:
            key = "pretrain_tokens_per_s" if row["step"] == "ours" else "pretrain_authors_tokens_per_s"
            out[key] = row["tokens_per_s"]
            if "mfu" in row:
                out[key.replace("tokens_per_s", "mfu")] = row["mfu"]
    if (r := result("pretrain_eager")):
        out["pretrain_eager_tokens_per_s"] = r["results"][0]["tokens_per_s"]
        out.setdefault("pretrain_tokens_per_s", out["pretrain_eager_tokens_per_s"])  # if compilation failed
    if (r := result("finetune")):
        for row in r["results"]:
            out[f"finetune_{row['mode']}_examples_per_s"] = row["examples_per_s"]
    if (r := result("shap")):
        ours = [row for row in r["results"] if row["route"].startswith("ours")]
        for row in r["results"]:
            key = re.sub(r"\W+", "_", row["route"]).strip("_")
            out[f"shap_{key}_examples_per_s"] = row["examples_per_s"]
        if ours:  # the precision the config's "auto" gives on this device, else fp32
            best = next((row for row in ours if row["route"] == "ours[auto]"), ours[0])
            out["shap_examples_per_s"] = best["examples_per_s"]
    if (r := result("eval")):
        for row in r:
            out[{"probe": "probe_sentences_per_s", "perplexity": "perplexity_tokens_per_s",
                 "alignment": "alignment_pairs_per_s"}[row["mode"]]] = row["figure"]
    if (r := result("loaders")):
        out["study_b_loader_batches_per_s"] = r["study_b_batches_per_s"]
        out["study_a_loader_batches_per_s"] = r["study_a_batches_per_s"]
    return out


# ---------------------------------------------------------------------------------------
# The compute budget
# ---------------------------------------------------------------------------------------
def gpt_flops_per_token(n_layer: int, d_model: int, vocab: int, context: int) -> float:
    """Training FLOPs per token of our GPT: 6 N + 12 L d T, N = 12 L d^2 (blocks) + d vocab (output layer)."""
    return 6.0 * (12 * n_layer * d_model ** 2 + d_model * vocab) + 12.0 * n_layer * d_model * context


def _split_rows(ds_name: str, ds: dict, split: str) -> int:
    size = (ds.get("split_sizes") or {}).get(split)
    if size is None:
        size = PUBLISHED_SPLITS.get(ds_name, {}).get(split)
    if size is None:
        raise ValueError(f"dataset {ds_name!r}: split_sizes.{split} is null and no published size is known")
    return int(size)


def _train_rows(ds_name: str, ds: dict, variant: str) -> int:
    """Training rows of one subset variant (balanced / imbalanced) over the dataset's languages."""
    from langskew.study_a.subsets import subset_sizes

    total = 0
    for lang in ds["languages"]:
        imbalanced, balanced = subset_sizes(ds["ratios"][lang], _split_rows(ds_name, ds, "train"),
                                            len(ds["labels"]), lang)
        total += sum(balanced if variant == "balanced" else imbalanced)
    return total


def compute_budget(measured: dict[str, float], cfg: dict) -> dict[str, Any]:
    """GPU-hours per rule family over the config's grid, and suggested runtimes (minutes, x MARGIN).

    Study B: each run's training tokens / the measured tokens/s of the small GPT, scaled for
    the other sizes by their training FLOPs per token (same utilisation assumed); perplexity:
    the held-out tokens of the run's languages (``eval.max_tokens``, or the whole split:
    :func:`langskew.budget.perplexity_work`) / scored tokens/s (same scaling); alignment:
    ``eval.n_parallel`` pairs / pairs/s. Study A: a fine-tuning job trains ``epochs`` x the
    train rows at the measured examples/s of the config's batching, validates
    1/``eval_every`` times per epoch and predicts the test sets (forward passes counted at a
    third of a training example); SHAP: ``n_examples`` (or the probe test set) / examples/s.
    """
    from langskew.study_b.grid import expand_runs

    out: dict[str, Any] = {"families": {}, "runtime_minutes": {}, "assumptions": []}
    fam, rt, notes = out["families"], out["runtime_minutes"], out["assumptions"]
    sb = cfg.get("study_b") or {}
    if sb.get("enabled", True) and "pretrain_tokens_per_s" in measured:
        runs = expand_runs(sb)
        context = int(sb["train"]["context"])
        vocab = 2 * int(sb["tokenizer"]["vocab_size"])
        ref = gpt_flops_per_token(12, 768, vocab, context)
        rate = {size: measured["pretrain_tokens_per_s"] * ref / gpt_flops_per_token(
            int(s["n_layer"]), int(s["d_model"]), vocab, context) for size, s in sb["sizes"].items()}
        notes.append("pretraining and perplexity of mini/medium: the small GPT's rate x its FLOPs per token "
                     "/ theirs (same utilisation); vocabulary 2 x the tokenizer's")
        hours: dict[str, float] = {}
        for run in runs.values():
            hours[run["size"]] = hours.get(run["size"], 0.0) + run["tokens"] / rate[run["size"]] / 3600
        fam["study_b_pretrain"] = {"jobs": len(runs), "gpu_hours": sum(hours.values()),
                                   "per_size_gpu_hours": hours}
        from langskew.study_b.grid import budget_tokens

        for size in sb["sizes"]:
            minutes = budget_tokens(sb, size) / rate[size] / 60
            rt[f"study_b.sizes.{size}.resources.runtime (1x)"] = math.ceil(MARGIN * minutes)
        ev = sb.get("eval") or {}
        if "perplexity_tokens_per_s" in measured:
            ppl = measured["perplexity_tokens_per_s"]
            from langskew.budget import perplexity_work

            work = {row["size"]: row for row in perplexity_work(runs, sb, cfg.get("outdir"))}
            # scored tokens per second of the small GPT, scaled by FLOPs for the other sizes
            h = sum((row["scored"] or 0) / (ppl * rate[size] / rate["small"]) / 3600 for size, row in work.items())
            fam["study_b_perplexity"] = {"jobs": len(runs), "gpu_hours": h,
                                         "held_out": "; ".join(row["source"] for row in work.values())}
        if "alignment_pairs_per_s" in measured:
            h = sum(int(ev.get("n_parallel") or 500) / (measured["alignment_pairs_per_s"] * rate[run["size"]]
                    / rate["small"]) / 3600 for run in runs.values())
            fam["study_b_alignment"] = {"jobs": len(runs), "gpu_hours": h}
    sa = cfg.get("study_a") or {}
    if sa.get("enabled", True) and sa.get("datasets"):
        ft = sa.get("finetune") or {}
        mode = "grouped" if ft.get("length_grouped") else "dynamic"
        jobs = [(d, m, c, s) for d in sa["datasets"] for m in sa["models"] for c in sa["conditions"]
                for s in sa["seeds"]]
        notes.append(f"fine-tuning at the measured {mode!r} examples/s of the mBERT-sized model (the config's "
                     f"length_grouped={bool(ft.get('length_grouped'))}); XLM-R assumed at the same rate")
        notes.append("split sizes the config leaves null: published sizes per language "
                     + ", ".join(f"{k} {v}" for k, v in PUBLISHED_SPLITS.items()))
        key = f"finetune_{mode}_examples_per_s"
        per_model: dict[str, float] = {}
        if key in measured:
            fine = 0.0
            for d, m, c, s in jobs:
                ds = cfg["datasets"][d]
                epochs = int((ds.get("finetune") or {}).get("epochs", ft.get("epochs", 1)))
                n_train = _train_rows(d, ds, sa["conditions"][c]["train"])
                n_langs = len(ds["languages"])
                n_val = _split_rows(d, ds, "validation") * n_langs
                n_test = _split_rows(d, ds, "test") * n_langs * len(ds.get("report_tests") or [1])
                forward = epochs / float(ft.get("eval_every") or 1.0) * n_val + n_test
                h = (epochs * n_train + forward / 3) / measured[key] / 3600
                fine += h
                per_model[m] = max(per_model.get(m, 0.0), h)
            fam["study_a_finetune"] = {"jobs": len(jobs), "gpu_hours": fine,
                                       "longest_job_hours": max(per_model.values())}
        if "shap_examples_per_s" in measured:
            shap_h, longest = 0.0, 0.0
            for d, m, c, s in jobs:
                ds = cfg["datasets"][d]
                n = (ds.get("shap") or {}).get("n_examples", (sa.get("shap") or {}).get("n_examples"))
                if n is None:
                    n = _split_rows(d, ds, "test") * len(ds["languages"])
                h = int(n) / measured["shap_examples_per_s"] / 3600
                shap_h, longest = shap_h + h, max(longest, h)
                per_model[m] = max(per_model.get(m, 0.0), h)
            fam["study_a_shap_values"] = {"jobs": len(jobs), "gpu_hours": shap_h, "longest_job_hours": longest}
            notes.append("SHAP at ours' examples/s on the suite's few synthetic texts (about 50 tokens, "
                         "config max_evals): few examples walk together there, long reviews cost more")
        if "probe_sentences_per_s" in measured:
            h = sum(_split_rows(d, cfg["datasets"][d], "test") * len(cfg["datasets"][d]["languages"])
                    / measured["probe_sentences_per_s"] / 3600 for d, *_ in jobs)
            fam["study_a_probe"] = {"jobs": len(jobs), "gpu_hours": h}
        for m, h in per_model.items():  # one runtime per model serves its fine-tuning, probe and SHAP jobs
            rt[f"models.{m}.resources.runtime"] = math.ceil(MARGIN * h * 60)
    out["total_gpu_hours"] = sum(f["gpu_hours"] for f in fam.values())
    return out


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------
def device_slug(device: torch.device, tiny: bool) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{torch.get_num_threads()}threads"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug + ("-tiny" if tiny else "")


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"
    return str(x)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# GPU suite, {report['date']}, {report['machine']}", "",
             f"torch {report['torch']}, device {report['device']}, "
             f"{'tiny (CPU smoke) sizes' if report['tiny'] else 'paper sizes'}, total {report['seconds']:.0f} s", ""]
    lines += ["## Parts", "", "| part | status | seconds | arguments |", "|---|---|---|---|"]
    for name, p in report["parts"].items():
        status = "ok" if p["ok"] else f"FAILED: {p['error']}"
        lines.append(f"| {name} | {status} | {p['seconds']:.1f} | `{' '.join(p['argv'])}` |")
    lines += ["", "## Rates", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in report["rates"].items()]
    lines += ["", "## Loaders against the step", "", "| study | loader batches/s | steps/s | headroom |",
              "|---|---|---|---|"]
    for study, h in report.get("loaders_vs_step", {}).items():
        lines.append(f"| {study} | {_fmt(h['loader_batches_per_s'])} | {_fmt(h['steps_per_s'])} "
                     f"| {h['headroom']:.2f}x |")
    b = report["budget"]
    lines += ["", "## Budget", "", "| rule family | jobs | GPU-hours |", "|---|---|---|"]
    lines += [f"| {k} | {v['jobs']} | {_fmt(v['gpu_hours'])} |" for k, v in b["families"].items()]
    lines += [f"| total | | {_fmt(b['total_gpu_hours'])} |", "",
              f"Suggested runtimes (minutes, {MARGIN}x the estimate):", "", "| config key | minutes |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in b["runtime_minutes"].items()]
    lines += ["", "Assumptions:", ""] + [f"- {a}" for a in b["assumptions"]]
    return "\n".join(lines) + "\n"


def loaders_vs_step(measured: dict[str, float], cfg: dict, tiny: bool) -> dict[str, dict[str, float]]:
    """Loader batches/s over the training steps/s they feed (headroom > 1: the loader keeps up)."""
    out = {}
    sb_batch, sb_context = (4, 128) if tiny else (int(cfg["study_b"]["train"]["batch_size"]),
                                                 int(cfg["study_b"]["train"]["context"]))
    if "study_b_loader_batches_per_s" in measured and "pretrain_tokens_per_s" in measured:
        steps = measured["pretrain_tokens_per_s"] / (sb_batch * sb_context)
        out["study_b"] = {"loader_batches_per_s": measured["study_b_loader_batches_per_s"], "steps_per_s": steps,
                          "headroom": measured["study_b_loader_batches_per_s"] / steps}
    mode = "grouped" if (cfg.get("study_a") or {}).get("finetune", {}).get("length_grouped") else "dynamic"
    key = f"finetune_{mode}_examples_per_s"  # the config's batching
    if "study_a_loader_batches_per_s" in measured and key in measured:
        steps = measured[key] / 16
        out["study_a"] = {"loader_batches_per_s": measured["study_a_loader_batches_per_s"], "steps_per_s": steps,
                          "headroom": measured["study_a_loader_batches_per_s"] / steps}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", "--tiny", dest="tiny", action="store_true",
                    help="tiny sizes on the CPU (smoke run of the same code, < 1 min)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder of the JSON and markdown")
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml", help="the grid the budget is computed for")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (--cpu)")
    ap.add_argument("--only", default=None, help="comma-separated parts to run (default: all)")
    args = ap.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("no GPU visible: run with --cpu for the tiny CPU smoke run")
    device = torch.device("cpu") if args.tiny else torch.device("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(args.config.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{dt.datetime.now(dt.timezone.utc).date().isoformat()}_{device_slug(device, args.tiny)}"
    report: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).date().isoformat(),
                              "machine": machine_name(device), "device": str(device), "torch": torch.__version__,
                              "tiny": args.tiny, "config": str(args.config)}
    start = time.perf_counter()

    def save(parts: dict) -> None:
        report["parts"], report["seconds"] = parts, time.perf_counter() - start
        report["rates"] = rates(parts)
        report["loaders_vs_step"] = loaders_vs_step(report["rates"], cfg, args.tiny)
        report["budget"] = compute_budget(report["rates"], cfg)
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        stem.with_suffix(".md").write_text(markdown(report))

    parts = run_parts(args.tiny, args.threads, device, save, args.only.split(",") if args.only else None)
    save(parts)
    print("\n" + markdown(report))
    print(f"written: {stem}.json, {stem}.md")
    if not all(p["ok"] for p in parts.values()):
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
