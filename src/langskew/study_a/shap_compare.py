"""How SHAP attributions shift under class imbalance: one model's values against the reference's (Study A).

Token types come from the balanced (reference) model's SHAP value per token and class:
positive (> threshold), negative (< -threshold), neutral (|v| <= threshold). For every
example and class the difference SHAP_other - SHAP_reference is summed over the tokens of
each type, plus the base-value difference, and averaged per language over the examples that
have a token of the type (an example without one is left out, not counted as 0). The values
are those :mod:`langskew.study_a.shap_values` writes.
"""

from __future__ import annotations

import string
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError
from langskew.io import read_json, save_figure, write_csv
from langskew.paths import as_list
from langskew.study_a.shap_values import BASE_INDEX
from langskew.workflow import Job

#: The condition the others are compared with (its name in the informative-share table).
REFERENCE = "balanced"
TOKEN_TYPES = ("positive", "negative", "neutral")
DIFF_TYPES = TOKEN_TYPES + ("base",)
KEYS = ["id", "class_index", "token_index"]
CUMULATIVE_COLUMNS = ["comparison", "language", "ratio_group", "class_index", "type", "mean_diff", "n_examples"]
SHARE_COLUMNS = ["condition", "language", "class_index", "share_informative", "share_class_informative", "n_examples"]


# --------------------------------------------------------------------------------------
# Comparing models
# --------------------------------------------------------------------------------------

def token_types(balanced_values: pd.DataFrame, threshold: float = 0.01) -> pd.DataFrame:
    """id, token_index, class_index, type (positive > thr, negative < -thr, else neutral)."""
    tokens = balanced_values[balanced_values["token_index"] != BASE_INDEX]
    v = tokens["value"].to_numpy()
    kind = np.where(v > threshold, "positive", np.where(v < -threshold, "negative", "neutral"))
    return tokens[["id", "token_index", "class_index"]].assign(type=kind).reset_index(drop=True)


