"""Study A report: accuracy, language reliance, LID probe, SHAP, class weight and subset count
tables + the accuracy figure, and the mitigation ranking (table and figure).

Every per-run file is stacked with the identifiers of its run (dataset, model, condition,
seed) taken from a parallel ``params`` list, then aggregated over seeds: ``*_mean``,
``*_sd`` (sample sd, ddof=1; empty with one seed) and ``n_seeds``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError
from langskew.io import save_figure, write_table
from langskew.paths import as_list
from langskew.workflow import Job

logger = logging.getLogger(__name__)

ALL = "all"


def stack_runs(paths: Sequence[str], ids: Sequence[Mapping[str, Any]], id_columns: Sequence[str]) -> pd.DataFrame:
    """Concatenate per-run CSVs, each prefixed with its identifier columns (in ``id_columns`` order)."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    ids = list(ids or [])
    if len(paths) != len(ids):
        raise LangskewError(f"report: {len(paths)} input files but {len(ids)} identifier entries")
    frames = []
    for path, ident in zip(paths, ids):
        missing = [c for c in id_columns if c not in ident]
        if missing:
            raise LangskewError(f"report: identifier {dict(ident)} of {path} lacks key {missing[0]!r}")
        df = pd.read_csv(path)
        for pos, col in enumerate(id_columns):
            df.insert(pos, col, ident[col])
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(id_columns))
    return pd.concat(frames, ignore_index=True)


def aggregate_seeds(df: pd.DataFrame, keys: Sequence[str], value: str | Mapping[str, str],
                    out: str | None = None) -> pd.DataFrame:
    """Mean, sd (ddof=1) and count per ``keys``: ``{out}_mean``, ``{out}_sd`` per value, then n_seeds.

    ``value`` is one column (named ``out`` in the result) or a mapping {column: out name}.
    """
    values = {value: out or value} if isinstance(value, str) else dict(value)
    stats = [f"{name}_{s}" for name in values.values() for s in ("mean", "sd")]
    if df.empty:
        return pd.DataFrame(columns=[*keys, *stats, "n_seeds"])
    missing = [c for c in [*keys, *values] if c not in df.columns]
    if missing:
        raise LangskewError(f"report: column {missing[0]!r} missing (have {list(df.columns)})")
    grouped = df.groupby(list(keys), sort=False, dropna=False)
    named = {f"{name}_{s}": (col, fn) for col, name in values.items() for s, fn in (("mean", "mean"), ("sd", "std"))}
    first = next(iter(values))
    return grouped.agg(**named, n_seeds=(first, "size")).reset_index()[[*keys, *stats, "n_seeds"]]


def with_overall(per_run: pd.DataFrame, run_keys: Sequence[str]) -> pd.DataFrame:
    """Add an n-weighted ``language == "all"`` row per run and test variant where one is missing."""
    keys = [*run_keys, "test_variant"]
    if per_run.empty:
        return per_run
    has_all = per_run.groupby(keys, dropna=False)["language"].transform(lambda s: (s == ALL).any())
    langs = per_run[~has_all]
    if langs.empty:
        return per_run
    weighted = langs.assign(correct=langs["accuracy"] * langs["n"])
    overall = weighted.groupby(keys, dropna=False)[["correct", "n"]].sum().reset_index()
    overall = overall.assign(language=ALL, accuracy=overall["correct"] / overall["n"]).drop(columns="correct")
    return pd.concat([per_run, overall[per_run.columns]], ignore_index=True)


def accuracy_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Accuracy over seeds: dataset, model, condition, test_variant, language, accuracy_mean/sd, n_seeds.

    ``per_run`` has one row per (dataset, model, condition, seed, test_variant, language)
    with columns ``n`` and ``accuracy``; an overall ``language == "all"`` row is derived
    (n-weighted) for runs that lack it.
    """
    runs = ["dataset", "model", "condition", "seed"]
    full = with_overall(per_run, runs)
    table = aggregate_seeds(full, ["dataset", "model", "condition", "test_variant", "language"], "accuracy", "accuracy")
    table["is_all"] = table["language"] != ALL  # overall row first within each block
    table = table.sort_values(["dataset", "model", "condition", "test_variant", "is_all", "language"], kind="stable")
    return table.drop(columns="is_all").reset_index(drop=True)


def lid_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """LID probe over seeds (of the per-run CV means): dataset, model, condition, layer, accuracy_mean/sd, n_seeds."""
    df = per_run.assign(layer=per_run["layer"].astype(str)) if "layer" in per_run.columns else per_run
    return aggregate_seeds(df, ["dataset", "model", "condition", "layer"], "accuracy_mean", "accuracy")


def shap_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Cumulative SHAP differences over seeds, per dataset/model/comparison/language/class/type."""
    keys = ["dataset", "model", "comparison", "language", "ratio_group", "class_index", "type"]
    if not per_run.empty:
        keys = [c for c in keys if c in per_run.columns]
    return aggregate_seeds(per_run, keys, "mean_diff", "mean_diff")


