"""Study B report: our numbers beside the published ones (docs/studies.md), as tables and figures.

Tables (CSV + Markdown under ``{outdir}/report/study_b/``):
``perplexity`` (Table 1 analogue), ``token_efficiency`` (MLTE, TEff, MLPE with bootstrap
intervals and the fit's reliability; both with the passes each run made over the language's
training stream, ``data_passes``, and a warning under the title where one exceeds 1), ``scaling_fit`` (monolingual points, fitted values,
residuals, parameters at a bound),
``representation_alignment`` (cosine per layer), ``gradient_alignment`` (mean cosine),
``en_fr`` (EN/FR perplexity by p(FR) and vocabulary). Figures: perplexity against p(L2)
with the MLPE line, and representation alignment per layer.

Published values are matched to our runs by (kind, size, scale, mix, vocab mode,
language), where ``mix`` is the run spec's mix id (``clone2-p0.10``, ``sched-0.1_0.9``,
``clone10-uniform``, ``p0.50`` for EN/FR, ``f0.1`` for monolingual fractions).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError
from langskew.io import read_json, save_figure, write_table
from langskew.workflow import Job

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Published figures (Schafer et al. 2024; listed in docs/studies.md)
# (kind, size, scale, mix, vocab_mode, language) -> value
# ---------------------------------------------------------------------------------------
_PPL_ROWS: list[tuple[str, str, float, str, str | None, dict[str, float]]] = [
    ("mono", "small", 0.1, "f0.1", None, {"en": 48.36}),
    ("mono", "small", 0.5, "f0.5", None, {"en": 25.31}),
    ("mono", "small", 1.0, "f1", None, {"en": 21.93}),
    ("mono", "small", 0.1, "f0.1", None, {"fr": 34.06}),
    ("mono", "small", 0.5, "f0.5", None, {"fr": 18.41}),
    ("mono", "small", 1.0, "f1", None, {"fr": 16.02}),
    ("clone", "small", 1.0, "clone2-p0.50", None, {"L1": 26.13, "L2": 26.14}),
    ("clone", "small", 1.0, "clone2-p0.10", None, {"L1": 22.46, "L2": 32.81}),
    ("clone", "small", 1.0, "clone10-uniform", None, {"L1": 35.54, "L2": 35.74}),
    ("clone", "small", 1.0, "clone10-l1p0.50", None, {"L1": 24.57, "L2": 33.41}),
    ("clone", "small", 2.0, "clone2-p0.10", None, {"L1": 20.06, "L2": 23.88}),
    ("clone", "small", 2.0, "clone2-p0.50", None, {"L1": 23.35, "L2": 23.36}),
    ("clone", "small", 3.0, "clone2-p0.10", None, {"L1": 19.03, "L2": 22.27}),
    ("clone", "small", 3.0, "clone2-p0.50", None, {"L1": 22.17, "L2": 22.18}),
    ("clone", "small", 1.0, "sched-0.1_0.9", None, {"L1": 26.53, "L2": 24.44}),
    ("clone", "small", 2.0, "sched-0.1_0.9", None, {"L1": 22.78, "L2": 20.42}),
    ("clone", "small", 3.0, "sched-0.1_0.9", None, {"L1": 21.50, "L2": 19.26}),
    ("clone", "medium", 1.0, "clone2-p0.50", None, {"L1": 22.95, "L2": 22.95}),
    ("clone", "medium", 1.0, "clone2-p0.10", None, {"L1": 19.45, "L2": 22.3}),
    ("real", "small", 1.0, "p0.10", "disjoint", {"en": 22.47, "fr": 31.89}),
    ("real", "small", 1.0, "p0.10", "anchored", {"en": 22.48, "fr": 29.04}),
    ("real", "small", 1.0, "p0.50", "disjoint", {"en": 26.44, "fr": 19.39}),
    ("real", "small", 1.0, "p0.50", "anchored", {"en": 25.97, "fr": 19.01}),
    ("real", "small", 1.0, "p0.90", "disjoint", {"en": 43.51, "fr": 16.45}),
    ("real", "small", 1.0, "p0.90", "anchored", {"en": 39.51, "fr": 16.48}),
]
_TEFF_ROWS = [
    ("clone", "small", 1.0, "clone2-p0.50", None, {"L1": 0.887, "L2": 0.885}),
    ("clone", "small", 1.0, "clone2-p0.10", None, {"L1": 0.9996, "L2": 2.076}),
    ("clone", "small", 1.0, "clone10-uniform", None, {"L1": 1.689, "L2": 1.666}),
    ("clone", "small", 1.0, "clone10-l1p0.50", None, {"L1": 1.153, "L2": 3.556}),
]
_REPRESENTATION = {
    ("clone", "small", 1.0, "clone2-p0.50", None):
        [.55, .79, .83, .88, .85, .83, .78, .66, .56, .46, .25, -.21],
    ("clone", "small", 1.0, "clone2-p0.10", None):
        [.86, .93, .96, .96, .96, .96, .96, .95, .94, .90, .67, .11],
}
_GRADIENT = {
    ("clone", "small", 1.0, "clone2-p0.50", None): 0.0719,
    ("clone", "small", 1.0, "clone2-p0.10", None): 0.534,
}


def _table(rows: list) -> dict[tuple, float]:
    return {(*key, lang): value for *key, values in rows for lang, value in values.items()}


PUBLISHED = {
    "ppl": _table(_PPL_ROWS),
    "teff": _table(_TEFF_ROWS),
    "representation": {(*k, layer + 1): v for k, vs in _REPRESENTATION.items() for layer, v in enumerate(vs)},
    "gradient": dict(_GRADIENT),
}


def run_key(run: dict) -> tuple:
    """(kind, size, scale, mix, vocab_mode): how published figures are matched to a run."""
    return (run["kind"], run["size"], float(run["scale"]), run.get("mix"), run.get("vocab_mode"))


def published(metric: str, run: dict, *extra: Any) -> float:
    """Published value of ``metric`` (ppl, teff, representation, gradient) for a run, or NaN."""
    if metric not in PUBLISHED:
        raise LangskewError(f"unknown published metric {metric!r}; expected one of {', '.join(PUBLISHED)}")
    if run.get("data_fraction", 1.0) not in (None, 1.0):
        return math.nan  # the paper's fractions are of steps, not of the stream
    return PUBLISHED[metric].get((*run_key(run), *extra), math.nan)


def _p_l2(run: dict) -> float | None:
    """Constant probability of the second language, or None for schedules and K > 2."""
    schedule = run["schedule"]
    if len(schedule) != 1 or len(schedule[0]) != 2:
        return None
    return float(schedule[0][1])


def _run_cols(run: dict) -> dict:
    return {"run": run["id"], "label": run.get("label"), "size": run["size"], "scale": float(run["scale"])}


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------
def perplexity_table(runs: Sequence[dict], ppl: dict[str, dict[str, float]],
                     passes: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """One row per (run, language): our perplexity and the published one where known, and the
    passes the run made over the language's training stream (``data_passes``; NaN where unknown)."""
    rows = []
    for run in runs:
        run_passes = (passes or {}).get(run["id"]) or {}
        for lang, value in ppl[run["id"]].items():
            rows.append({**_run_cols(run), "kind": run["kind"], "block": run.get("block"), "mix": run.get("mix"),
                         "vocab_mode": run.get("vocab_mode") or "", "p_l2": _p_l2(run), "language": lang,
                         "ppl": float(value), "published_ppl": published("ppl", run, lang),
                         "data_passes": float(run_passes.get(lang, math.nan))})
    return pd.DataFrame(rows, columns=["run", "label", "size", "scale", "kind", "block", "mix", "vocab_mode", "p_l2",
                                       "language", "ppl", "published_ppl", "data_passes"])