def aligned_difference(reference: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Reference rows with ``diff = value_other - value_reference``; errors unless tokens align."""
    merged = reference.merge(other[KEYS + ["token", "value"]], on=KEYS, how="outer",
                             suffixes=("", "_other"), indicator=True)
    unmatched = merged[merged["_merge"] != "both"]
    if len(unmatched):
        first = unmatched.iloc[0]
        side = "reference" if first["_merge"] == "left_only" else "other model"
        raise LangskewError(f"SHAP values do not align: example {first['id']!r} token {first['token_index']} "
                            f"class {first['class_index']} only in the {side} "
                            "(both models must share the tokenizer and the explained texts)")
    differ = merged[merged["token"] != merged["token_other"]]
    if len(differ):
        first = differ.iloc[0]
        raise LangskewError(f"SHAP tokens differ for example {first['id']!r} at token {first['token_index']}: "
                            f"{first['token']!r} vs {first['token_other']!r} (different tokenizers?)")
    return merged.assign(diff=merged["value_other"] - merged["value"]).drop(columns=["_merge", "token_other"])


def cumulative_differences(reference: pd.DataFrame, other: pd.DataFrame, threshold: float = 0.01) -> pd.DataFrame:
    """Mean over examples of the per-type summed SHAP difference (other - reference).

    Returns language, class_index, type (positive/negative/neutral/base), mean_diff,
    n_examples. An example with no token of a type (for that class) has no sum for the
    type and is left out of the type's mean (a nan-mean, as in the studies' analysis), so
    ``n_examples`` counts the examples that have the type; a type no example has gets
    ``mean_diff = NaN`` and ``n_examples = 0``.
    """
    merged = aligned_difference(reference, other)
    types = token_types(reference, threshold)
    merged = merged.merge(types, on=["id", "token_index", "class_index"], how="left")
    merged["type"] = merged["type"].fillna("base")
    # sum(min_count=1): a (example, class, type) without tokens stays NaN instead of 0
    per_example = (merged.groupby(["id", "language", "class_index", "type"])["diff"].sum(min_count=1)
                   .unstack("type").reindex(columns=list(DIFF_TYPES)))
    per_example.columns.name = None
    long = per_example.reset_index().melt(id_vars=["id", "language", "class_index"], value_vars=list(DIFF_TYPES),
                                          var_name="type", value_name="diff")
    out = long.groupby(["language", "class_index", "type"], sort=False)["diff"].agg(mean_diff="mean", n_examples="count")
    out = out.reset_index()
    out["type"] = pd.Categorical(out["type"], categories=list(DIFF_TYPES), ordered=True)
    return out.sort_values(["language", "class_index", "type"]).reset_index(drop=True).astype({"type": str})


def token_words(tokens: Sequence[str]) -> list[str]:
    """The whitespace-delimited word each token belongs to (punctuation stripped), per token.

    Text-masker tokens are substrings of the input that keep their trailing whitespace, so
    a word ends at a token that ends with whitespace; this maps sub-word pieces back to the
    word they spell.
    """
    group: list[int] = []
    out = [""] * len(tokens)

    def close():
        word = "".join(tokens[i] for i in group).strip().strip(string.punctuation)
        for i in group:
            out[i] = word
        group.clear()

    for i, tok in enumerate(tokens):
        if not tok:  # special tokens ([CLS], [SEP]) are empty strings: no word
            close()
            continue
        if tok[0].isspace():
            close()
        group.append(i)
        if tok[-1].isspace():
            close()
    close()
    return out


def informative_share(values: pd.DataFrame, informative_tokens: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
    """Share of |SHAP| that falls on truly informative tokens, per language and class.

    ``informative_tokens`` = {language: {word: class_index}} (synthetic data's meta.json).
    ``share_informative``: on any informative word; ``share_class_informative``: on words
    informative *for the explained class*. Per-example shares averaged over examples with
    non-zero attribution. Languages absent from the mapping are skipped.
    """
    tokens = values[values["token_index"] != BASE_INDEX].sort_values(["id", "class_index", "token_index"])
    first_class = tokens["class_index"].min()
    words = []
    for _, group in tokens[tokens["class_index"] == first_class].groupby("id", sort=False):
        words.append(group[["id", "token_index"]].assign(word=token_words(group["token"].astype(str).tolist())))
    columns = ["language", "class_index", "share_informative", "share_class_informative", "n_examples"]
    if not words:
        return pd.DataFrame(columns=columns)
    tokens = tokens.merge(pd.concat(words), on=["id", "token_index"], how="left")
    lookup = {(lang, w): int(c) for lang, mapping in (informative_tokens or {}).items() for w, c in mapping.items()}
    informative_class = [lookup.get((lang, w), -1) for lang, w in zip(tokens["language"], tokens["word"])]
    tokens["abs"] = tokens["value"].abs()
    tokens["inf"] = np.where(np.asarray(informative_class) >= 0, tokens["abs"], 0.0)
    tokens["cls_inf"] = np.where(np.asarray(informative_class) == tokens["class_index"].to_numpy(), tokens["abs"], 0.0)
    tokens = tokens[tokens["language"].isin(list(informative_tokens or {}))]
    per_example = tokens.groupby(["id", "language", "class_index"])[["abs", "inf", "cls_inf"]].sum()
    per_example = per_example[per_example["abs"] > 0]
    per_example = per_example.assign(share_informative=per_example["inf"] / per_example["abs"],
                                     share_class_informative=per_example["cls_inf"] / per_example["abs"])
    out = per_example.groupby(["language", "class_index"]).agg(
        share_informative=("share_informative", "mean"),
        share_class_informative=("share_class_informative", "mean"),
        n_examples=("abs", "size"))
    return out.reset_index()[columns]


# --------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------

GROUP_CMAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")


def language_colours(ratio_groups: Mapping[str, str], languages: Sequence[str]) -> dict[str, Any]:
    """One hue per ratio group, shades of it per language (languages without a group: grey)."""
    import matplotlib

    groups = list(dict.fromkeys(ratio_groups.get(lang, "?") for lang in languages))
    colours = {}
    for g_idx, group in enumerate(groups):
        members = [lang for lang in languages if ratio_groups.get(lang, "?") == group]
        cmap = matplotlib.colormaps[GROUP_CMAPS[g_idx % len(GROUP_CMAPS)] if group != "?" else "Greys"]
        for j, lang in enumerate(members):
            colours[lang] = cmap(0.85 - 0.45 * j / max(1, len(members) - 1))
    return colours


def plot_cumulative(table: pd.DataFrame, classes: Sequence[int], ratio_groups: Mapping[str, str],
                    class_names: Sequence[str] | None = None):
    """Bar chart: rows = comparisons, columns = classes; bars per language over token types."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comparisons = list(dict.fromkeys(table["comparison"])) or ["(none)"]
    languages = sorted(set(table["language"]), key=lambda l: (ratio_groups.get(l, "~"), l))
    colours = language_colours(ratio_groups, languages)
    fig, axes = plt.subplots(len(comparisons), max(1, len(classes)), squeeze=False,
                             figsize=(4.2 * max(1, len(classes)), 3.2 * len(comparisons)), sharey="row")
    width = 0.8 / max(1, len(languages))
    x = np.arange(len(DIFF_TYPES))
    for r, comp in enumerate(comparisons):
        for c, cls in enumerate(classes):
            ax = axes[r][c]
            sub = table[(table["comparison"] == comp) & (table["class_index"] == cls)]
            for j, lang in enumerate(languages):
                vals = sub[sub["language"] == lang].set_index("type")["mean_diff"].reindex(list(DIFF_TYPES))
                label = f"{lang} ({ratio_groups[lang]})" if lang in ratio_groups else lang
                ax.bar(x + (j - (len(languages) - 1) / 2) * width, vals.fillna(0.0).to_numpy(), width,
                       color=colours[lang], label=label)
            ax.axhline(0, color="black", linewidth=0.6)
            ax.set_xticks(x, list(DIFF_TYPES))
            name = class_names[cls] if class_names is not None and cls < len(class_names) else str(cls)
            ax.set_title(f"{comp} - reference, class {name}", fontsize=9)
            if c == 0:
                ax.set_ylabel("mean cumulative SHAP diff")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Snakemake job
# --------------------------------------------------------------------------------------

def shap_compare_job(job: Job, *, threshold: float, compare: Sequence[str], classes: Sequence[int],
                     ratio_groups: Mapping[str, str], labels: Sequence[str]) -> None:
    """Snakemake job: compare models' SHAP values with the reference (balanced) model.

    input: ``reference`` (values parquet), ``others`` (values parquets, in the order of
    ``compare``), ``meta`` (dataset meta.json). params: ``threshold``, ``compare`` (names
    of the other models), ``classes`` (class indices to plot), ``ratio_groups`` ({language:
    ratio string}), ``labels`` (class names for the figure).
    output: ``cumulative`` (CSV: comparison, language, ratio_group, class_index, type,
    mean_diff, n_examples), ``informative`` (CSV: condition, language, class_index,
    share_informative, share_class_informative, n_examples; header only when meta has no
    informative tokens), ``figure`` (PNG).
    """
    others = as_list(job.input.others)
    names = as_list(compare)
    if len(others) != len(names):
        raise LangskewError(f"shap compare: {len(others)} input.others but params.compare has {len(names)} names")
    ratio_groups = {str(k): str(v) for k, v in ratio_groups.items()}
    meta = read_json(job.input.meta)
    reference = pd.read_parquet(job.input.reference)
    frames, values = [], {REFERENCE: reference}
    for name, path in zip(names, others):
        values[name] = pd.read_parquet(path)
        frames.append(cumulative_differences(reference, values[name], float(threshold)).assign(comparison=name))
    cumulative = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["language", "class_index", "type", "mean_diff", "n_examples", "comparison"])
    cumulative["ratio_group"] = cumulative["language"].map(ratio_groups)
    cumulative = cumulative[CUMULATIVE_COLUMNS]
    write_csv(cumulative, job.output.cumulative)
    informative = meta.get("informative_tokens")
    shares = [informative_share(v, informative).assign(condition=name) for name, v in values.items()] if informative else []
    write_csv(pd.concat(shares, ignore_index=True)[SHARE_COLUMNS] if shares else pd.DataFrame(columns=SHARE_COLUMNS),
              job.output.informative)
    fig = plot_cumulative(cumulative, [int(c) for c in classes], ratio_groups, labels)
    save_figure(fig, job.output.figure)
