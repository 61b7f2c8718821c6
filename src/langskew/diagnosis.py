"""Diagnose language-label skew: does the label distribution depend on the language?

Part of langskew's library (with :mod:`langskew.weights` and :mod:`langskew.mitigation`): it
imports nothing from the studies; Study A's diagnosis jobs (:mod:`langskew.study_a.diagnose`)
call it.

Study A shows that a label distribution that differs between languages hurts a fine-tuned
multilingual model. This module measures that dependence in any table with a language and
a label column, before any fine-tuning:

- counts and shares per (language, label): ``share`` is the label's share within the
  language, ``share_of_total`` its share of all rows;
- the chi-square test of independence of language and label (no continuity correction)
  and Cramér's V, bias-corrected (Bergsma 2013) and plain;
- the mutual information I(language; label) in nats, and normalised by the label entropy
  H(label): the fraction of the label's uncertainty that the language alone removes;
- the shortcut gain: the accuracy of predicting each language's majority label minus the
  accuracy of predicting the overall majority label (what a model gains by reading the
  language instead of the text);
- the ``per_language`` class weights n_l / (C n_lc) (:mod:`langskew.weights`) and, per
  language, the ratio of its largest to its smallest weight; the largest of these ratios;
- a verdict, from the thresholds below (stated in docs/own-data.md and docs/studies.md):

  ===========  ==========================================================================
  ``strong``   p < 0.01 and (bias-corrected V >= 0.30 or shortcut gain >= 0.10)
  ``mild``     p < 0.01 and (bias-corrected V >= 0.10 or shortcut gain >= 0.05), not strong
  ``none``     otherwise
  ===========  ==========================================================================

  Study A's imposed skews are strong (XNLI en 1:2:3 vs fr 3:2:1: V = 0.41, gain = 0.17;
  Amazon, three languages 5:4:3:2:1 and three 1:2:3:4:5: V = 0.24, gain = 0.13).

Counting uses integer codes and ``numpy.bincount``, so a million rows take well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency
from scipy.stats.contingency import association

from langskew import io
from langskew.errors import LangskewError
from langskew.weights import largest_weight_ratio, per_language_weights_from_counts

#: significance level below which a dependence can be called mild or strong
ALPHA = 0.01
#: verdict thresholds on the bias-corrected Cramér's V and the shortcut gain
THRESHOLDS = {"strong": {"cramers_v": 0.30, "shortcut_gain": 0.10},
              "mild": {"cramers_v": 0.10, "shortcut_gain": 0.05}}

SUMMARY_COLUMNS = ["n", "n_languages", "n_labels", "chi2", "dof", "p_value", "cramers_v", "cramers_v_plain",
                   "mutual_information", "mi_normalised", "label_entropy", "shortcut_accuracy",
                   "majority_accuracy", "shortcut_gain", "max_weight_ratio", "max_weight_ratio_language",
                   "verdict", "notes"]
CELL_COLUMNS = ["language", "label", "label_name", "n", "share", "share_of_total", "per_language_weight"]


# --- statistics of a languages x labels count table ------------------------------------------

def _nonempty(table: np.ndarray) -> np.ndarray:
    """The table without all-zero rows and columns (they carry no information and break chi-square)."""
    table = np.asarray(table, dtype=np.float64)
    return table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]


def chi_square(table: np.ndarray) -> tuple[float, int, float]:
    """Chi-square test of independence (statistic, dof, p-value), without continuity correction.

    Empty rows/columns are dropped first; with fewer than two non-empty languages or labels
    there is nothing to test: (0, 0, 1.0).
    """
    t = _nonempty(table)
    if min(t.shape, default=0) < 2:
        return 0.0, 0, 1.0
    res = chi2_contingency(t, correction=False)
    return float(res.statistic), int(res.dof), float(res.pvalue)


def cramers_v(table: np.ndarray, bias_correction: bool = True) -> float:
    """Cramér's V; with ``bias_correction`` the Bergsma (2013) estimator, which is ~0 under independence.

    phi2 = chi2 / n; corrected: phi2~ = max(0, phi2 - (k-1)(r-1)/(n-1)), r~ = r - (r-1)^2/(n-1),
    k~ = k - (k-1)^2/(n-1), V~ = sqrt(phi2~ / min(r~ - 1, k~ - 1)).
    """
    t = _nonempty(table)
    r, k = t.shape if t.size else (0, 0)
    n = t.sum()
    if min(r, k) < 2 or n < 2:
        return 0.0
    if not bias_correction:
        return float(association(t.astype(np.int64) if np.all(t == np.round(t)) else t, method="cramer"))
    chi2 = chi2_contingency(t, correction=False).statistic
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    r_c = r - (r - 1) ** 2 / (n - 1)
    k_c = k - (k - 1) ** 2 / (n - 1)
    denom = min(r_c - 1, k_c - 1)
    return float(math.sqrt(phi2 / denom)) if denom > 0 else 0.0


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(table: np.ndarray) -> tuple[float, float]:
    """I(language; label) and H(label), both in nats (natural log, as scikit-learn)."""
    t = np.asarray(table, dtype=np.float64)
    n = t.sum()
    if n == 0:
        return 0.0, 0.0
    p = t / n
    p_lang, p_label = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(p_lang, p_label)[nz])).sum())
    return (mi if mi > 1e-12 else 0.0), _entropy(p_label)  # rounding leaves ~1e-16 under independence


def shortcut_gain(table: np.ndarray) -> tuple[float, float, float]:
    """(per-language majority accuracy, overall majority accuracy, their difference)."""
    t = np.asarray(table, dtype=np.float64)
    n = t.sum()
    if n == 0:
        return 0.0, 0.0, 0.0
    per_language = t.max(axis=1).sum() / n
    overall = t.sum(axis=0).max() / n
    return float(per_language), float(overall), float(per_language - overall)


def verdict(p_value: float, v: float, gain: float) -> str:
    """none / mild / strong from the test's p-value, the bias-corrected V and the shortcut gain."""
    if p_value >= ALPHA:
        return "none"
    for level in ("strong", "mild"):
        th = THRESHOLDS[level]
        if v >= th["cramers_v"] or gain >= th["shortcut_gain"]:
            return level
    return "none"


