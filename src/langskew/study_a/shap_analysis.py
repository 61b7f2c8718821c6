"""SHAP attributions of fine-tuned classifiers and their shift under class imbalance (Study A).

The studies' method: a Partition explainer with a text masker over the model's class
*probabilities*; the base value is the output on the fully masked input. Token types come
from the balanced (reference) model's SHAP value per token and class: positive
(> threshold), negative (< -threshold), neutral (|v| <= threshold). For every example and
class the difference SHAP_other - SHAP_reference is summed over the tokens of each type,
plus the base-value difference, and averaged per language over the examples that have a
token of the type (an example without one is left out, not counted as 0). The values
themselves are computed by :mod:`langskew.study_a.shap_fast` (shap's algorithm, batched
across examples).

On-disk format of one model's values (one parquet, long format): columns ``id``,
``language``, ``label``, ``token_index``, ``token``, ``class_index``, ``value``. The base
value of each example and class is stored in the same frame as a row with
``token_index = -1`` and ``token = "<base>"``, so one file holds everything and the
efficiency property reads ``sum(value) == f(x)`` per (id, class).

Pair tasks (XNLI): premise and hypothesis are joined as ``premise <sep> hypothesis`` (the
tokenizer's sep token) so that one text masker sees both; the masker is told to never mask
that separator, and the model function splits each masked string on it and encodes the
two halves as a real pair (token type ids, the pair template), exactly as in fine-tuning.
The separator's own SHAP value is therefore always 0.
"""

from __future__ import annotations

import logging
import string
import time
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError
from langskew.io import read_json, save_figure, write_csv, write_parquet
from langskew.study_a.probe import check_frame, load_for_inference, model_source, param, subsample

log = logging.getLogger(__name__)

BASE_INDEX = -1
BASE_TOKEN = "<base>"
TOKEN_TYPES = ("positive", "negative", "neutral")
DIFF_TYPES = TOKEN_TYPES + ("base",)
VALUE_COLUMNS = ["id", "language", "label", "token_index", "token", "class_index", "value"]
KEYS = ["id", "class_index", "token_index"]


# --------------------------------------------------------------------------------------
# Explaining one model
# --------------------------------------------------------------------------------------

