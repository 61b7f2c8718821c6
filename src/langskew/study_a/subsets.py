"""Balanced and imbalanced subsets, exactly as in Study A ("Subset construction").

Per language the ratio string ("1:2:3") gives r_c, divided by its maximum; class c keeps
N_c = int(r_c * split_size / C) - 1 rows (exact fractions, so 23,999 comes out exactly),
namely the first N_c rows of that language and class in original order. The balanced
variant gives every class the mean of the r_c: same size per language, balanced overall.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import pandas as pd

from langskew import io
from langskew.errors import LangskewError
from langskew.study_a.ratios import parse_ratio, subset_sizes
from langskew.weights import class_weight_table
from langskew.workflow import Job

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
VARIANTS = ("balanced", "imbalanced")
COUNT_COLUMNS = ["split", "variant", "language", "label", "n"]


def _split_size(frame: pd.DataFrame, language: str, split: str, split_sizes: Mapping[str, Any] | None) -> int:
    size = (split_sizes or {}).get(split)
    return int((frame["language"] == language).sum()) if size is None else int(size)


def plan_subsets(frames: Mapping[str, pd.DataFrame], languages: Sequence[str], ratios: Mapping[str, str],
                 n_classes: int, split_sizes: Mapping[str, Any] | None) -> dict[tuple[str, str, str], list[int]]:
    """{(variant, split, language): rows per class}, after checking every cell has enough rows.

    All shortfalls are collected first and reported together, before any subset is built.
    """
    plan, short = {}, []
    for split in SPLITS:
        if split not in frames:
            raise LangskewError(f"split {split!r} missing from the dataset")
        frame = frames[split]
        available = frame.groupby(["language", "label"]).size()
        for lang in languages:
            if lang not in ratios:
                raise LangskewError(f"no ratio given for language {lang!r}")
            imbalanced, balanced = subset_sizes(ratios[lang], _split_size(frame, lang, split, split_sizes),
                                                n_classes, lang)
            for variant, per_class in (("imbalanced", imbalanced), ("balanced", balanced)):
                plan[(variant, split, lang)] = per_class
                for label, need in enumerate(per_class):
                    have = int(available.get((lang, label), 0))
                    if have < need:
                        short.append(f"split {split!r}, language {lang!r}, label {label}: "
                                     f"needs {need} rows, {have} available ({variant})")
    if short:
        raise LangskewError("not enough rows for the subsets: " + "; ".join(short))
    return plan


def _take_first(frame: pd.DataFrame, language: str, per_class: Sequence[int]) -> pd.Index:
    """Index of the first N_c rows of ``language`` and class c, in original order."""
    rows = frame[frame["language"] == language]
    picked = [rows.index[rows["label"].to_numpy() == c][:n] for c, n in enumerate(per_class)]
    return picked[0].append(picked[1:]) if len(picked) > 1 else picked[0]


def _counts(df: pd.DataFrame, split: str, variant: str, languages: Sequence[str], n_classes: int) -> pd.DataFrame:
    grid = pd.MultiIndex.from_product([list(languages), range(n_classes)], names=["language", "label"])
    n = df.groupby(["language", "label"]).size().reindex(grid, fill_value=0)
    out = n.rename("n").reset_index()
    out.insert(0, "variant", variant)
    out.insert(0, "split", split)
    return out[COUNT_COLUMNS]


def build_subsets(frames: Mapping[str, pd.DataFrame], languages: Sequence[str], ratios: Mapping[str, str],
                  n_classes: int, split_sizes: Mapping[str, Any] | None = None
                  ) -> tuple[dict[tuple[str, str], pd.DataFrame], pd.DataFrame]:
    """Build every (variant, split) subset and a long table of row counts.

    Rows keep their original order (a subset is a row selection of its split). The counts
    table also has variant "original" for the untouched test split.
    """
    plan = plan_subsets(frames, languages, ratios, n_classes, split_sizes)
    subsets, counts = {}, []
    for split in SPLITS:
        frame = frames[split].reset_index(drop=True)
        for variant in VARIANTS:
            index = pd.Index([], dtype="int64")
            for lang in languages:
                index = index.append(_take_first(frame, lang, plan[(variant, split, lang)]))
            subset = frame.loc[index.sort_values()].reset_index(drop=True)
            subsets[(variant, split)] = subset
            counts.append(_counts(subset, split, variant, languages, n_classes))
    test = frames["test"]
    counts.append(_counts(test[test["language"].isin(languages)], "test", "original", languages, n_classes))
    return subsets, pd.concat(counts, ignore_index=True)


def subsets_job(job: Job, *, languages: Sequence[str], labels: Sequence[str], n_classes: int,
                ratios: Mapping[str, str], split_sizes: Mapping[str, int | None]) -> None:
    """Snakemake job: normalised splits -> subset parquets, counts.csv, class_weights.csv."""
    n_classes = int(n_classes)
    if len(labels) != n_classes:
        raise LangskewError(f"labels {list(labels)} do not match n_classes={n_classes}")
    frames = {split: pd.read_parquet(getattr(job.input, split)) for split in SPLITS}
    subsets, counts = build_subsets(frames, list(languages), dict(ratios), n_classes, dict(split_sizes or {}))
    tables = []
    for variant in VARIANTS:
        table = class_weight_table(subsets[(variant, "train")], n_classes)
        table.insert(0, "variant", variant)
        tables.append(table)
    for (variant, split), df in subsets.items():
        io.write_parquet(df, getattr(job.output, f"{variant}_{split}"))
        logger.info("%s_%s: %d rows", variant, split, len(df))
    io.write_csv(counts, job.output.counts)
    io.write_csv(pd.concat(tables, ignore_index=True), job.output.class_weights)