def diagnose_table(table: np.ndarray, languages: Sequence[str], labels: Sequence[Any],
                   label_names: Sequence[str] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Every statistic of one languages x labels count table: (summary dict, long cells table)."""
    t = np.asarray(table, dtype=np.int64)
    if t.shape != (len(languages), len(labels)):
        raise LangskewError(f"count table of shape {t.shape} for {len(languages)} languages and {len(labels)} labels")
    names = [str(x) for x in (label_names if label_names is not None else labels)]
    chi2, dof, p = chi_square(t)
    v = cramers_v(t)
    mi, h = mutual_information(t)
    acc_lang, acc_major, gain = shortcut_gain(t)
    weights = per_language_weights_from_counts(t)
    row_n = t.sum(axis=1)
    notes = [f"language {lang!r} has no rows" for lang, n in zip(languages, row_n) if n == 0]
    notes += [f"label {names[c]!r} has no rows in language {lang!r}"
              for i, lang in enumerate(languages) if row_n[i] > 0 for c in np.flatnonzero(t[i] == 0)]
    ratios = largest_weight_ratio(weights[row_n > 0]) if (row_n > 0).any() else np.array([])
    present = [lang for lang, n in zip(languages, row_n) if n > 0]
    top = int(np.argmax(ratios)) if len(ratios) else None
    summary = {
        "n": int(t.sum()), "n_languages": int((row_n > 0).sum()), "n_labels": int((t.sum(axis=0) > 0).sum()),
        "chi2": chi2, "dof": dof, "p_value": p, "cramers_v": v, "cramers_v_plain": cramers_v(t, False),
        "mutual_information": mi, "mi_normalised": mi / h if h > 0 else 0.0, "label_entropy": h,
        "shortcut_accuracy": acc_lang, "majority_accuracy": acc_major, "shortcut_gain": gain,
        "max_weight_ratio": float(ratios[top]) if top is not None else float("nan"),
        "max_weight_ratio_language": present[top] if top is not None else "",
        "verdict": verdict(p, v, gain), "notes": "; ".join(notes),
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        share = t / row_n[:, None]
    cells = pd.DataFrame({
        "language": np.repeat(list(languages), len(labels)),
        "label": list(labels) * len(languages),
        "label_name": names * len(languages),
        "n": t.ravel(),
        "share": share.ravel(),
        "share_of_total": (t / max(int(t.sum()), 1)).ravel(),
        "per_language_weight": weights.ravel(),
    })
    return summary, cells


# --- tables with a language and a label column ----------------------------------------------

def _natural_order(values: Sequence[Any]) -> list[Any]:
    """Numbers in numeric order (so "10" follows "9"), anything else as text."""
    values = list(values)
    try:
        return sorted(values, key=lambda x: float(x))
    except (TypeError, ValueError):
        return sorted(values, key=str)


def count_table(languages: Sequence[Any] | pd.Series, labels: Sequence[Any] | pd.Series,
                language_order: Sequence[Any] | None = None, label_order: Sequence[Any] | None = None
                ) -> tuple[np.ndarray, list[Any], list[Any]]:
    """Languages x labels counts of aligned per-row values (bincount over integer codes).

    Without an order, languages and labels are those present, in natural order. With one, a
    value outside it is an error naming the value; listed values with no rows count 0.
    """
    lang_codes, lang_uniques = pd.factorize(pd.Series(languages), sort=False)
    lab_codes, lab_uniques = pd.factorize(pd.Series(labels), sort=False)
    lang_values = language_order if language_order is not None else _natural_order(lang_uniques)
    lab_values = label_order if label_order is not None else _natural_order(lab_uniques)
    lang_pos = {v: i for i, v in enumerate(lang_values)}
    lab_pos = {v: i for i, v in enumerate(lab_values)}
    for what, uniques, pos in (("language", lang_uniques, lang_pos), ("label", lab_uniques, lab_pos)):
        unknown = [u for u in uniques if u not in pos]
        if unknown:
            raise LangskewError(f"{what} {unknown[0]!r} is not among the expected {what}s {list(pos)}")
    lang_map = np.array([lang_pos[u] for u in lang_uniques], dtype=np.int64)
    lab_map = np.array([lab_pos[u] for u in lab_uniques], dtype=np.int64)
    if (lang_codes < 0).any() or (lab_codes < 0).any():
        raise LangskewError("missing language or label values (check the input first)")
    flat = lang_map[lang_codes] * len(lab_values) + lab_map[lab_codes]
    table = np.bincount(flat, minlength=len(lang_values) * len(lab_values)).reshape(len(lang_values), len(lab_values))
    return table, list(lang_values), list(lab_values)


def diagnose_frame(df: pd.DataFrame, language_col: str = "language", label_col: str = "label",
                   split_col: str | None = None, languages: Sequence[Any] | None = None,
                   labels: Sequence[Any] | None = None, label_names: Sequence[str] | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary (one row per split; split "all" without ``split_col``) and cells of a table."""
    groups = [("all", df)] if split_col is None else list(df.groupby(split_col, sort=False))
    summaries, cells = [], []
    for split, part in groups:
        table, langs, labs = count_table(part[language_col], part[label_col], languages, labels)
        summary, cell = diagnose_table(table, langs, labs, label_names)
        summaries.append({"split": split, **summary})
        cells.append(cell.assign(split=split)[["split", *CELL_COLUMNS]])
    return pd.DataFrame(summaries, columns=["split", *SUMMARY_COLUMNS]), pd.concat(cells, ignore_index=True)


def summary_line(row: Mapping[str, Any]) -> str:
    """One log line of a diagnosis."""
    return (f"n={row['n']}, chi2={row['chi2']:.4g} (dof {row['dof']}, p={row['p_value']:.3g}), "
            f"Cramér's V={row['cramers_v']:.3f}, MI={row['mutual_information']:.4f} nats "
            f"({row['mi_normalised']:.1%} of H(label)), shortcut gain={row['shortcut_gain']:+.3f}, "
            f"largest per-language weight ratio={row['max_weight_ratio']:.3g} -> {row['verdict']}")


# --- presentation ---------------------------------------------------------------------------

def shares_wide(cells: pd.DataFrame) -> pd.DataFrame:
    """Label shares within each language as a languages x labels table (label names as columns)."""
    order = list(dict.fromkeys(cells["label_name"]))
    wide = cells.pivot_table(index="language", columns="label_name", values="share", sort=False)
    n = cells.groupby("language", sort=False)["n"].sum()
    return wide[order].assign(n=n).reset_index()


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "inf" if math.isinf(x) else ("" if math.isnan(x) else f"{x:.4g}")
    return str(x)


def markdown_report(summary: pd.DataFrame, cells: pd.DataFrame, keys: Sequence[str], title: str) -> str:
    """Summary table, then the label shares per language of every diagnosed table."""
    main = ["verdict", "n", "chi2", "dof", "p_value", "cramers_v", "mutual_information", "mi_normalised",
            "shortcut_gain", "max_weight_ratio", "max_weight_ratio_language"]
    shown = summary[[*keys, *main]].copy()
    text = [f"# {title}\n", io.to_markdown(shown)]
    notes = summary[summary["notes"].astype(str).str.len() > 0]
    if len(notes):
        text.append("\nNotes:\n")
        text += [f"- {' / '.join(_fmt(r[k]) for k in keys)}: {r['notes']}\n" for _, r in notes.iterrows()]
    text.append(f"\nVerdict: strong if p < {ALPHA} and (Cramér's V >= {THRESHOLDS['strong']['cramers_v']} or "
                f"shortcut gain >= {THRESHOLDS['strong']['shortcut_gain']}); mild if p < {ALPHA} and "
                f"(V >= {THRESHOLDS['mild']['cramers_v']} or gain >= {THRESHOLDS['mild']['shortcut_gain']}); "
                f"none otherwise. V is bias-corrected; MI in nats.\n")
    for ident, part in cells.groupby(list(keys), sort=False):
        ident = ident if isinstance(ident, tuple) else (ident,)
        text.append(f"\n## Label shares per language: {' / '.join(map(str, ident))}\n\n")
        text.append(io.to_markdown(shares_wide(part), floatfmt=".3f"))
    return "".join(text)


def heatmap_figure(cells: pd.DataFrame, panel_keys: Sequence[str], title: str = "",
                   panel_notes: Mapping[tuple, str] | None = None):
    """One heatmap of label shares per language for each combination of ``panel_keys``
    (``panel_notes``: text added to a panel's title, keyed by its tuple of key values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(cells.groupby(list(panel_keys), sort=False))
    ncols = min(3, len(panels)) or 1
    nrows = max(1, math.ceil(len(panels) / ncols))
    n_lang = cells["language"].nunique()
    n_lab = cells["label_name"].nunique()
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                             figsize=(ncols * (1.6 + 0.8 * n_lab), nrows * (1.6 + 0.4 * n_lang)))
    vmax = float(np.nanmax(cells["share"].to_numpy())) if len(cells) else 1.0
    image = None
    for ax, (ident, part) in zip(axes.ravel(), panels):
        wide = shares_wide(part).set_index("language").drop(columns="n")
        image = ax.imshow(wide.to_numpy(dtype=float), vmin=0, vmax=max(vmax, 1e-9), cmap="viridis", aspect="auto")
        ax.set_xticks(range(wide.shape[1]), [str(c) for c in wide.columns], fontsize=7, rotation=30)
        ax.set_yticks(range(wide.shape[0]), list(wide.index), fontsize=7)
        for (i, j), value in np.ndenumerate(wide.to_numpy(dtype=float)):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if value < 0.6 * vmax else "black")
        ident = ident if isinstance(ident, tuple) else (ident,)
        note = (panel_notes or {}).get(tuple(ident))
        ax.set_title(" / ".join(map(str, ident)) + (f"\n{note}" if note else ""), fontsize=8)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="share of the language's rows")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


# --- what to run next -----------------------------------------------------------------------

#: The mitigation conditions the closing command proposes (docs/studies.md, "Mitigation conditions").
NEXT_CONDITIONS = {
    "balanced": {"train": "balanced", "weighting": "none"},
    "imbalanced": {"train": "imbalanced", "weighting": "none"},
    "imbalanced_plw": {"train": "imbalanced", "weighting": "per_language"},
    "imbalanced_mask_entropy_1": {"train": "imbalanced", "weighting": "none", "mask_entropy": 1},
    "imbalanced_adversary": {"train": "imbalanced", "weighting": "none",
                             "adversary": {"kind": "reversal", "coef": 0.1}},
    "imbalanced_logit_adjustment": {"train": "imbalanced", "weighting": "none", "logit_adjustment": 1.0},
    # group DRO as Sagawa et al. (2020) run it: group-balanced batches, worst-group model selection
    "imbalanced_group_dro": {"train": "imbalanced", "weighting": "none", "group_dro": {"step_size": 0.01},
                             "sampling": "group_balanced", "model_selection": "worst_group_accuracy"},
    "imbalanced_resampled": {"train": "imbalanced", "weighting": "none", "sampling": "per_language_balanced"},
}


def _ratio(counts: Sequence[int]) -> str:
    """Counts as a ratio string; a class without rows gets the smallest part 1 (ratios must be > 0)."""
    return ":".join(str(max(int(n), 1)) for n in counts)


def mitigation_command(cells: pd.DataFrame, path: str, text_col: str, label_col: str, language_col: str | None,
                       name: str = "my_data") -> str:
    """Markdown closing a diagnosis: a config overlay that runs Study A's mitigation comparison on
    the diagnosed file (``source: local``) and the command that runs it. Without a language
    column (``language_col`` None) the overlay has the workflow detect each row's language
    (``detect_language: true``).

    The imbalanced training subset keeps the file's own class counts per language as its ratios
    (the skew just diagnosed); the balanced subset is the study's control. ``cells`` is the
    (first split's) cell table of :func:`diagnose_table`.
    """
    import yaml

    first = cells[cells["split"] == cells["split"].iloc[0]] if "split" in cells.columns else cells
    languages = list(dict.fromkeys(first["language"].astype(str)))
    labels = list(dict.fromkeys(first["label_name"].astype(str)))
    ratios = {lang: _ratio(first.loc[first["language"].astype(str) == lang, "n"].tolist()) for lang in languages}
    overlay = {
        "datasets": {name: {
            "source": "local", "task": "single", "languages": languages, "labels": labels, "ratios": ratios,
            "local": {"train": str(path), "validation": "<validation file>", "test": "<test file>"},
            "columns": {"text": text_col, "text_pair": None, "label": label_col, "language": language_col},
            **({} if language_col else {"detect_language": True}),
        }},
        "study_a": {"datasets": [name], "models": ["mbert", "xlmr"], "conditions": NEXT_CONDITIONS},
        "study_b": {"enabled": False},
    }
    return ("\n## Next: which remedy recovers the worst-served language?\n\n"
            "Save this overlay as `my_data.yaml` (fill in the validation and test files; `task: pair` and "
            "`text_pair` for sentence pairs) and run the mitigation comparison from the langskew folder:\n\n"
            "```yaml\n" + yaml.safe_dump(overlay, sort_keys=False, allow_unicode=True) + "```\n\n"
            "```bash\nsnakemake --cores all --configfile my_data.yaml\n```\n\n"
            "The ranking is `results/report/study_a/mitigation.md` (and `mitigation.png`); "
            "docs/studies.md, \"Mitigation conditions\", explains each condition.\n")


# --- any table: a DataFrame or a datasets.Dataset, with or without a language column ---------

#: rows a detected language needs to be diagnosed by default (fewer: misdetections, dropped and named)
MIN_ROWS_DETECTED = 10
#: detection probability below which a row counts as uncertain in the report
MIN_CONFIDENCE = 0.5


def text_values(series: pd.Series) -> pd.Series:
    """Labels and languages as stripped text; NaN/None/blank become missing."""
    text = series.astype("string").str.strip()
    return text.mask(text == "")


def check_values(df: pd.DataFrame, column: str, what: str) -> pd.Series:
    """The column as text, or an error naming the column and the first rows with an empty ``what``."""
    values = text_values(df[column])
    empty = values.isna().to_numpy()
    if empty.any():
        rows = [int(i) + 1 for i in empty.nonzero()[0][:5]]
        raise LangskewError(f"column {column!r}: {int(empty.sum())} rows have an empty {what} "
                            f"(data rows {', '.join(map(str, rows))}{', ...' if empty.sum() > 5 else ''})")
    return values


def as_frame(data: Any, columns: Sequence[str]) -> pd.DataFrame:
    """The named columns of a pandas DataFrame, a ``datasets.Dataset`` or a ``datasets.DatasetDict``
    (its splits stacked, with their names in a column ``split``); a missing column is named."""
    if hasattr(data, "column_names") and isinstance(data.column_names, dict):  # DatasetDict
        parts = [as_frame(ds, columns).assign(split=name) for name, ds in data.items()]
        return pd.concat(parts, ignore_index=True)
    have = list(data.columns) if isinstance(data, pd.DataFrame) else list(getattr(data, "column_names", []) or [])
    if not isinstance(data, pd.DataFrame) and not hasattr(data, "select_columns"):
        raise LangskewError(f"expected a pandas DataFrame or a datasets.Dataset, got {type(data).__name__}")
    for col in columns:
        if col not in have:
            raise LangskewError(f"no column {col!r}; the data has: {', '.join(map(str, have))}")
    wanted = list(dict.fromkeys(columns))
    if isinstance(data, pd.DataFrame):
        return data[wanted].reset_index(drop=True)
    return data.select_columns(wanted).to_pandas()


def _drop(frame: pd.DataFrame, keep: np.ndarray, reason: str, dropped: dict[str, int]) -> pd.DataFrame:
    n = int((~keep).sum())
    if n:
        dropped[reason] = dropped.get(reason, 0) + n
    return frame.loc[keep].reset_index(drop=True)


def _detect(frame: pd.DataFrame, languages: Sequence[str] | None, min_rows: int, min_confidence: float,
            dropped: dict[str, int]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Detect each row's language (column ``text``, ``text_pair`` for pairs), then drop, counted:
    rows without a detectable language, rows outside ``languages``, languages under ``min_rows``."""
    from langskew.langid import UNDETERMINED, detect_rows

    detection = detect_rows(frame["text"], frame["text_pair"] if "text_pair" in frame.columns else None)
    info = {"identifier": detection.identifier, "rows": len(frame),
            "detected": {str(k): int(v) for k, v in detection.counts().items()},
            "min_confidence": float(min_confidence),
            "low_confidence_share": detection.low_confidence_share(min_confidence),
            "pair_disagreements": detection.disagreements if "text_pair" in frame.columns else None}
    frame = frame.assign(language=detection.language)
    frame = _drop(frame, frame["language"].to_numpy() != UNDETERMINED, "no detectable language (empty text)",
                  dropped)
    if languages is not None:
        outside = ~frame["language"].isin(list(languages)).to_numpy()
        for lang, n in frame.loc[outside, "language"].value_counts().items():
            dropped[f"detected as {lang!r}, not in the languages asked for"] = int(n)
        frame = frame.loc[~outside].reset_index(drop=True)
    counts = frame["language"].value_counts()
    rare = counts[counts < min_rows]
    if len(rare):
        named = ", ".join(f"{lang!r} {int(n)}" for lang, n in rare.items())
        dropped[f"detected in a language with fewer than min_rows={min_rows} rows ({named})"] = int(rare.sum())
    frame = frame.loc[frame["language"].isin(counts[counts >= min_rows].index).to_numpy()].reset_index(drop=True)
    return frame, info


def _table(data: Any, label_col: str, text_col: str, language_col: str | None, text_pair_col: str | None,
           split_col: str | None) -> pd.DataFrame:
    """Columns renamed to language, label, text, text_pair, split; labels (and languages) checked."""
    roles = {"label": label_col, "text": text_col, "language": language_col, "text_pair": text_pair_col,
             "split": split_col}
    roles = {role: col for role, col in roles.items() if col}
    raw = as_frame(data, list(roles.values()))
    if "split" in raw.columns and "split" not in roles:  # the splits of a DatasetDict
        roles["split"] = "split"
    frame = pd.DataFrame({"label": check_values(raw, label_col, "label"), "text": raw[text_col]})
    if language_col:
        frame["language"] = check_values(raw, language_col, "language")
    if text_pair_col:
        frame["text_pair"] = raw[text_pair_col]
    if "split" in roles:
        frame["split"] = check_values(raw, roles["split"], "split")
    if len(frame) == 0:
        raise LangskewError("the data has no rows")
    values = frame["label"].unique()
    if len(values) < 2:
        raise LangskewError(f"label column {label_col!r} has one value ({values[0]!r}) in all {len(frame)} rows: "
                            "a skew of labels across languages needs at least two labels")
    return frame


@dataclass
class Diagnosis:
    """What :func:`diagnose` finds: ``summary`` (one row per split, every statistic and the
    verdict), ``cells`` (per split, language and label: counts, shares, per-language weights),
    ``detection`` (None with a language column; else the identifier, rows per detected language,
    the share under ``min_confidence`` and, for pairs, the rows whose sides disagree) and
    ``dropped`` (rows left out, by reason)."""

    summary: pd.DataFrame
    cells: pd.DataFrame
    detection: dict[str, Any] | None = None
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """none / mild / strong; with several splits, the strongest."""
        return max(self.summary["verdict"], key=["none", "mild", "strong"].index)

    @property
    def statistics(self) -> dict[str, Any]:
        """The summary of the first split (the only one without splits) as a dict."""
        return self.summary.iloc[0].to_dict()

    @property
    def per_language(self) -> pd.DataFrame:
        """Label shares within each language (first split): languages x labels, and n."""
        first = self.cells[self.cells["split"] == self.cells["split"].iloc[0]]
        return shares_wide(first)

    def detection_markdown(self) -> str:
        """What detection found and every row dropped (empty without detection and drops)."""
        lines = []
        if self.detection:
            d = self.detection
            found = ", ".join(f"{k} {v}" for k, v in d["detected"].items())
            lines.append(f"No language column: languages detected with {d['identifier']} on {d['rows']} rows: "
                         f"{found}.")
            lines.append(f"{d['low_confidence_share']:.1%} of rows detected with confidence below "
                         f"{d['min_confidence']:g}.")
            if d.get("pair_disagreements") is not None:
                lines.append(f"Pairs: the first text decides; {d['pair_disagreements']} rows whose two texts "
                             "were detected in different languages.")
        lines += [f"Dropped {n} rows: {reason}." for reason, n in self.dropped.items()]
        return "".join(f"- {line}\n" for line in lines)

    def to_markdown(self, title: str = "Language-label skew") -> str:
        """The report: detection and dropped rows, the summary table, the shares per language."""
        report = markdown_report(self.summary, self.cells, ["split"], title)
        extra = self.detection_markdown()
        if not extra:
            return report
        head, rest = report.split("\n", 1)
        return f"{head}\n\n{extra}\n{rest}"


def diagnose(data: Any, *, label_col: str = "label", text_col: str = "text", language_col: str | None = None,
             text_pair_col: str | None = None, split_col: str | None = None,
             languages: Sequence[str] | None = None, labels: Sequence[str] | None = None,
             min_rows: int | None = None, min_confidence: float = MIN_CONFIDENCE) -> Diagnosis:
    """Language-label skew of a pandas DataFrame, ``datasets.Dataset`` or ``DatasetDict`` (per split).

    Without ``language_col`` each row's language is detected from ``text_col``
    (:mod:`langskew.langid`; for pairs the first text decides and disagreements are counted).
    ``languages``: with a language column, languages that must be present (their order); with
    detection, the languages kept (rows detected as any other are dropped and counted).
    ``min_rows``: a language with fewer rows is dropped and named (default
    ``MIN_ROWS_DETECTED`` with detection, 1 otherwise). ``labels``: the labels in class order.
    Labels and languages are compared as text.
    """
    if min_rows is not None and min_rows < 1:
        raise LangskewError(f"min_rows must be at least 1, got {min_rows}")
    if not 0 <= min_confidence <= 1:
        raise LangskewError(f"min_confidence must be in [0, 1], got {min_confidence}")
    frame = _table(data, label_col, text_col, language_col, text_pair_col, split_col)
    empty_text = text_values(frame["text"]).isna().to_numpy()
    dropped: dict[str, int] = {}
    detection = None
    if language_col is None:
        frame, detection = _detect(frame, languages, min_rows or MIN_ROWS_DETECTED, min_confidence, dropped)
        if frame.empty:
            raise LangskewError("no rows left after language detection: " +
                                "; ".join(f"{n} {reason}" for reason, n in dropped.items()))
        empty_text = np.zeros(len(frame), dtype=bool)  # rows without text are dropped, counted above
    else:
        if languages is not None:
            missing = [lang for lang in languages if lang not in set(frame["language"])]
            if missing:
                raise LangskewError(f"language {missing[0]!r} (languages) has no rows in column {language_col!r}")
        counts = frame["language"].value_counts()
        rare = counts[counts < (min_rows or 1)]
        if len(rare):
            named = ", ".join(f"{lang!r} {int(n)}" for lang, n in rare.items())
            dropped[f"of a language with fewer than min_rows={min_rows} rows ({named})"] = int(rare.sum())
        keep = ~frame["language"].isin(rare.index).to_numpy()
        frame, empty_text = frame.loc[keep].reset_index(drop=True), empty_text[keep]
    has_split = "split" in frame.columns
    summary, cells = diagnose_frame(frame, split_col="split" if has_split else None,
                                    languages=languages if language_col else None, labels=labels)
    summary["empty_texts"] = ([int(empty_text.sum())] if not has_split else
                              [int(empty_text[(frame["split"] == s).to_numpy()].sum()) for s in summary["split"]])
    note = summary["empty_texts"].map(lambda k: f"{k} rows have an empty text" if k else "")
    summary["notes"] = ["; ".join(filter(None, pair)) for pair in zip(summary["notes"], note)]
    return Diagnosis(summary, cells, detection, dropped)