def probability_function(model: Any, tokenizer: Any, batch_size: int, max_length: int, pair: bool):
    """The plain model function: ``f(list of str) -> (n, C)`` class probabilities, ``batch_size`` strings a call.

    Pairs are split at the first separator token and encoded as a pair. This is the
    function a one-example-at-a-time ``shap.Explainer`` would call; :func:`explain` uses
    the batched :class:`langskew.study_a.shap_fast.ProbabilityModel`, which computes the same
    probabilities (kept for comparisons).
    """
    from langskew.study_a.shap_fast import ProbabilityModel

    fast = ProbabilityModel(model, tokenizer, max_length, pair, precision="fp32")

    def f(texts) -> np.ndarray:
        texts = [str(t) for t in texts]
        return np.concatenate([fast(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
                              or [np.zeros((0, int(model.config.num_labels)))])

    return f


def truncate_texts(tokenizer: Any, text: str, text_pair: str | None, max_length: int) -> tuple[str, str | None]:
    """Cut ``text`` (and ``text_pair``) to the characters the model sees at ``max_length``.

    Tokens past the truncation point cannot change the output, so explaining them would
    only spend model evaluations on zeros.
    """
    enc = tokenizer(text, text_pair, truncation=True, max_length=max_length, return_offsets_mapping=True)
    seq_ids = enc.sequence_ids(0)
    ends = {0: 0, 1: 0}
    for sid, (_, end) in zip(seq_ids, enc["offset_mapping"]):
        if sid is not None:
            ends[sid] = max(ends[sid], end)
    return text[:ends[0]], (None if text_pair is None else text_pair[:ends[1]])


def joined_inputs(tokenizer: Any, df: pd.DataFrame, max_length: int) -> tuple[list[str], bool]:
    """Strings handed to the explainer (pairs joined with the sep token) and whether it is a pair task."""
    pair = bool(df["text_pair"].notna().any())
    if pair and tokenizer.sep_token is None:
        raise LangskewError("pair task but the tokenizer has no sep_token to join premise and hypothesis")
    out = []
    for text, text_pair in zip(df["text"].astype(str), df["text_pair"]):
        a, b = truncate_texts(tokenizer, text, str(text_pair) if pair else None, max_length)
        out.append(f"{a} {tokenizer.sep_token} {b}" if pair else a)
    return out, pair


def explanation_rows(row: pd.Series, tokens: Sequence[str], values: np.ndarray, base: np.ndarray) -> pd.DataFrame:
    """Long-format rows for one example: every (token, class) value plus the base rows."""
    n_tok, n_cls = values.shape
    token_index = np.concatenate([np.repeat(np.arange(n_tok), n_cls), np.full(n_cls, BASE_INDEX)])
    token = np.concatenate([np.repeat(np.asarray(tokens, dtype=object), n_cls), np.full(n_cls, BASE_TOKEN, dtype=object)])
    class_index = np.concatenate([np.tile(np.arange(n_cls), n_tok), np.arange(n_cls)])
    value = np.concatenate([values.reshape(-1), np.asarray(base, dtype=np.float64).reshape(-1)])
    return pd.DataFrame({"id": str(row["id"]), "language": str(row["language"]), "label": int(row["label"]),
                         "token_index": token_index, "token": token, "class_index": class_index,
                         "value": value})


def explain(model: Any, tokenizer: Any, df: pd.DataFrame, batch_size: int = 64, max_evals: int = 500,
            seed: int = 0, max_length: int = 512, labels: Sequence[str] | None = None,
            precision: str = "auto", max_batch_tokens: int | None = None) -> pd.DataFrame:
    """SHAP values (Partition explainer, text masker) of class probabilities for every row of ``df``.

    Returns the long frame described in the module docstring (base values as
    ``token_index = -1`` rows). The values are those of ``shap.Explainer`` with shap's
    text masker, ``max_evals`` and its default explainer batch, one example at a time;
    ``batch_size`` examples are explained together so that one model call evaluates all
    their masked inputs (see :mod:`langskew.study_a.shap_fast`). ``precision``: "auto" (bf16
    autocast on GPUs that support it, else fp16; fp32 on CPU), "fp32", "bf16" or "fp16".
    ``seed`` seeds the explainer's tie-breaking draws.
    """
    import torch
    from tqdm.auto import tqdm

    from langskew.study_a.shap_fast import ProbabilityModel, explain_texts, text_masker

    check_frame(df, ("id", "language", "label", "text", "text_pair"))
    n_classes = int(model.config.num_labels)
    names = list(labels) if labels is not None else [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        raise LangskewError(f"labels {names} do not match the model's num_labels={n_classes}")
    torch.manual_seed(seed)
    model.eval()
    inputs, pair = joined_inputs(tokenizer, df, max_length)
    f = ProbabilityModel(model, tokenizer, max_length, pair, precision=precision, max_batch_tokens=max_batch_tokens)
    start = time.perf_counter()
    with tqdm(total=len(df), desc="shap", unit="example") as bar:
        explained = explain_texts(f, text_masker(tokenizer, pair), inputs, max_evals=max_evals,
                                  n_parallel=batch_size, seed=seed, pair=pair, progress=bar.update)
    if len(df):
        log.info("shap: %d examples in %.1f s (%.2f examples/s); %d distinct masked inputs, %d tokens, "
                 "%.0f%% of computed positions real (precision %s)", len(df), time.perf_counter() - start,
                 len(df) / max(time.perf_counter() - start, 1e-9), f.n_sequences, f.n_tokens,
                 100 * f.n_tokens / max(f.n_padded, 1), precision)
    frames = [explanation_rows(row, e.tokens, e.values, e.base) for (_, row), e in zip(df.iterrows(), explained)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(VALUE_COLUMNS, [str, str, int, int, str, int, float])})
    return pd.concat(frames, ignore_index=True)[VALUE_COLUMNS]


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
# Snakemake jobs
# --------------------------------------------------------------------------------------

def shap_job(input, output, params, threads=1, log=None, **_) -> None:
    """Snakemake job: SHAP values of one fine-tuned model on (a sample of) the test parquet.

    input: ``model`` (model dir), ``data`` (test parquet). params (flat or inside
    ``params.settings``): ``n_examples`` (None = all), ``random_state``, ``batch_size``
    (examples explained together), ``max_evals``, ``max_length``, ``precision`` (auto/fp32/
    bf16/fp16, CUDA only), ``labels`` (class names, optional). output[0]: values parquet
    (see module docstring).
    """
    import torch

    torch.set_num_threads(max(1, int(threads or 1)))
    path, spec = model_source(input, params)
    df = pd.read_parquet(input.data)
    check_frame(df, ("id", "language", "label", "text", "text_pair"))
    seed = int(param(params, "random_state", 0))
    df = subsample(df, param(params, "n_examples"), seed)
    tokenizer, model = load_for_inference(path, spec)
    values = explain(model, tokenizer, df, batch_size=int(param(params, "batch_size", 64)),
                     max_evals=int(param(params, "max_evals", 500)), seed=seed,
                     max_length=int(param(params, "max_length", 512)), labels=param(params, "labels"),
                     precision=str(param(params, "precision", "auto")))
    write_parquet(values, output[0])


def _as_list(x: Any) -> list:
    return [x] if isinstance(x, str) else list(x)


def shap_compare_job(input, output, params, threads=1, log=None, **_) -> None:
    """Snakemake job: compare models' SHAP values with the reference (balanced) model.

    input: ``reference`` (values parquet), ``others`` (values parquets, in the order of
    params.compare), ``meta`` (dataset meta.json). params: ``threshold``, ``classes``
    (class indices to plot), ``compare`` (names of the other models), ``ratio_groups``
    ({language: ratio string}), ``reference`` (name, optional, default "balanced"),
    ``labels`` (class names for the figure, optional; else meta.json's).
    output: ``cumulative`` (CSV: comparison, language, ratio_group, class_index, type,
    mean_diff, n_examples), ``informative`` (CSV: condition, language, class_index,
    share_informative, share_class_informative, n_examples; header only when meta has no
    informative tokens), ``figure`` (PNG).
    """
    others = _as_list(input.others)
    names = _as_list(param(params, "compare", []))
    if len(others) != len(names):
        raise LangskewError(f"shap compare: {len(others)} input.others but params.compare has {len(names)} names")
    ratio_groups = {str(k): str(v) for k, v in (param(params, "ratio_groups") or {}).items()}
    meta = read_json(input.meta)
    reference = pd.read_parquet(input.reference)
    ref_name = param(params, "reference", "balanced")
    frames, values = [], {ref_name: reference}
    for name, path in zip(names, others):
        values[name] = pd.read_parquet(path)
        table = cumulative_differences(reference, values[name], float(param(params, "threshold", 0.01)))
        frames.append(table.assign(comparison=name))
    cumulative = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["language", "class_index", "type", "mean_diff", "n_examples", "comparison"])
    cumulative["ratio_group"] = cumulative["language"].map(ratio_groups)
    cumulative = cumulative[["comparison", "language", "ratio_group", "class_index", "type", "mean_diff", "n_examples"]]
    write_csv(cumulative, output.cumulative)
    informative = meta.get("informative_tokens")
    shares = [informative_share(v, informative).assign(condition=name) for name, v in values.items()] if informative else []
    share_cols = ["condition", "language", "class_index", "share_informative", "share_class_informative", "n_examples"]
    write_csv(pd.concat(shares, ignore_index=True)[share_cols] if shares else pd.DataFrame(columns=share_cols),
              output.informative)
    classes = [int(c) for c in (param(params, "classes") or sorted(set(cumulative["class_index"])))]
    fig = plot_cumulative(cumulative, classes, ratio_groups, param(params, "labels") or meta.get("labels"))
    save_figure(fig, output.figure)
