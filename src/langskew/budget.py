"""Compute budgets measured from a run, and the training tokens of the configured grid.

Every rule writes a Snakemake benchmark file, ``{outdir}/benchmarks/<rule>/<job>.tsv``
(columns ``s``, ``h:m:s``, ``max_rss`` in MB, ...; ``<job>`` holds the job's wildcards as in
its log path). :func:`read_benchmarks` collects them after any run, complete or not;
:func:`gpu_hours` sums the GPU-hours per rule (seconds x GPUs of the job / 3600) and
:func:`runtime_requests` gives, per resources key of the config, the runtime and memory a job
should request: the longest job (pretraining: per 1x of the token budget) and the largest
peak memory times a margin, rounded up. :func:`pretrain_tokens` and :func:`perplexity_work`
give the training tokens and the perplexity work (held-out tokens scored, forward token
positions) of the configured Study B grid. ``langskew budget`` prints the four tables
(docs/cluster.md, "Compute budget").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from langskew.errors import LangskewError

# GPU rules and where each finds its GPUs, runtime and memory in the config.
STUDY_A_GPU = {"study_a_finetune": None, "study_a_probe": "probe", "study_a_probe_base": "probe",
               "study_a_shap_values": "shap"}
STUDY_B_GPU = {"study_b_pretrain": None, "study_b_perplexity": "perplexity", "study_b_alignment": "alignment"}
STUDY_A_CPU = {"study_a_dataset", "study_a_subsets", "study_a_tiny_model"}
STUDY_B_CPU = {"study_b_corpus", "study_b_parallel_corpus", "study_b_tokenizer", "study_b_tokens"}


@dataclass
class Record:
    """One job's benchmark: its rule, its wildcards part of the path, wall seconds, peak RSS (MB)."""

    rule: str
    job: str
    seconds: float
    max_rss_mb: float | None
    gpus_recorded: int | None = None  # from `--benchmark-extended` files (resources column)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None  # "NA", "-": not measured
    return None if math.isnan(value) else value


