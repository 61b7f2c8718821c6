"""Class ratios of a language, e.g. ``"1:2:3"``: parsed without pandas or scikit-learn, so
that the workflow's config checks (run while Snakemake parses the Snakefile) stay light."""

from __future__ import annotations

from fractions import Fraction

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