def informative_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Share of |SHAP| on informative tokens over seeds, per dataset/model/condition/language/class."""
    return aggregate_seeds(per_run, ["dataset", "model", "condition", "language", "class_index"],
                           {"share_informative": "share_informative",
                            "share_class_informative": "share_class_informative"})


def figure_panels(table: pd.DataFrame, test_variants: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """(dataset, test variant) of each panel of the accuracy figure.

    ``test_variants[dataset]`` is one variant or a list (the test sets the paper reports:
    XNLI balanced and imbalanced, Amazon the original test set); a dataset without an entry
    gets "balanced" if its runs have it, else "original". A requested variant that the runs
    do not have is an error naming it.
    """
    panels = []
    for dataset in dict.fromkeys(table["dataset"]):
        have = set(table.loc[table["dataset"] == dataset, "test_variant"])
        wanted = (test_variants or {}).get(dataset)
        if wanted is None:
            wanted = ["balanced" if "balanced" in have else "original"]
        for variant in [wanted] if isinstance(wanted, str) else list(wanted):
            if variant not in have:
                raise LangskewError(f"accuracy figure: dataset {dataset!r} has no test variant {variant!r} "
                                    f"(have {', '.join(sorted(have))})")
            panels.append((dataset, variant))
    return panels


def accuracy_figure(table: pd.DataFrame, test_variants: Mapping[str, Any] | None = None):
    """Bar chart: overall accuracy (mean +- sd over seeds) per model and condition, one panel per
    (dataset, test variant) of :func:`figure_panels`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = figure_panels(table, test_variants) or [("(none)", "")]
    fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(4.5 * len(panels), 3.4))
    for ax, (dataset, variant) in zip(axes[0], panels):
        sub = table[(table["dataset"] == dataset) & (table["language"] == ALL) & (table["test_variant"] == variant)]
        models = list(dict.fromkeys(sub["model"]))
        conditions = list(dict.fromkeys(sub["condition"]))
        width = 0.8 / max(1, len(conditions))
        for j, cond in enumerate(conditions):
            rows = sub[sub["condition"] == cond].set_index("model").reindex(models)
            ax.bar(np.arange(len(models)) + (j - (len(conditions) - 1) / 2) * width, rows["accuracy_mean"],
                   width, yerr=rows["accuracy_sd"].fillna(0.0), capsize=3, label=cond)
        ax.set_xticks(np.arange(len(models)), models)
        ax.set_title(f"{dataset} (test: {variant})", fontsize=10)
        ax.set_ylabel("accuracy")
        if conditions:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


RELIANCE_VALUES = ("accuracy", "tvd", "accuracy_over", "accuracy_under", "reliance_gap")


def reliance_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Language reliance over seeds: dataset, model, condition, language, then mean/sd of accuracy,
    tvd, accuracy_over, accuracy_under and reliance_gap, n_seeds (language "all" first per block)."""
    table = aggregate_seeds(per_run, ["dataset", "model", "condition", "language"],
                            {v: v for v in RELIANCE_VALUES})
    if table.empty:
        return table
    table["is_all"] = table["language"] != ALL
    table = table.sort_values(["dataset", "model", "condition", "is_all", "language"], kind="stable")
    return table.drop(columns="is_all").reset_index(drop=True)


def _concat_with_dataset(paths: Sequence[str], ids: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return stack_runs(paths, ids, ["dataset"])


def class_weights_table(paths: Sequence[str], ids: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per-dataset class_weights.csv files stacked with a leading ``dataset`` column."""
    return _concat_with_dataset(paths, ids)


