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
from langskew.io import read_json, save_figure, write_table
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
    """LID probe over seeds (of the per-run CV means): dataset, model, condition, layer, the representation
    read and the features the probe saw (where the probe files have them: the sweep's token means,
    standardised or raw), accuracy_mean/sd, feature_norm_mean/sd (the raw features' mean L2 norm), n_seeds."""
    df = per_run.assign(layer=per_run["layer"].astype(str)) if "layer" in per_run.columns else per_run
    described = [c for c in ("representation", "features") if c in df.columns]
    values = {"accuracy_mean": "accuracy", **({"feature_norm": "feature_norm"} if "feature_norm" in df.columns else {})}
    return aggregate_seeds(df, ["dataset", "model", "condition", "layer", *described], values)


RUN_METRICS_COLUMNS = ["dataset", "model", "condition", "seed", "model_selection", "adversary_accuracy",
                       "adversary_accuracy_final"]


def run_metrics_table(paths: Sequence[str], ids: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """From each run's metrics.json: the model-selection rule (``val_loss`` where the file names none)
    and, for a run with a language adversary, the adversary head's own language accuracy on its
    training rows in the validation interval of the kept weights (``adversary_accuracy``) and in
    the last one (``adversary_accuracy_final``); NaN without an adversary."""
    paths = as_list(paths)
    if len(paths) != len(ids):
        raise LangskewError(f"report: {len(paths)} metrics files but {len(ids)} identifier entries")
    rows = []
    for path, ident in zip(paths, ids):
        metrics = read_json(path)
        adversary = metrics.get("adversary_accuracy") or {}
        rows.append({**{k: ident[k] for k in RUN_METRICS_COLUMNS[:4]},
                     "model_selection": metrics.get("model_selection", "val_loss"),
                     "adversary_accuracy": float(adversary.get("at_best_step", math.nan)),
                     "adversary_accuracy_final": float(adversary.get("final", math.nan))})
    return pd.DataFrame(rows, columns=RUN_METRICS_COLUMNS)


def with_adversary(lid: pd.DataFrame, runs: pd.DataFrame | None) -> pd.DataFrame:
    """The LID table with the adversary head's language accuracy (mean and sd over seeds, kept weights'
    interval and last interval) beside the probe's last-layer row of each condition that has one."""
    if runs is None or lid.empty or runs["adversary_accuracy"].isna().all():
        return lid
    adv = aggregate_seeds(runs.dropna(subset=["adversary_accuracy"]), ["dataset", "model", "condition"],
                          {"adversary_accuracy": "adversary_accuracy",
                           "adversary_accuracy_final": "adversary_accuracy_final"}).drop(columns="n_seeds")
    merged = lid.merge(adv.assign(layer="last"), on=["dataset", "model", "condition", "layer"], how="left")
    return merged[[*[c for c in merged.columns if c != "n_seeds"], "n_seeds"]]


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
    """Bar chart: overall accuracy (mean +- sd over seeds, the bar clipped to [0, 1]) per model and
    condition, one panel per (dataset, test variant) of :func:`figure_panels`; a condition has one
    colour in every panel, named in one legend below the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = figure_panels(table, test_variants) or [("(none)", "")]
    overall = table[table["language"] == ALL]
    colours = {cond: f"C{i % 10}" for i, cond in enumerate(dict.fromkeys(overall["condition"]))}
    fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(4.5 * len(panels), 3.4), layout="constrained")
    handles: dict[str, Any] = {}
    for ax, (dataset, variant) in zip(axes[0], panels):
        sub = overall[(overall["dataset"] == dataset) & (overall["test_variant"] == variant)]
        models = list(dict.fromkeys(sub["model"]))
        conditions = list(dict.fromkeys(sub["condition"]))
        width = 0.8 / max(1, len(conditions))
        for j, cond in enumerate(conditions):
            rows = sub[sub["condition"] == cond].set_index("model").reindex(models)
            sd, mean = rows["accuracy_sd"].fillna(0.0), rows["accuracy_mean"]
            err = np.vstack([np.minimum(sd, mean), np.minimum(sd, 1 - mean)])  # mean -+ sd within [0, 1]
            bars = ax.bar(np.arange(len(models)) + (j - (len(conditions) - 1) / 2) * width, mean,
                          width, yerr=err, capsize=3, color=colours[cond], label=cond)
            handles.setdefault(cond, bars)
        ax.set_xticks(np.arange(len(models)), models)
        ax.set_title(f"{dataset} (test: {variant})", fontsize=10)
        ax.set_ylabel("accuracy")
    # one legend below the panels (the constrained layout shrinks them to make room), in as many
    # columns as the figure's width holds
    for ncol in range(len(handles), 0, -1):
        legend = fig.legend(list(handles.values()), list(handles), loc="outside lower center", fontsize=7,
                            frameon=False, ncol=ncol)
        fig.canvas.draw()
        if legend.get_window_extent().width <= fig.bbox.width or ncol == 1:
            break
        legend.remove()
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
    "lid_accuracy": False, "adversary_accuracy": False, "reliance_gap": False, "tvd": False,
    "shap_neutral_abs_diff": False,
}
FIGURE_METRICS = ("accuracy", "macro_f1", "worst_group_accuracy")


def _one_hot(index: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(index), k))
    out[np.arange(len(index)), index] = 1.0
    return out


def _weighted_macro_f1(W: np.ndarray, label: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 over all C classes per row of W (0 for a class never true nor predicted, as zero_division=0)."""
    true, pred = _one_hot(label, n_classes), _one_hot(predicted, n_classes)
    tp = W @ (true * pred)
    denominator = W @ true + W @ pred  # 2 tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return f1.mean(axis=1)


def _worst_cell(W: np.ndarray, correct: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Lowest accuracy over the cells drawn at least once, per row of W."""
    member = _one_hot(cell, int(cell.max()) + 1)
    n = W @ member
    acc = np.divide(W @ (member * correct[:, None]), n, out=np.full_like(n, np.nan), where=n > 0)
    return np.nanmin(acc, axis=1)


def per_language_f1_metric(language: str) -> str:
    """The metric name of one language's macro-F1 in the mitigation table."""
    return f"macro_f1[{language}]"


def weighted_prediction_metrics(weights: np.ndarray, pred: pd.DataFrame, n_classes: int) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1 (all C classes), worst (language, class) group and worst language accuracy, and
    each language's macro-F1, of ``pred`` (language, label, prediction) with row weights: one value per row
    of ``weights`` (replicates x test rows, how often each row is counted; a row of ones: the plain metrics)."""
    W = np.atleast_2d(np.asarray(weights, dtype=float))
    label = pred["label"].to_numpy(dtype=np.int64)
    predicted = pred["prediction"].to_numpy(dtype=np.int64)
    correct = (label == predicted).astype(float)
    languages, lang_index = np.unique(pred["language"].astype(str).to_numpy(), return_inverse=True)
    out = {"accuracy": (W @ correct) / W.sum(axis=1),
           "macro_f1": _weighted_macro_f1(W, label, predicted, n_classes),
           "worst_group_accuracy": _worst_cell(W, correct, lang_index * n_classes + label),
           "worst_language_accuracy": _worst_cell(W, correct, lang_index)}
    for i, language in enumerate(languages):
        rows = lang_index == i
        out[per_language_f1_metric(language)] = _weighted_macro_f1(W[:, rows], label[rows], predicted[rows],
                                                                   n_classes)
    return out


def prediction_metrics(pred: pd.DataFrame, n_classes: int) -> pd.DataFrame:
    """Per test variant of one run's predictions: accuracy, macro-F1 (over all C classes), the
    lowest accuracy of a (language, class) group and of a language, and each language's macro-F1
    (``macro_f1[<language>]``). Long: test_variant, metric, value."""
    for col in ("test_variant", "language", "label", "prediction"):
        if col not in pred.columns:
            raise LangskewError(f"predictions: column {col!r} missing")
    rows = []
    for variant, df in pred.groupby("test_variant", sort=False):
        values = weighted_prediction_metrics(np.ones(len(df)), df, n_classes)
        rows += [{"test_variant": variant, "metric": k, "value": float(v[0])} for k, v in values.items()]
    return pd.DataFrame(rows, columns=["test_variant", "metric", "value"])


#: Range of each bounded metric of the mitigation table (macro_f1[<language>] as macro_f1);
#: interval bounds are clipped to it.
METRIC_RANGES = {
    "accuracy": (0.0, 1.0), "macro_f1": (0.0, 1.0), "worst_group_accuracy": (0.0, 1.0),
    "worst_language_accuracy": (0.0, 1.0), "lid_accuracy": (0.0, 1.0), "adversary_accuracy": (0.0, 1.0),
    "tvd": (0.0, 1.0), "reliance_gap": (-1.0, 1.0), "shap_neutral_abs_diff": (0.0, math.inf),
}


def metric_range(metric: str) -> tuple[float, float]:
    """(low, high) a metric's values can take; unbounded for a metric not in :data:`METRIC_RANGES`."""
    base = "macro_f1" if metric.startswith("macro_f1[") else metric
    return METRIC_RANGES.get(base, (-math.inf, math.inf))


def t_interval(values: Sequence[float], level: float = 0.95,
               bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float, float]:
    """(mean, low, high): the t interval mean -+ t_{(1+level)/2, n-1} sd / sqrt(n), clipped to ``bounds``
    (the values' possible range); NaN bounds with n < 2."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, max(bounds[0], mean - half), min(bounds[1], mean + half)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of p-values (NaN entries are left out of the family and stay NaN):
    the i-th smallest of m becomes max_{j <= i} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    order = np.argsort(p[ok], kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[ok][order]))
    values = np.empty(m)
    values[order] = adjusted
    out[ok] = values
    return out


#: Resamples of the paired bootstrap over test rows, drawn in chunks of BOOT_CHUNK (memory).
N_BOOT = 1000
BOOT_CHUNK = 250


def resample_counts(n_rows: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot x n_rows: how often each row is drawn in each resample of n_rows rows with replacement."""
    draws = rng.integers(0, n_rows, size=(n_boot, n_rows))
    flat = (draws + n_rows * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_rows).reshape(n_boot, n_rows)


def _aligned(frames: Mapping[str, pd.DataFrame], where: str) -> dict[str, pd.DataFrame]:
    """The conditions' predictions of one seed and test variant in one row order (by id); the same rows required."""
    out = {c: df.sort_values("id", kind="stable").reset_index(drop=True) for c, df in frames.items()}
    first_condition, first = next(iter(out.items()))
    ids = first["id"].astype(str).to_numpy()
    for condition, df in out.items():
        if len(df) != len(first) or not np.array_equal(df["id"].astype(str).to_numpy(), ids):
            raise LangskewError(f"bootstrap: {where}: condition {condition!r} has other test rows than "
                                f"{first_condition!r}, so the two cannot be paired")
    return out


def _seed_replicates(frames: Mapping[str, pd.DataFrame], n_classes: int, n_boot: int,
                     rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """{condition: {metric: n_boot values}}, every condition measured on the same resampled rows."""
    n = len(next(iter(frames.values())))
    parts: dict[str, dict[str, list[np.ndarray]]] = {c: {} for c in frames}
    for start in range(0, n_boot, BOOT_CHUNK):
        counts = resample_counts(n, min(BOOT_CHUNK, n_boot - start), rng)
        for condition, df in frames.items():
            for metric, values in weighted_prediction_metrics(counts, df, n_classes).items():
                parts[condition].setdefault(metric, []).append(values)
    return {c: {m: np.concatenate(v) for m, v in metrics.items()} for c, metrics in parts.items()}


def bootstrap_replicates(predictions: Mapping[tuple, pd.DataFrame], n_classes: Mapping[str, int],
                         n_boot: int = N_BOOT, seed: int = 0) -> tuple[dict[tuple, dict[Any, np.ndarray]], dict]:
    """Paired bootstrap over test rows within each seed.

    ``predictions``: {(dataset, model, condition, seed): predictions frame}. Per (dataset, model,
    seed, test variant) the test rows are resampled n_boot times, the same resamples for every
    condition (paired). Returns ({(dataset, model, test_variant, condition, metric): {seed:
    values}}, {(dataset, model, test_variant): test rows per seed}).
    """
    rng = np.random.default_rng(seed)
    replicates: dict[tuple, dict[Any, np.ndarray]] = {}
    n_rows: dict[tuple, int] = {}
    runs = pd.DataFrame(list(predictions), columns=["dataset", "model", "condition", "seed"])
    for (dataset, model, run_seed), block in runs.groupby(["dataset", "model", "seed"], sort=False):
        frames = {c: predictions[(dataset, model, c, run_seed)] for c in block["condition"]}
        for variant in dict.fromkeys(v for df in frames.values() for v in df["test_variant"]):
            where = f"{dataset}/{model} seed {run_seed} test {variant!r}"
            aligned = _aligned({c: df[df["test_variant"] == variant] for c, df in frames.items()}, where)
            n_rows[(dataset, model, variant)] = len(next(iter(aligned.values())))
            for condition, metrics in _seed_replicates(aligned, int(n_classes[dataset]), n_boot, rng).items():
                for metric, values in metrics.items():
                    replicates.setdefault((dataset, model, variant, condition, metric), {})[run_seed] = values
    return replicates, n_rows


def bootstrap_difference(values: Mapping[Any, np.ndarray], baseline: Mapping[Any, np.ndarray] | None,
                         level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, two-sided p) of the condition minus the baseline, averaged over the seeds both have,
    from paired resamples: percentile interval, p = min(1, 2 min(#(d <= 0) + 1, #(d >= 0) + 1) / (B + 1))."""
    seeds = [s for s in values if baseline and s in baseline]
    if not seeds:
        return math.nan, math.nan, math.nan
    d = np.mean([values[s] - baseline[s] for s in seeds], axis=0)
    d = d[~np.isnan(d)]
    low, high = np.percentile(d, [50 * (1 - level), 50 * (1 + level)])
    tail = min(np.sum(d <= 0), np.sum(d >= 0)) + 1
    return float(low), float(high), float(min(1.0, 2 * tail / (len(d) + 1)))


BOOTSTRAP_COLUMNS = ["boot_ci_low", "boot_ci_high", "boot_diff_low", "boot_diff_high", "boot_p", "n_test_rows",
                     "n_boot"]


def bootstrap_table(predictions: Mapping[tuple, pd.DataFrame], n_classes: Mapping[str, int],
                    baseline: str | None, level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per (dataset, model, condition, metric, test variant): the percentile interval of the metric's
    mean over seeds under the paired bootstrap of :func:`bootstrap_replicates`, and the difference
    to ``baseline`` (:func:`bootstrap_difference`)."""
    replicates, n_rows = bootstrap_replicates(predictions, n_classes, n_boot, seed)
    rows = []
    for (dataset, model, variant, condition, metric), by_seed in replicates.items():
        pooled = np.mean(list(by_seed.values()), axis=0)
        low, high = np.nanpercentile(pooled, [50 * (1 - level), 50 * (1 + level)])
        base = replicates.get((dataset, model, variant, baseline, metric)) if condition != baseline else None
        diff_low, diff_high, p = bootstrap_difference(by_seed, base, level)
        rows.append({"dataset": dataset, "model": model, "condition": condition, "metric": metric,
                     "test_variant": variant, "boot_ci_low": float(low), "boot_ci_high": float(high),
                     "boot_diff_low": diff_low, "boot_diff_high": diff_high, "boot_p": p,
                     "n_test_rows": n_rows[(dataset, model, variant)], "n_boot": n_boot})
    return pd.DataFrame(rows, columns=["dataset", "model", "condition", "metric", "test_variant",
                                       *BOOTSTRAP_COLUMNS])


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


MITIGATION_COLUMNS = ["dataset", "model", "metric", "test_variant", "rank", "condition", "model_selection", "mean",
                      "n_seeds",
                      "t_ci_low", "t_ci_high", "diff_vs_baseline", "t", "p_value", "p_holm", "n_pairs",
                      "boot_ci_low", "boot_ci_high", "boot_diff_low", "boot_diff_high", "boot_p", "boot_p_holm",
                      "n_test_rows", "n_boot"]


def _seed_rows(per_run: pd.DataFrame, baseline: str | None, level: float) -> pd.DataFrame:
    """Mean, t interval (clipped to the metric's range) and paired t-test per condition, metric and test set."""
    rows = []
    for (dataset, model, metric, variant), block in per_run.groupby(["dataset", "model", "metric", "test_variant"],
                                                                     sort=False):
        base = block[block["condition"] == baseline].set_index("seed")["value"].to_dict() if baseline else {}
        for cond, sub in block.groupby("condition", sort=False):
            mean, low, high = t_interval(sub["value"], level, metric_range(metric))
            values = sub.set_index("seed")["value"].to_dict()
            diff, t, p, n_pairs = paired_test(values, base) if base and cond != baseline else (
                math.nan, math.nan, math.nan, 0)
            rows.append({"dataset": dataset, "model": model, "metric": metric, "test_variant": variant,
                         "condition": cond, "mean": mean, "t_ci_low": low, "t_ci_high": high,
                         "n_seeds": int(sub["value"].notna().sum()), "diff_vs_baseline": diff, "t": t, "p_value": p,
                         "n_pairs": n_pairs})
    return pd.DataFrame(rows)


def mitigation_table(per_run: pd.DataFrame, baseline: str | None, level: float = 0.95,
                     bootstrap: pd.DataFrame | None = None, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Conditions ranked per (dataset, model, metric, test variant), best first.

    ``per_run``: dataset, model, condition, seed, metric, test_variant ("" where none), value.
    Each condition gets the mean and t interval over seeds and, against ``baseline`` (seeds
    paired), the mean difference and a paired t-test; ``bootstrap`` (:func:`bootstrap_table`)
    adds the intervals and p-value over test rows. Both p-values are Holm-adjusted across the
    conditions of a (dataset, model, metric, test variant) block (``p_holm``, ``boot_p_holm``).
    Rank 1 is the best mean in the metric's direction (:data:`MITIGATION_METRICS`). ``runs``
    (:func:`run_metrics_table`) names each condition's model-selection rule.
    """
    if per_run.empty:
        return pd.DataFrame(columns=MITIGATION_COLUMNS)
    keys = ["dataset", "model", "metric", "test_variant"]
    table = _seed_rows(per_run, baseline, level)
    if bootstrap is not None and not bootstrap.empty:
        table = table.merge(bootstrap, on=[*keys, "condition"], how="left")
    if runs is not None and not runs.empty:
        rules = runs.groupby(["dataset", "model", "condition"], sort=False)["model_selection"].agg(
            lambda r: "/".join(dict.fromkeys(r)))
        table = table.merge(rules.reset_index(), on=["dataset", "model", "condition"], how="left")
    table = table.reindex(columns=[c for c in MITIGATION_COLUMNS if c not in ("rank", "p_holm", "boot_p_holm")])
    blocks = [table[k] for k in keys]
    table["p_holm"] = table.groupby(blocks, sort=False)["p_value"].transform(holm)
    table["boot_p_holm"] = table.groupby(blocks, sort=False)["boot_p"].transform(holm)
    higher = table["metric"].map(MITIGATION_METRICS).fillna(True).astype(bool)
    score = table["mean"].where(higher, -table["mean"])
    table["rank"] = score.groupby(blocks).rank(ascending=False, method="min").astype("Int64")
    table = table.sort_values([*keys, "rank"], kind="stable")
    return table[MITIGATION_COLUMNS].reset_index(drop=True)


def read_predictions(paths: Sequence[str], run_ids: Sequence[Mapping[str, Any]]) -> dict[tuple, pd.DataFrame]:
    """{(dataset, model, condition, seed): the run's predictions}."""
    paths = as_list(paths)
    if len(paths) != len(run_ids):
        raise LangskewError(f"report: {len(paths)} prediction files but {len(run_ids)} identifier entries")
    return {(i["dataset"], i["model"], i["condition"], i["seed"]): pd.read_parquet(p) for p, i in zip(paths, run_ids)}


#: The post-hoc baseline: its condition name (after the baseline's) and tau (Menon et al. 2021's default).
POSTHOC_SUFFIX, POSTHOC_TAU = "_posthoc_logit_adjustment", 1.0


def posthoc_predictions(predictions: Mapping[tuple, pd.DataFrame], baseline: str | None, counts: pd.DataFrame,
                        tau: float = POSTHOC_TAU) -> dict[tuple, pd.DataFrame]:
    """Post-hoc per-language logit adjustment of the baseline's runs, from their stored probabilities
    (:func:`langskew.baselines.posthoc_logit_adjustment`; no training): one more condition,
    ``<baseline>_posthoc_logit_adjustment``, per run of ``baseline``. The priors pi(y | language)
    are counted on the imbalanced training subset the baseline trained on (``counts``: the
    stacked counts.csv, rows split "train", variant "imbalanced"). Nothing without a baseline."""
    from langskew.baselines import posthoc_logit_adjustment

    out: dict[tuple, pd.DataFrame] = {}
    if not baseline or counts.empty:
        return out
    train = counts[(counts["split"] == "train") & (counts["variant"] == "imbalanced")]
    for (dataset, model, condition, seed), pred in predictions.items():
        if condition != baseline:
            continue
        cells = train[train["dataset"] == dataset]
        if cells.empty:
            raise LangskewError(f"posthoc logit adjustment: no imbalanced training counts of dataset {dataset!r}")
        prob_columns = sorted((c for c in pred.columns if c.startswith("prob_")), key=lambda c: int(c[5:]))
        adjusted = posthoc_logit_adjustment(
            pred[prob_columns].to_numpy(), pred["language"].astype(str).tolist(),
            np.repeat(cells["label"].to_numpy(), cells["n"].to_numpy()),
            np.repeat(cells["language"].astype(str).to_numpy(), cells["n"].to_numpy()), tau)
        out[(dataset, model, f"{baseline}{POSTHOC_SUFFIX}", seed)] = pred.assign(prediction=adjusted.astype("int64"))
    return out


def collect_mitigation_runs(predictions: Mapping[tuple, pd.DataFrame], n_classes: Mapping[str, int],
                            lid: pd.DataFrame, reliance: pd.DataFrame, shap: pd.DataFrame,
                            runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One long frame of every per-run measure: from the predictions (:func:`prediction_metrics` per
    test variant), the LID probe (last layer), the language adversary's own accuracy (``runs``,
    :func:`run_metrics_table`), language reliance (the pooled row's gap and TVD) and the SHAP
    comparisons (mean |difference| on neutral tokens)."""
    keys = ["dataset", "model", "condition", "seed"]
    frames = []
    for ident, pred in predictions.items():
        metrics = prediction_metrics(pred, int(n_classes[ident[0]]))
        frames.append(metrics.assign(**dict(zip(keys, ident))))
    if runs is not None and not runs.empty:
        adv = runs.dropna(subset=["adversary_accuracy"])
        frames.append(adv[keys].assign(test_variant="", metric="adversary_accuracy", value=adv["adversary_accuracy"]))
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


def _figure_variant(sub: pd.DataFrame, dataset: str, test_variants: Mapping[str, Any] | None) -> str:
    wanted = (test_variants or {}).get(dataset)
    return (wanted if isinstance(wanted, str) else (list(wanted)[0] if wanted else None)) or (
        "balanced" if (sub["test_variant"] == "balanced").any() else "original")


def _interval_bars(ax, rows: pd.DataFrame, low: str, high: str, y: np.ndarray, **style) -> None:
    err = np.vstack([(rows["mean"] - rows[low]).clip(lower=0).fillna(0),
                     (rows[high] - rows["mean"]).clip(lower=0).fillna(0)])
    ax.errorbar(rows["mean"], y, xerr=err, fmt="none", capsize=2, **style)


def _figure_legend(fig, baseline: str | None) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="grey", lw=1, label="95% t interval over seeds (clipped to [0, 1])"),
        Line2D([], [], color="C0", lw=2.5, label=f"95% paired bootstrap interval over test rows ({N_BOOT} resamples)"),
        Line2D([], [], ls="", marker="o", color="C0",
               label=f"filled: Holm-adjusted bootstrap p < 0.05 against {baseline or 'the baseline'}"),
        Line2D([], [], ls="", marker="o", markerfacecolor="white", markeredgecolor="C0", label="hollow: not"),
        Line2D([], [], ls="", marker="D", color="grey", label=f"baseline ({baseline})" if baseline else "baseline"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)


def mitigation_figure(table: pd.DataFrame, test_variants: Mapping[str, Any] | None = None,
                      baseline: str | None = None):
    """One row per (dataset, model), one panel per metric of :data:`FIGURE_METRICS` on the dataset's
    first figure test variant: each condition's mean with its 95% t interval over seeds (grey) and
    its 95% paired bootstrap interval over test rows (blue), conditions ordered by worst-group
    accuracy (best on top); a filled marker where the Holm-adjusted bootstrap p against
    ``baseline`` is below 0.05, the baseline a grey diamond (the legend says so)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = list(dict.fromkeys(zip(table["dataset"], table["model"]))) or [("(none)", "")]
    fig, axes = plt.subplots(len(blocks), len(FIGURE_METRICS), squeeze=False,
                             figsize=(4.0 * len(FIGURE_METRICS), 1.1 + 0.35 * max(4, table["condition"].nunique())
                                      * len(blocks)))
    for r, (dataset, model) in enumerate(blocks):
        sub = table[(table["dataset"] == dataset) & (table["model"] == model)]
        variant = _figure_variant(sub, dataset, test_variants)
        order = (sub[(sub["metric"] == "worst_group_accuracy") & (sub["test_variant"] == variant)]
                 .sort_values("mean")["condition"].tolist())
        for c, metric in enumerate(FIGURE_METRICS):
            ax = axes[r][c]
            rows = sub[(sub["metric"] == metric) & (sub["test_variant"] == variant)].set_index("condition")
            rows = rows.reindex([o for o in order if o in rows.index])
            y = np.arange(len(rows))
            _interval_bars(ax, rows, "t_ci_low", "t_ci_high", y + 0.15, ecolor="grey", elinewidth=1)
            _interval_bars(ax, rows, "boot_ci_low", "boot_ci_high", y - 0.15, ecolor="C0", elinewidth=2.5)
            is_base = (rows.index == baseline) if baseline else np.zeros(len(rows), dtype=bool)
            filled = (rows["boot_p_holm"] < 0.05).to_numpy() & ~is_base
            hollow = ~filled & ~is_base
            ax.scatter(rows["mean"][hollow], y[hollow], facecolors="white", edgecolors="C0", zorder=3)
            ax.scatter(rows["mean"][filled], y[filled], color="C0", zorder=3)
            ax.scatter(rows["mean"][is_base], y[is_base], marker="D", color="grey", zorder=3)
            ax.set_xlim(-0.02, 1.02)
            ax.set_yticks(y, rows.index.tolist() if c == 0 else [""] * len(rows))
            ax.set_title(f"{dataset} / {model}: {metric.replace('_', ' ')}\n(test: {variant})", fontsize=9)
    _figure_legend(fig, baseline)
    fig.tight_layout(rect=(0, 0.07 if len(blocks) > 1 else 0.12, 1, 1))
    return fig


def report_job(job: Job, *, accuracy_ids: Sequence[Mapping[str, Any]], lid_ids: Sequence[Mapping[str, Any]],
               shap_ids: Sequence[Mapping[str, Any]], dataset_ids: Sequence[Mapping[str, Any]],
               figure_test_variants: Mapping[str, Any], mitigation_baseline: str | None,
               n_classes: Mapping[str, int], dfr_ids: Sequence[Mapping[str, Any]] = ()) -> None:
    """Snakemake job: the Study A report.

    input lists: ``accuracy``, ``lid``, ``shap``, ``class_weights``, ``counts``,
    ``informative`` (shap_compare's informative CSVs), ``reliance`` (evaluate's reliance
    CSVs), with the parallel params lists ``accuracy_ids`` ({dataset, model, condition, seed};
    also the ids of ``reliance``), ``lid_ids`` (same; base-model runs have condition "base"
    and seed None), ``shap_ids`` ({dataset, model, seed}; also the ids of ``informative``) and
    ``dataset_ids`` ({dataset}; the ids of ``class_weights`` and ``counts``);
    ``figure_test_variants``: {dataset: test variant, list or None}, see :func:`figure_panels`.
    ``metrics`` (finetune's metrics.json, ids ``accuracy_ids``; optional) give each run's
    model-selection rule and a language adversary's own accuracy (:func:`run_metrics_table`), shown
    beside the LID probe and in the ranking. ``predictions`` (finetune's predictions, ids ``accuracy_ids``) feed the mitigation ranking
    against ``mitigation_baseline`` (a condition name or None); ``n_classes``: {dataset: C}.
    ``dfr_predictions`` and ``dfr_metrics`` (the DFR stage's, ids ``dfr_ids``, condition
    ``<baseline>_dfr``; optional) add deep feature reweighting to the mitigation ranking.
    output: ``accuracy``, ``lid``, ``shap``, ``class_weights``, ``counts`` (CSV), the same
    names + ``_md`` (Markdown), optional ``informative`` (CSV, plus ``informative_md`` if
    given), optional ``reliance`` (+ ``reliance_md``) and ``accuracy_fig`` (PNG).
    """
    inputs, output = job.input, job.output

    def stacked(name: str, ids: Sequence[Mapping[str, Any]], id_columns: Sequence[str]) -> pd.DataFrame:
        return stack_runs(as_list(getattr(inputs, name, None)), ids, id_columns)

    run_columns = ["dataset", "model", "condition", "seed"]
    accuracy = accuracy_table(stacked("accuracy", accuracy_ids, run_columns))
    runs = run_metrics_table(inputs.metrics, accuracy_ids) if getattr(inputs, "metrics", None) is not None else None
    tables = {
        "accuracy": (accuracy, "Study A: test accuracy (mean and sd over seeds)"),
        "lid": (with_adversary(lid_table(stacked("lid", lid_ids, run_columns)), runs),
                "Study A: language-identification probe accuracy (cross-validated; mean and sd over seeds; features: raw "
                "or standardised per training fold; feature_norm: the raw features' mean L2 norm; adversary_accuracy: "
                "a language adversary's own accuracy on its training rows, in the validation interval of the kept "
                "weights and in the last one (_final))"),
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
        write_mitigation(job, accuracy_ids, lid_ids, shap_ids, figure_test_variants, mitigation_baseline, n_classes,
                         dataset_ids, dfr_ids)


MITIGATION_TITLE = (
    "Study A: conditions ranked per metric. mean over n_seeds seeds; t_ci: 95% t interval over seeds (clipped to "
    "the metric's range); boot_ci: 95% percentile interval of the mean over seeds under a paired bootstrap over "
    "test rows (n_boot resamples of each seed's n_test_rows rows, the same rows for every condition); against "
    "{baseline}: paired t-test over seeds (t, p_value, n_pairs) and the paired bootstrap difference (boot_diff, "
    "two-sided boot_p); p_holm, boot_p_holm: Holm-adjusted across the conditions of each metric and test set")


def derived_runs(runs: pd.DataFrame | None, baseline: str | None, conditions: Sequence[str]) -> pd.DataFrame | None:
    """Rows of the run table for conditions derived from the baseline's runs without a metrics file
    (the post-hoc adjustment): the baseline's model-selection rule, named as the baseline's."""
    if runs is None or runs.empty or not baseline:
        return runs
    base = runs[runs["condition"] == baseline]
    derived = [base.assign(condition=c, model_selection=base["model_selection"] + " (baseline's checkpoint)",
                           adversary_accuracy=math.nan, adversary_accuracy_final=math.nan)
               for c in conditions if c not in set(runs["condition"])]
    return pd.concat([runs, *derived], ignore_index=True) if derived else runs


def write_mitigation(job: Job, accuracy_ids, lid_ids, shap_ids, figure_test_variants, baseline: str | None,
                     n_classes: Mapping[str, int], dataset_ids: Sequence[Mapping[str, Any]] = (),
                     dfr_ids: Sequence[Mapping[str, Any]] = ()) -> None:
    """The mitigation ranking (table and figure) of the report job, with the post-hoc baseline
    (:func:`posthoc_predictions`) where the counts are given and DFR where its runs are given."""
    inputs, output = job.input, job.output
    run_columns = ["dataset", "model", "condition", "seed"]
    predictions = read_predictions(as_list(getattr(inputs, "predictions", None)), accuracy_ids)
    counts = subset_counts_table(as_list(getattr(inputs, "counts", None)), dataset_ids)
    posthoc = posthoc_predictions(predictions, baseline, counts)
    dfr = read_predictions(as_list(getattr(inputs, "dfr_predictions", None)), dfr_ids)
    predictions = {**predictions, **posthoc, **dfr}
    runs = run_metrics_table(getattr(inputs, "metrics", None), accuracy_ids) if getattr(
        inputs, "metrics", None) is not None else None
    if runs is not None and dfr:
        runs = pd.concat([runs, run_metrics_table(getattr(inputs, "dfr_metrics", None), dfr_ids)], ignore_index=True)
    runs = derived_runs(runs, baseline, sorted({k[2] for k in posthoc}))
    per_run = collect_mitigation_runs(
        predictions, n_classes, stack_runs(as_list(getattr(inputs, "lid", None)), lid_ids, run_columns),
        stack_runs(as_list(getattr(inputs, "reliance", None)), accuracy_ids, run_columns),
        stack_runs(as_list(getattr(inputs, "shap", None)), shap_ids, ["dataset", "model", "seed"]), runs)
    ranking = mitigation_table(per_run, baseline, bootstrap=bootstrap_table(predictions, n_classes, baseline),
                               runs=runs)
    write_table(ranking, output.mitigation, getattr(output, "mitigation_md", None),
                title=MITIGATION_TITLE.format(baseline=baseline or "no baseline"))
    save_figure(mitigation_figure(ranking, figure_test_variants, baseline), output.mitigation_fig)