def repetition_warning(table: pd.DataFrame) -> str:
    """A sentence naming the (run, language) rows whose training stream was read more than once, or ''."""
    if "data_passes" not in table or table.empty:
        return ""
    over = table[pd.to_numeric(table["data_passes"], errors="coerce") > 1]
    if over.empty:
        return ""
    items = ", ".join(f"{r['run']}/{r['language']} {r['data_passes']:.2f}" for r in over.to_dict("records"))
    return (f"Warning: {len(over)} of {len(table)} rows trained on repeated data (passes over the training "
            f"stream above 1; a pass starts a new shuffle of the same text): {items}.")


TEFF_COLUMNS = ["run", "label", "size", "scale", "language", "ppl", "tokens_seen", "data_passes", "budget_tokens",
                "MLTE", "TEff", "TEff_all_points", "TEff_paper_points",
                "TEff_lo", "TEff_hi", "MLPE", "MLPE_lo", "MLPE_hi", "published_TEff", "fit_reliable", "fit_at_bound",
                "fit_max_rel_error", "c", "a", "b"]


def token_efficiency_table(runs: Sequence[dict], fits: pd.DataFrame) -> pd.DataFrame:
    """The fits' MLTE / TEff / MLPE per (run, language), their bootstrap intervals and the fit's
    reliability, with the published TEff where known."""
    by_id = {r["id"]: r for r in runs}
    if fits.empty:
        return pd.DataFrame(columns=TEFF_COLUMNS)
    unknown = sorted(set(fits["run"]) - set(by_id))
    if unknown:
        raise LangskewError(f"token efficiency: fit rows name unknown run {unknown[0]!r}")
    rows = []
    for rec in fits.to_dict("records"):
        run = by_id[rec["run"]]
        row = {**_run_cols(run), **{k: rec.get(k, math.nan) for k in TEFF_COLUMNS if k not in ("run", "label", "size",
                                                                                               "scale")}}
        row["published_TEff"] = published("teff", run, rec["language"])
        at_bound = rec.get("fit_at_bound")
        row["fit_at_bound"] = "" if at_bound is None or (isinstance(at_bound, float) and math.isnan(at_bound)) \
            else str(at_bound)
        rows.append(row)
    return pd.DataFrame(rows, columns=TEFF_COLUMNS)