def read_benchmark(path: Path, rule: str, job: str) -> Record:
    """One benchmark TSV; several rows (``repeat()``) give the longest time and largest memory."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines or not lines[0].startswith("s\t"):
        raise LangskewError(f"{path}: not a Snakemake benchmark file (header 's\\th:m:s\\tmax_rss...')")
    header = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    if not rows:
        raise LangskewError(f"{path}: no measurement")
    seconds = max(_number(r[0]) or 0.0 for r in rows)
    rss = [v for v in (_number(r[header.index("max_rss")]) for r in rows) if v is not None]
    gpus = None
    if header[-2:] == ["resources", "input_size_mb"]:  # extended format: params may hold tabs, so count from the end
        found = re.search(r"'gpu': (\d+)", rows[0][-2])
        gpus = int(found[1]) if found else 0
    return Record(rule, job, seconds, max(rss) if rss else None, gpus)


def read_benchmarks(folder: str | Path) -> list[Record]:
    """Every ``<rule>/<job>.tsv`` below ``folder`` (``{outdir}/benchmarks``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LangskewError(f"{folder}: no benchmark folder (run the workflow first; every rule writes "
                            f"{{outdir}}/benchmarks/<rule>/<job>.tsv)")
    records = []
    for path in sorted(folder.rglob("*.tsv")):
        rel = path.relative_to(folder)
        if len(rel.parts) < 2:
            continue
        records.append(read_benchmark(path, rel.parts[0], str(Path(*rel.parts[1:]).with_suffix(""))))
    if not records:
        raise LangskewError(f"{folder}: no benchmark files yet")
    return records


@dataclass
class Placement:
    """Where a job's resources live in the config: the key of its runtime / mem_mb, its GPUs,
    and the factor its runtime is requested at (pretraining: the run's scale)."""

    key: str | None
    gpus: int
    scale: float = 1.0


def placement(record: Record, cfg: dict, runs: dict[str, dict]) -> Placement:
    """The config key, GPUs and scale of a job (``runs``: Study B's expanded grid)."""
    rule, parts = record.rule, Path(record.job).parts
    if rule in STUDY_A_GPU:
        model = parts[1] if len(parts) > 1 else "?"
        res = ((cfg.get("models") or {}).get(model) or {}).get("resources") or {}
        stage = STUDY_A_GPU[rule]
        key = f"models.{model}.resources" + (f".{stage}" if stage else "")
        gpus = int(res.get("gpu", 1))
    elif rule in STUDY_B_GPU:
        run = runs.get(record.job) or {}
        size = run.get("size", "?")
        res = ((((cfg.get("study_b") or {}).get("sizes") or {}).get(size) or {}).get("resources") or {})
        stage = STUDY_B_GPU[rule]
        key = f"study_b.sizes.{size}.resources" + (f".{stage}" if stage else "")
        gpus = int(res.get("gpu", 1))
        if rule == "study_b_pretrain":  # runtime is requested per 1x: scale x runtime (rules/study_b.smk)
            return Placement(key, gpus if record.gpus_recorded is None else record.gpus_recorded,
                             max(float(run.get("scale", 1.0)), 0.1))
    elif rule in STUDY_A_CPU:
        key, gpus = "study_a.resources.cpu", 0
    elif rule in STUDY_B_CPU:
        key, gpus = "study_b.resources.cpu", 0
    else:
        key, gpus = None, 0  # a local rule: runs on the submitting machine
    return Placement(key, gpus if record.gpus_recorded is None else record.gpus_recorded)


def gpu_hours(records: list[Record], cfg: dict, runs: dict[str, dict]) -> list[dict]:
    """Per GPU rule: jobs measured, GPU-hours (sum of seconds x GPUs / 3600), longest job (s)."""
    table: dict[str, dict] = {}
    for r in records:
        gpus = placement(r, cfg, runs).gpus
        if gpus <= 0:
            continue
        row = table.setdefault(r.rule, {"rule": r.rule, "jobs": 0, "gpu_hours": 0.0, "longest_s": 0.0})
        row["jobs"] += 1
        row["gpu_hours"] += r.seconds * gpus / 3600
        row["longest_s"] = max(row["longest_s"], r.seconds)
    return sorted(table.values(), key=lambda row: row["rule"])


def round_up(value: float, step: int) -> int:
    """``value`` rounded up to a multiple of ``step`` (at least one step); 100.00000000000001
    (66.67 min x 1.5) counts as 100."""
    return int(max(1, math.ceil(round(value / step, 9))) * step)


def runtime_requests(records: list[Record], cfg: dict, runs: dict[str, dict], margin: float = 1.5,
                     minutes_step: int = 10, mem_step_mb: int = 1000) -> list[dict]:
    """Per config resources key: the jobs measured, the longest (per 1x for pretraining) and the
    runtime to request, ceil(longest x margin) rounded up to ``minutes_step`` minutes; the
    largest peak memory and the mem_mb to request (x margin, rounded up to ``mem_step_mb``)."""
    if margin < 1:
        raise LangskewError(f"margin {margin} is below 1: the requests would be shorter than the jobs")
    table: dict[str, dict] = {}
    for r in records:
        where = placement(r, cfg, runs)
        if where.key is None:
            continue
        row = table.setdefault(where.key, {"key": where.key, "rules": set(), "jobs": 0, "longest_min": 0.0,
                                           "peak_rss_mb": None})
        row["rules"].add(r.rule)
        row["jobs"] += 1
        row["longest_min"] = max(row["longest_min"], r.seconds / 60 / where.scale)
        if r.max_rss_mb is not None:
            row["peak_rss_mb"] = max(row["peak_rss_mb"] or 0.0, r.max_rss_mb)
    out = []
    for key in sorted(table):
        row = table[key]
        row["rules"] = ", ".join(sorted(row["rules"]))
        row["runtime"] = round_up(row["longest_min"] * margin, minutes_step)
        row["mem_mb"] = None if row["peak_rss_mb"] is None else round_up(row["peak_rss_mb"] * margin, mem_step_mb)
        out.append(row)
    return out


def pretrain_tokens(runs: dict[str, dict]) -> list[dict]:
    """Training tokens of the configured grid per model size: runs, steps and tokens (steps x
    batch x context of each run, :func:`langskew.study_b.grid.expand_runs`)."""
    table: dict[str, dict] = {}
    for run in runs.values():
        row = table.setdefault(run["size"], {"size": run["size"], "runs": 0, "steps": 0, "tokens": 0})
        row["runs"] += 1
        row["steps"] += int(run["steps"])
        row["tokens"] += int(run["tokens"])
    return [table[s] for s in table]


#: Held-out tokens of the paper configuration's corpora (whole split), estimated before they are
#: tokenised: 1% of Project Gutenberg English (about 6.3B tokens) and of the ~20,200 French-PD-Books
#: books read (about 1.77B tokens); docs/studies.md, "Corpus size and repeated data".
PAPER_HELDOUT_TOKENS = {"en": 63_000_000, "fr": 17_700_000}


def heldout_tokens(sb_cfg: dict, language: str, outdir: str | Path | None = None) -> tuple[int | None, str]:
    """Held-out tokens one perplexity evaluation of ``language`` scores, and where the number comes
    from: ``study_b.eval.max_tokens`` when set (a spread of that many), else the whole split,
    counted in ``{outdir}/study_b/tokens/<language>/meta.json`` once tokenised, else estimated
    (:data:`PAPER_HELDOUT_TOKENS`), else None."""
    import json

    cap = (sb_cfg.get("eval") or {}).get("max_tokens")
    if cap is not None:
        return int(cap), "max_tokens"
    meta = Path(outdir or "results") / "study_b" / "tokens" / language / "meta.json"
    if meta.is_file():
        return int(json.loads(meta.read_text())["n_tokens"]["test"]), "whole split, counted"
    if language in PAPER_HELDOUT_TOKENS:
        return PAPER_HELDOUT_TOKENS[language], "whole split, estimated"
    return None, "whole split, not yet tokenised"


def perplexity_work(runs: dict[str, dict], sb_cfg: dict, outdir: str | Path | None = None) -> list[dict]:
    """Perplexity work of the configured grid per model size: runs, language evaluations, held-out
    tokens scored and forward token positions (scored x window / stride: every window scores its
    last ``stride`` tokens). A language whose held-out size is unknown leaves the sums None."""
    ev = sb_cfg.get("eval") or {}
    factor = int(ev.get("window", 512)) / int(ev.get("stride", 128))
    table: dict[str, dict] = {}
    for run in runs.values():
        row = table.setdefault(run["size"], {"size": run["size"], "runs": 0, "evaluations": 0, "scored": 0,
                                             "positions": 0, "source": set()})
        bases = run["base_languages"]
        langs = list(bases) if run["kind"] == "real" else [bases[0]] * int(run.get("n_languages") or 1)
        row["runs"] += 1
        for lang in langs:
            n, source = heldout_tokens(sb_cfg, lang, outdir)
            row["evaluations"] += 1
            row["source"].add(f"{lang}: {source}")
            row["scored"] = None if n is None or row["scored"] is None else row["scored"] + n
            row["positions"] = None if row["scored"] is None else int(row["scored"] * factor)
    for row in table.values():
        row["source"] = "; ".join(sorted(row["source"]))
    return list(table.values())


def _md(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.2f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    head = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell(row[k]) for k, _ in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def report(records: list[Record] | None, cfg: dict, runs: dict[str, dict], margin: float = 1.5) -> str:
    """The Markdown printed by ``langskew budget``."""
    parts = []
    if records is not None:
        hours = gpu_hours(records, cfg, runs)
        total = sum(row["gpu_hours"] for row in hours)
        parts += ["## GPU-hours per rule (measured)", "",
                  _md(hours, [("rule", "rule"), ("jobs", "jobs measured"), ("gpu_hours", "GPU-hours"),
                              ("longest_s", "longest job (s)")]),
                  "", f"Total: {total:,.2f} GPU-hours over {sum(r['jobs'] for r in hours)} GPU jobs.", "",
                  f"## Resources to request (longest job and peak memory x {margin:g}, rounded up)", "",
                  _md(runtime_requests(records, cfg, runs, margin),
                      [("key", "config key"), ("rules", "rules"), ("jobs", "jobs"),
                       ("longest_min", "longest (min; pretraining per 1x)"), ("runtime", "runtime"),
                       ("peak_rss_mb", "peak RSS (MB)"), ("mem_mb", "mem_mb")]), ""]
    if runs:
        parts += ["## Pretraining tokens of the configured grid", "",
                  _md(pretrain_tokens(runs), [("size", "size"), ("runs", "runs"), ("steps", "steps"),
                                              ("tokens", "training tokens")]), ""]
        sb = cfg.get("study_b") or {}
        parts += ["## Perplexity work of the configured grid", "",
                  _md(perplexity_work(runs, sb, cfg.get("outdir")),
                      [("size", "size"), ("runs", "runs"), ("evaluations", "language evaluations"),
                       ("scored", "held-out tokens scored"), ("positions", "forward token positions"),
                       ("source", "held-out size")]), ""]
    return "\n".join(parts)
