"""Class ratios of a language, e.g. ``"1:2:3"``, and the subset sizes they give: computed
without pandas or scikit-learn, so that the workflow's config checks (run while Snakemake parses
the Snakefile) stay light."""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

from langskew.errors import LangskewError


def parse_ratio(ratio: str, n_classes: int, language: str = "?") -> list[Fraction]:
    """Ratio string -> r_c as exact fractions of the largest part."""
    parts = [p.strip() for p in str(ratio).split(":")]
    if len(parts) != n_classes:
        raise LangskewError(f"ratio {ratio!r} for language {language!r} has {len(parts)} parts "
                            f"but there are {n_classes} labels")
    try:
        values = [Fraction(p) for p in parts]
    except (ValueError, ZeroDivisionError):
        raise LangskewError(f"ratio {ratio!r} for language {language!r} is not numbers joined by ':'") from None
    if any(v <= 0 for v in values):
        raise LangskewError(f"ratio {ratio!r} for language {language!r} has a part <= 0")
    top = max(values)
    return [v / top for v in values]


def _sizes(r: Sequence[Fraction], split_size: int, n_classes: int) -> list[int]:
    return [int(rc * split_size / n_classes) - 1 for rc in r]


def subset_sizes(ratio: str, split_size: int, n_classes: int, language: str = "?") -> tuple[list[int], list[int]]:
    """Rows per class (imbalanced, balanced) for one language and split."""
    r = parse_ratio(ratio, n_classes, language)
    mean = sum(r, Fraction(0)) / len(r)
    imbalanced, balanced = _sizes(r, split_size, n_classes), _sizes([mean] * n_classes, split_size, n_classes)
    if min(imbalanced + balanced) < 1:
        raise LangskewError(f"split size {split_size} for language {language!r} is too small for "
                            f"ratio {ratio!r}: a class would get no rows")
    return imbalanced, balanced