def scaling_fit_table(points: pd.DataFrame) -> pd.DataFrame:
    """The monolingual points of every fit with fitted values, residuals and parameters at a bound."""
    cols = ["size", "language", "run", "x", "data_passes", "ppl", "fitted_ppl", "ppl_rel_error", "inv_ppl",
            "fitted_inv_ppl", "residual", "c", "a", "b", "fit_at_bound"]
    if points.empty:
        return pd.DataFrame(columns=cols)
    out = points.reindex(columns=cols).copy()
    out["fit_at_bound"] = out["fit_at_bound"].fillna("").astype(str)
    return out


def representation_table(runs: Sequence[dict], tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Cosine per layer per run with the published per-layer cosine (small 50/50, 90/10)."""
    rows = []
    for run in runs:
        if run["id"] not in tables:
            continue
        for rec in tables[run["id"]].to_dict("records"):
            layer = int(rec["layer"])
            rows.append({**_run_cols(run), "layer": layer, "cosine": rec["cosine_mean"],
                         "cosine_sd": rec.get("cosine_sd"), "n": rec.get("n"),
                         "published_cosine": published("representation", run, layer)})
    return pd.DataFrame(rows, columns=["run", "label", "size", "scale", "layer", "cosine", "cosine_sd", "n",
                                       "published_cosine"])


def gradient_table(runs: Sequence[dict], tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean gradient cosine per run with the published one.

    ``mean_cosine``: over the transformer blocks' tensors (the ``mean`` row; the paper's
    measure). ``mean_cosine_all_tensors``: over every tensor (the ``mean_all_tensors`` row).
    """
    rows = []
    for run in runs:
        if run["id"] not in tables:
            continue
        t = tables[run["id"]].set_index("parameter")["cosine_mean"]
        if "mean" not in t.index:
            raise LangskewError(f"gradient alignment of {run['id']!r}: no 'mean' row (blocks' tensors)")
        rows.append({**_run_cols(run), "mean_cosine": float(t["mean"]),
                     "mean_cosine_all_tensors": float(t.get("mean_all_tensors", math.nan)),
                     "n": int(tables[run["id"]]["n"].iloc[0]) if "n" in tables[run["id"]] else None,
                     "published_mean_cosine": published("gradient", run)})
    return pd.DataFrame(rows, columns=["run", "label", "size", "scale", "mean_cosine", "mean_cosine_all_tensors", "n",
                                       "published_mean_cosine"])


def real_pair_table(runs: Sequence[dict], ppl: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Real-language runs: p of the second language, vocabulary mode, both perplexities and published ones."""
    rows = []
    for run in runs:
        if run["kind"] != "real" or _p_l2(run) is None:
            continue
        first, second = run["base_languages"]
        values = ppl[run["id"]]
        rows.append({**_run_cols(run), "pair": f"{first}+{second}", "p_second": _p_l2(run),
                     "vocab_mode": run.get("vocab_mode"), "ppl_first": values.get(first), "ppl_second": values.get(second),
                     "published_ppl_first": published("ppl", run, first),
                     "published_ppl_second": published("ppl", run, second)})
    df = pd.DataFrame(rows, columns=["run", "label", "size", "scale", "pair", "p_second", "vocab_mode", "ppl_first",
                                     "ppl_second", "published_ppl_first", "published_ppl_second"])
    pairs = df["pair"].unique().tolist()
    if len(pairs) == 1:  # the usual single pair: name the columns by language (p_fr, ppl_en, ...)
        first, second = pairs[0].split("+")
        df = df.rename(columns={"p_second": f"p_{second}", "ppl_first": f"ppl_{first}", "ppl_second": f"ppl_{second}",
                                "published_ppl_first": f"published_ppl_{first}",
                                "published_ppl_second": f"published_ppl_{second}"})
    return df.sort_values([c for c in df.columns if c.startswith("p_")][:1] + ["vocab_mode"]
                          if len(df) else ["run"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------
def perplexity_figure(ppl_table: pd.DataFrame, teff: pd.DataFrame):
    """Perplexity of L1 and L2 against p(L2) per (size, scale) for two cloned languages, with MLPE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = ppl_table[(ppl_table["kind"] == "clone") & ppl_table["p_l2"].notna()
                     & ppl_table["language"].isin(["L1", "L2"])]
    groups = sorted(data.groupby(["size", "scale"]).groups) if len(data) else []
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(4.5 * max(len(groups), 1), 3.6), squeeze=False)
    if not groups:
        axes[0, 0].text(0.5, 0.5, "no two-language clone runs", ha="center", va="center")
    mlpe = teff.set_index(["run", "language"])["MLPE"] if len(teff) else pd.Series(dtype=float)
    for ax, (size, scale) in zip(axes[0], groups):
        sub = data[(data["size"] == size) & (data["scale"] == scale)].sort_values("p_l2")
        for lang, marker in (("L1", "o"), ("L2", "s")):
            s = sub[sub["language"] == lang]
            line, = ax.plot(s["p_l2"], s["ppl"], marker=marker, label=f"{lang}")
            m = [mlpe.get((r, lang), np.nan) for r in s["run"]]
            if np.isfinite(np.asarray(m, dtype=float)).any():
                ax.plot(s["p_l2"], m, linestyle="--", color=line.get_color(), label=f"{lang} MLPE")
            pub = s["published_ppl"].astype(float)
            if pub.notna().any():
                ax.plot(s["p_l2"], pub, linestyle="none", marker="x", color=line.get_color(), label=f"{lang} published")
        ax.set_title(f"{size} {scale:g}x")
        ax.set_xlabel("p(L2)")
        ax.set_ylabel("perplexity")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def alignment_figure(rep: pd.DataFrame):
    """Representation cosine per layer for every run (published values dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if rep.empty:
        ax.text(0.5, 0.5, "no alignment results", ha="center", va="center")
    for run, sub in rep.groupby("run", sort=False):
        line, = ax.plot(sub["layer"], sub["cosine"], marker="o", label=run)
        if sub["published_cosine"].notna().any():
            ax.plot(sub["layer"], sub["published_cosine"], linestyle=":", color=line.get_color(),
                    label=f"{run} (published)")
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine of parallel hidden states")
    if not rep.empty:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------
# Job
# ---------------------------------------------------------------------------------------
TITLES = {
    "perplexity": "Study B: held-out perplexity per run and language (published where known)",
    "token_efficiency": "Study B: monolingual token equivalence (MLTE), token efficiency (TEff) and MLPE, "
                        "with 95% bootstrap intervals over the monolingual points and the fit's reliability; "
                        "TEff with all monolingual points and with the paper table's (0.1x, 0.5x, 1x) side by side",
    "scaling_fit": "Study B: monolingual scaling fits 1/PPL = c - a x^-b, residuals and parameters at a bound",
    "representation_alignment": "Study B: representation alignment (cosine of parallel hidden states) per layer",
    "gradient_alignment": "Study B: gradient alignment (mean cosine over the transformer blocks' tensors, Q/K/V "
                          "separate; and over all tensors)",
    "en_fr": "Study B: real languages, perplexity by share of the second language and vocabulary",
}


def build_tables(runs: Sequence[dict], ppl: dict[str, dict[str, float]], fits: pd.DataFrame,
                 representation: dict[str, pd.DataFrame], gradient: dict[str, pd.DataFrame],
                 fit_points: pd.DataFrame | None = None,
                 passes: dict[str, dict[str, float]] | None = None) -> dict[str, pd.DataFrame]:
    """All report tables from the runs' results (pure; the job reads the files)."""
    missing = [r["id"] for r in runs if r["id"] not in ppl]
    if missing:
        raise LangskewError(f"report: no perplexities for run {missing[0]!r}")
    return {"perplexity": perplexity_table(runs, ppl, passes),
            "token_efficiency": token_efficiency_table(runs, fits),
            "scaling_fit": scaling_fit_table(fit_points if fit_points is not None else pd.DataFrame()),
            "representation_alignment": representation_table(runs, representation),
            "gradient_alignment": gradient_table(runs, gradient),
            "en_fr": real_pair_table(runs, ppl)}


def _read_csvs(paths: Sequence[str] | None) -> pd.DataFrame:
    """CSV files one after the other in one frame (an empty frame for none)."""
    paths = list(paths or [])
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True) if paths else pd.DataFrame()


