# Study B: config slices, paths, resources and targets (helpers of rules/study_b.smk).
import math

from langskew.study_b import grid as sbgrid

SB = config.get("study_b") or {}
SB_ON = bool(SB.get("enabled", False))
SB_RUNS = sbgrid.expand_runs(SB) if SB_ON else {}
SB_FITS = sbgrid.fit_plan(SB_RUNS)
SB_DIR = f"{OUT}/study_b"
REP_B = f"{OUT}/report/study_b"
SB_TABLES = [
    "perplexity",
    "token_efficiency",
    "scaling_fit",
    "representation_alignment",
    "gradient_alignment",
    "en_fr",
]
SB_FIGURES = ["perplexity_vs_p", "alignment_layers"]
SB_CPUS = int((SB.get("resources") or {}).get("cpu", {}).get("cpus", 1))


wildcard_constraints:
    lang="[A-Za-z0-9_]+",
    run="[A-Za-z0-9_.-]+",
    size="[A-Za-z0-9_]+",


# --- helpers -------------------------------------------------------------------------------
def sb_run(w):
    return SB_RUNS[w.run]


def sb_resources(key, default=None, scaled=False):
    """A SLURM resource of a size's GPU jobs; runtime grows with the attempt (and the run's scale)."""

    def get(wildcards, attempt=1):
        value = sbgrid.size_resources(SB, sb_run(wildcards)["size"]).get(key, default)
        if key == "runtime":
            scale = max(float(sb_run(wildcards)["scale"]), 0.1) if scaled else 1.0
            return int(math.ceil(int(value) * scale * attempt))
        return "" if value is None else value

    return get


def sb_threads(wildcards):
    return int(
        sbgrid.size_resources(SB, sb_run(wildcards)["size"]).get("cpus_per_gpu", 1)
    )


def sb_cpu(key):
    """A resource of Study B's CPU jobs (study_b.resources.cpu); runtime grows with the attempt."""
    value = (SB.get("resources") or {}).get("cpu", {}).get(key)

    def get(wildcards, attempt=1):
        return int(value) * attempt if key == "runtime" else value

    return get


def sb_token_metas(w):
    return [f"{SB_DIR}/tokens/{lang}/meta.json" for lang in sb_run(w)["base_languages"]]


def sb_parallel_input(w):
    """Parallel sentences: an input of the alignment of real-language runs, and of clone runs
    unless study_b.eval.clone_parallel is "heldout"."""
    kind = sb_run(w)["kind"]
    uses = kind == "real" or (
        kind == "clone" and SB["eval"].get("clone_parallel", "parallel") == "parallel"
    )
    return {"parallel": f"{SB_DIR}/tokens/parallel.npz"} if uses else {}


def sb_eval(*keys):
    """A params function: the named keys of study_b.eval."""
    return lambda w: {k: SB["eval"][k] for k in keys}


def sb_ppl(rid):
    return f"{SB_DIR}/runs/{rid}/perplexity.json"


def sb_metrics(rid):
    return f"{SB_DIR}/runs/{rid}/metrics.json"


def sb_bilingual():
    return [rid for rid, r in SB_RUNS.items() if r["kind"] != "mono"]


def study_b_targets():
    if not SB_ON:
        return []
    return (
        [f"{REP_B}/{t}.csv" for t in SB_TABLES]
        + [f"{REP_B}/{t}.md" for t in SB_TABLES]
        + [f"{REP_B}/{f}.png" for f in SB_FIGURES]
    )


def _sb_report_category(name):
    return dict(
        caption=f"../report/study_b_{name}.rst",
        category="Study B",
        subcategory="Figures" if name in SB_FIGURES else "Tables",
    )
