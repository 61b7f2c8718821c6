# Study B: names, paths, per-job config slices and targets (helpers of rules/study_b.smk).
from langskew.study_b import grid as sbgrid
from langskew.study_b.synthetic_lang import parallel_richness

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
SB_PARALLEL = SB.get("parallel") or {}
SB_CPU = (SB.get("resources") or {}).get("cpu", {})  # resources of the CPU rules
SB_CPUS = int(SB_CPU.get("cpus", 1))  # threads of the tokenizer rules
SB_SEED = SB.get("seed", 0)


# --- names and paths -----------------------------------------------------------------------
def sb_run(w):
    """The job's run of the grid (langskew.study_b.grid.expand_runs)."""
    return SB_RUNS[w.run]


def sb_run_dir(rid="{run}"):
    """The folder of one pretraining run; without a run id it is the wildcard pattern."""
    return f"{SB_DIR}/runs/{rid}"


def sb_bilingual():
    return [rid for rid, r in SB_RUNS.items() if r["kind"] != "mono"]


# --- resources of a run's GPU jobs ---------------------------------------------------------
def size_settings(w):
    """The resources of the run's model size (study_b.sizes.<size>.resources)."""
    return sbgrid.size_resources(SB, sb_run(w)["size"])


def run_scale(w):
    """The run's token budget relative to 1x (pretraining time grows with it)."""
    return max(float(sb_run(w)["scale"]), 0.1)


def num_gpus(w):
    return max(int(size_settings(w).get("gpu", 1)), 1)


# --- inputs and params ---------------------------------------------------------------------
def local_corpus_files(w):
    """The text files of a local base-language corpus."""
    spec = SB["languages"][w.lang]
    local = spec.get("local") or {}
    if spec["source"] != "local":
        return []
    return local_files(local.get("train")) + local_files(local.get("test"))


def local_parallel_files(w):
    """The aligned line files or the table of local parallel sentences."""
    local = SB_PARALLEL.get("local") or {}
    if SB_PARALLEL.get("source") != "local":
        return []
    return local_files(list((local.get("files") or {}).values()) or local.get("path"))


def parallel_spec(w):
    """The parallel source's settings; synthetic pairs get the richness of the languages'
    synthetic corpora unless the spec sets one (the lexicon they share)."""
    spec = {k: v for k, v in SB_PARALLEL.items() if k != "languages"}
    if spec.get("source", "synthetic") == "synthetic":
        richness = parallel_richness(SB_PARALLEL, SB.get("languages") or {})
        spec["synthetic"] = {**(spec.get("synthetic") or {}), "richness": richness}
    return spec


def parallel_tokenizers(w):
    return [f"{SB_DIR}/tokenizer/{lang}.model" for lang in SB_PARALLEL["languages"]]


def token_metas(w):
    """The token streams of the run's base languages."""
    return [f"{SB_DIR}/tokens/{lang}/meta.json" for lang in sb_run(w)["base_languages"]]


def size_model(w):
    return sbgrid.model_params(SB, sb_run(w)["size"])


def size_train(w):
    return sbgrid.train_params(SB, sb_run(w)["size"])


def alignment_inputs(w):
    """Model and token streams; parallel sentences for real-language runs, and for clone runs
    unless study_b.eval.clone_parallel is "heldout"."""
    kind = sb_run(w)["kind"]
    uses = kind == "real" or (
        kind == "clone" and SB["eval"].get("clone_parallel", "parallel") == "parallel"
    )
    parallel = {"parallel": f"{SB_DIR}/tokens/parallel.npz"} if uses else {}
    return {"model": f"{sb_run_dir(w.run)}/model", "tokens": token_metas(w), **parallel}


def eval_params(*keys):
    """Params of an evaluation rule, `params: **eval_params(...)`: the named keys of study_b.eval."""
    return {k: SB["eval"][k] for k in keys}


def perplexity_file(rid):
    return f"{sb_run_dir(rid)}/perplexity.json"


def fit_mono(w):
    return [perplexity_file(r) for r in SB_FITS[w.size]["mono"]]


def fit_targets(w):
    return [perplexity_file(r) for r in SB_FITS[w.size]["targets"]]


def fit_metrics(w):
    return [f"{sb_run_dir(r)}/metrics.json" for r in SB_FITS[w.size]["targets"]]


def fit_mono_metrics(w):
    return [f"{sb_run_dir(r)}/metrics.json" for r in SB_FITS[w.size]["mono"]]


def fit_mono_runs(w):
    return [SB_RUNS[r] for r in SB_FITS[w.size]["mono"]]


def fit_target_runs(w):
    return [SB_RUNS[r] for r in SB_FITS[w.size]["targets"]]


def fit_train(w):
    return sbgrid.train_params(SB, w.size)


def fit_settings(w):
    return {
        "n_boot": SB["eval"].get("fit_bootstrap", 1000),
        "seed": SB_SEED,
        "max_rel_residual": SB["eval"].get("fit_max_rel_error", 0.05),
        "method": SB["eval"].get("fit_method", "authors"),
        "teff_tokens": SB["eval"].get("teff_tokens", "expected"),
        "points": SB["eval"].get("fit_points", "all"),
    }


# --- targets -------------------------------------------------------------------------------
def study_b_targets():
    if not SB_ON:
        return []
    return (
        [f"{REP_B}/{t}.csv" for t in SB_TABLES]
        + [f"{REP_B}/{t}.md" for t in SB_TABLES]
        + [f"{REP_B}/{f}.png" for f in SB_FIGURES]
    )


def sb_report_category(name):
    """report() arguments of a Study B table or figure."""
    return dict(
        caption=f"../report/study_b_{name}.rst",
        category="Study B",
        subcategory="Figures" if name in SB_FIGURES else "Tables",
    )