def report_job(job: Job, *, runs: list[dict], bilingual: list[str]) -> None:
    """Rule ``study_b_report``: every table (CSV + Markdown) and both figures.

    ``runs``: the run specs of input.perplexity (same order); ``bilingual``: the run ids of
    input.representation and input.gradient (same order). An optional input.metrics (each run's
    metrics.json, same order as ``runs``) gives the passes over the training streams; tables
    with a pass above 1 carry a warning under their title (and in the log).
    """
    runs = [dict(r) for r in runs]
    bilingual = list(bilingual)
    if len(job.input.perplexity) != len(runs):
        raise LangskewError(f"report: {len(job.input.perplexity)} perplexity files for {len(runs)} runs")
    ppl = {r["id"]: read_json(p) for r, p in zip(runs, job.input.perplexity)}
    fits = _read_csvs(job.input.fits)
    representation = {rid: pd.read_csv(p) for rid, p in zip(bilingual, job.input.representation)}
    gradient = {rid: pd.read_csv(p) for rid, p in zip(bilingual, job.input.gradient)}
    points = _read_csvs(getattr(job.input, "fit_points", None))
    metrics = list(getattr(job.input, "metrics", None) or [])
    if metrics and len(metrics) != len(runs):
        raise LangskewError(f"report: {len(metrics)} metrics files for {len(runs)} runs")
    passes = {r["id"]: read_json(p).get("data_passes") or {} for r, p in zip(runs, metrics)}
    tables = build_tables(runs, ppl, fits, representation, gradient, points, passes)
    for name, df in tables.items():
        warning = repetition_warning(df) if name in ("perplexity", "token_efficiency") else ""
        if warning:
            logger.warning("%s: %s", name, warning)
        write_table(df, job.output[name], job.output[f"{name}_md"], TITLES[name] + (f"\n\n{warning}" if warning else ""))
    save_figure(perplexity_figure(tables["perplexity"], tables["token_efficiency"]), job.output.perplexity_vs_p)
    save_figure(alignment_figure(tables["representation_alignment"]), job.output.alignment_layers)
    logger.info("Study B report: %s", {k: len(v) for k, v in tables.items()})