def subset_counts_table(paths: Sequence[str], ids: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per-dataset counts.csv files stacked with a leading ``dataset`` column."""
    return _concat_with_dataset(paths, ids)


# -- mitigation ranking -------------------------------------------------------------------------
#: Per-run measures of the mitigation table; True where higher is better (the rank's direction).
MITIGATION_METRICS = {
    "accuracy": True, "macro_f1": True, "worst_group_accuracy": True, "worst_language_accuracy": True,
    "lid_accuracy": False, "reliance_gap": False, "tvd": False, "shap_neutral_abs_diff": False,
}
FIGURE_METRICS = ("accuracy", "macro_f1", "worst_group_accuracy")


def prediction_metrics(pred: pd.DataFrame, n_classes: int) -> pd.DataFrame:
    """Per test variant of one run's predictions: accuracy, macro-F1 (over all C classes), the
    lowest accuracy of a (language, class) group and of a language. Long: test_variant, metric, value."""
    from sklearn.metrics import f1_score

    for col in ("test_variant", "language", "label", "prediction"):
        if col not in pred.columns:
            raise LangskewError(f"predictions: column {col!r} missing")
    rows = []
    for variant, df in pred.groupby("test_variant", sort=False):
        correct = (df["label"] == df["prediction"]).astype(float)
        values = {
            "accuracy": correct.mean(),
            "macro_f1": f1_score(df["label"], df["prediction"], labels=list(range(n_classes)), average="macro",
                                 zero_division=0),
            "worst_group_accuracy": correct.groupby([df["language"], df["label"]]).mean().min(),
            "worst_language_accuracy": correct.groupby(df["language"]).mean().min(),
        }
        rows += [{"test_variant": variant, "metric": k, "value": float(v)} for k, v in values.items()]
    return pd.DataFrame(rows, columns=["test_variant", "metric", "value"])


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t interval mean -+ t_{(1+level)/2, n-1} sd / sqrt(n); NaN bounds with n < 2."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def paired_test(values: Mapping[Any, float], baseline: Mapping[Any, float]) -> tuple[float, float, float, int]:
    """(mean difference, t, two-sided p, pairs) of a paired t-test (scipy.stats.ttest_rel) over
    the seeds both have; t and p are NaN with fewer than 2 pairs or identical differences."""
    from scipy import stats

    seeds = [s for s in values if s in baseline and not (np.isnan(values[s]) or np.isnan(baseline[s]))]
    if not seeds:
        return math.nan, math.nan, math.nan, 0
    a = np.array([values[s] for s in seeds], dtype=float)
    b = np.array([baseline[s] for s in seeds], dtype=float)
    diff = float((a - b).mean())
    if len(seeds) < 2 or np.allclose(a - b, (a - b)[0]):
        return diff, math.nan, math.nan, len(seeds)
    res = stats.ttest_rel(a, b)
    return diff, float(res.statistic), float(res.pvalue), len(seeds)


MITIGATION_COLUMNS = ["dataset", "model", "metric", "test_variant", "rank", "condition", "mean", "ci_low", "ci_high",
                      "n_seeds", "diff_vs_baseline", "t", "p_value", "n_pairs"]


def mitigation_table(per_run: pd.DataFrame, baseline: str | None, level: float = 0.95) -> pd.DataFrame:
    """Conditions ranked per (dataset, model, metric, test variant), best first.

    ``per_run``: dataset, model, condition, seed, metric, test_variant ("" where none), value.
    Each condition gets the mean and t interval over seeds and, against ``baseline`` (seeds
    paired), the mean difference and a paired t-test. Rank 1 is the best mean in the metric's
    direction (:data:`MITIGATION_METRICS`).
    """
    if per_run.empty:
        return pd.DataFrame(columns=MITIGATION_COLUMNS)
    rows = []
    for (dataset, model, metric, variant), block in per_run.groupby(["dataset", "model", "metric", "test_variant"],
                                                                     sort=False):
        base = block[block["condition"] == baseline].set_index("seed")["value"].to_dict() if baseline else {}
        for cond, sub in block.groupby("condition", sort=False):
            mean, low, high = t_interval(sub["value"], level)
            values = sub.set_index("seed")["value"].to_dict()
            diff, t, p, n_pairs = paired_test(values, base) if base and cond != baseline else (
                math.nan, math.nan, math.nan, 0)
            rows.append({"dataset": dataset, "model": model, "metric": metric, "test_variant": variant,
                         "condition": cond, "mean": mean, "ci_low": low, "ci_high": high,
                         "n_seeds": int(sub["value"].notna().sum()), "diff_vs_baseline": diff, "t": t, "p_value": p,
                         "n_pairs": n_pairs})
    table = pd.DataFrame(rows)
    higher = table["metric"].map(MITIGATION_METRICS).fillna(True).astype(bool)
    score = table["mean"].where(higher, -table["mean"])
    table["rank"] = score.groupby([table["dataset"], table["model"], table["metric"], table["test_variant"]]).rank(
        ascending=False, method="min").astype("Int64")
    table = table.sort_values(["dataset", "model", "metric", "test_variant", "rank"], kind="stable")
    return table[MITIGATION_COLUMNS].reset_index(drop=True)


def collect_mitigation_runs(predictions: Sequence[str], run_ids: Sequence[Mapping[str, Any]],
                            n_classes: Mapping[str, int], lid: pd.DataFrame, reliance: pd.DataFrame,
                            shap: pd.DataFrame) -> pd.DataFrame:
    """One long frame of every per-run measure: from the predictions (accuracy, macro-F1, worst
    group / language accuracy per test variant), the LID probe (last layer), language reliance
    (the pooled row's gap and TVD) and the SHAP comparisons (mean |difference| on neutral tokens)."""
    keys = ["dataset", "model", "condition", "seed"]
    frames = []
    for path, ident in zip(as_list(predictions), run_ids):
        metrics = prediction_metrics(pd.read_parquet(path), int(n_classes[ident["dataset"]]))
        frames.append(metrics.assign(**{k: ident[k] for k in keys}))
    if not lid.empty and "layer" in lid.columns:
        last = lid[(lid["layer"].astype(str) == "last") & (lid["condition"] != "base")]
        frames.append(last[keys].assign(test_variant="", metric="lid_accuracy", value=last["accuracy_mean"]))
    if not reliance.empty:
        pooled = reliance[reliance["language"] == ALL]
        for metric in ("reliance_gap", "tvd"):
            frames.append(pooled[keys].assign(test_variant="balanced", metric=metric, value=pooled[metric]))
    if not shap.empty:
        neutral = shap[shap["type"] == "neutral"].assign(abs_diff=lambda d: d["mean_diff"].abs())
        per_run = neutral.groupby(["dataset", "model", "comparison", "seed"], as_index=False)["abs_diff"].mean()
        frames.append(per_run.rename(columns={"comparison": "condition", "abs_diff": "value"})
                      .assign(test_variant="", metric="shap_neutral_abs_diff"))
    cols = [*keys, "metric", "test_variant", "value"]
    frames = [f[cols] for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def mitigation_figure(table: pd.DataFrame, test_variants: Mapping[str, Any] | None = None):
    """One row per (dataset, model), one panel per metric of :data:`FIGURE_METRICS` on the dataset's
    first figure test variant: each condition's mean and 95% t interval, conditions ordered by
    worst-group accuracy (best on top); a filled marker where the paired test against the
    baseline has p < 0.05."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = list(dict.fromkeys(zip(table["dataset"], table["model"]))) or [("(none)", "")]
    fig, axes = plt.subplots(len(blocks), len(FIGURE_METRICS), squeeze=False,
                             figsize=(4.0 * len(FIGURE_METRICS), 0.5 + 0.35 * max(4, table["condition"].nunique())
                                      * len(blocks)))
    for r, (dataset, model) in enumerate(blocks):
        sub = table[(table["dataset"] == dataset) & (table["model"] == model)]
        wanted = (test_variants or {}).get(dataset)
        variant = (wanted if isinstance(wanted, str) else (list(wanted)[0] if wanted else None)) or (
            "balanced" if (sub["test_variant"] == "balanced").any() else "original")
        order = (sub[(sub["metric"] == "worst_group_accuracy") & (sub["test_variant"] == variant)]
                 .sort_values("mean")["condition"].tolist())
        for c, metric in enumerate(FIGURE_METRICS):
            ax = axes[r][c]
            rows = sub[(sub["metric"] == metric) & (sub["test_variant"] == variant)].set_index("condition")
            rows = rows.reindex([o for o in order if o in rows.index])
            y = np.arange(len(rows))
            err = np.vstack([(rows["mean"] - rows["ci_low"]).fillna(0), (rows["ci_high"] - rows["mean"]).fillna(0)])
            ax.errorbar(rows["mean"], y, xerr=err, fmt="none", ecolor="grey", capsize=3)
            significant = rows["p_value"] < 0.05
            ax.scatter(rows["mean"][~significant], y[~significant.to_numpy()], facecolors="white", edgecolors="C0")
            ax.scatter(rows["mean"][significant], y[significant.to_numpy()], color="C0")
            ax.set_yticks(y, rows.index.tolist() if c == 0 else [""] * len(rows))
            ax.set_title(f"{dataset} / {model}: {metric.replace('_', ' ')}\n(test: {variant})", fontsize=9)
    fig.tight_layout()
    return fig


def report_job(job: Job, *, accuracy_ids: Sequence[Mapping[str, Any]], lid_ids: Sequence[Mapping[str, Any]],
               shap_ids: Sequence[Mapping[str, Any]], dataset_ids: Sequence[Mapping[str, Any]],
               figure_test_variants: Mapping[str, Any], mitigation_baseline: str | None,
               n_classes: Mapping[str, int]) -> None:
    """Snakemake job: the Study A report.

    input lists: ``accuracy``, ``lid``, ``shap``, ``class_weights``, ``counts``,
    ``informative`` (shap_compare's informative CSVs), ``reliance`` (evaluate's reliance
    CSVs), with the parallel params lists ``accuracy_ids`` ({dataset, model, condition, seed};
    also the ids of ``reliance``), ``lid_ids`` (same; base-model runs have condition "base"
    and seed None), ``shap_ids`` ({dataset, model, seed}; also the ids of ``informative``) and
    ``dataset_ids`` ({dataset}; the ids of ``class_weights`` and ``counts``);
    ``figure_test_variants``: {dataset: test variant, list or None}, see :func:`figure_panels`.
    ``predictions`` (finetune's predictions, ids ``accuracy_ids``) feed the mitigation ranking
    against ``mitigation_baseline`` (a condition name or None); ``n_classes``: {dataset: C}.
    output: ``accuracy``, ``lid``, ``shap``, ``class_weights``, ``counts`` (CSV), the same
    names + ``_md`` (Markdown), optional ``informative`` (CSV, plus ``informative_md`` if
    given), optional ``reliance`` (+ ``reliance_md``) and ``accuracy_fig`` (PNG).
    """
    inputs, output = job.input, job.output

    def stacked(name: str, ids: Sequence[Mapping[str, Any]], id_columns: Sequence[str]) -> pd.DataFrame:
        return stack_runs(as_list(getattr(inputs, name, None)), ids, id_columns)

    run_columns = ["dataset", "model", "condition", "seed"]
    accuracy = accuracy_table(stacked("accuracy", accuracy_ids, run_columns))
    tables = {
        "accuracy": (accuracy, "Study A: test accuracy (mean and sd over seeds)"),
        "lid": (lid_table(stacked("lid", lid_ids, run_columns)), "Study A: language-identification probe accuracy"),
        "shap": (shap_table(stacked("shap", shap_ids, ["dataset", "model", "seed"])),
                 "Study A: cumulative SHAP difference vs the balanced model"),
        "class_weights": (class_weights_table(as_list(getattr(inputs, "class_weights", None)), dataset_ids),
                          "Study A: class weights"),
        "counts": (subset_counts_table(as_list(getattr(inputs, "counts", None)), dataset_ids),
                   "Study A: subset sizes"),
    }
    if getattr(output, "reliance", None) is not None:
        tables["reliance"] = (reliance_table(stacked("reliance", accuracy_ids, run_columns)),
                              "Study A: language reliance on the balanced test set (accuracy, TVD of predicted "
                              "vs true classes, accuracy on over- vs under-represented training classes)")
    if getattr(output, "informative", None) is not None:
        tables["informative"] = (informative_table(stacked("informative", shap_ids, ["dataset", "model", "seed"])),
                                 "Study A: share of |SHAP| on informative tokens (synthetic data)")
    for name, (table, title) in tables.items():
        write_table(table, getattr(output, name), getattr(output, f"{name}_md", None), title=title)
    fig = accuracy_figure(accuracy, figure_test_variants)
    save_figure(fig, output.accuracy_fig)
    if getattr(output, "mitigation", None) is not None:
        per_run = collect_mitigation_runs(
            as_list(getattr(inputs, "predictions", None)), accuracy_ids, n_classes,
            stacked("lid", lid_ids, run_columns), stacked("reliance", accuracy_ids, run_columns),
            stacked("shap", shap_ids, ["dataset", "model", "seed"]))
        ranking = mitigation_table(per_run, mitigation_baseline)
        write_table(ranking, output.mitigation, getattr(output, "mitigation_md", None),
                    title=f"Study A: conditions ranked per metric (mean and 95% t interval over seeds; paired t-test "
                          f"against {mitigation_baseline or 'no baseline'} over seeds)")
        save_figure(mitigation_figure(ranking, figure_test_variants), output.mitigation_fig)
