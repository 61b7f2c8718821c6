"""Files named by a path or a glob (light: rules import it while the workflow is parsed)."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable


def as_list(patterns: str | os.PathLike | Iterable[str] | None) -> list[str]:
    """One path/glob or a list of them, as a list of strings (None gives [])."""
    if patterns is None:
        return []
    if isinstance(patterns, (str, os.PathLike)):
        return [str(patterns)]
    return [str(p) for p in patterns]


def matching_files(pattern: str | os.PathLike) -> list[str]:
    """The files (not folders) a path or glob names, sorted; ``~`` is expanded; [] when none."""
    found = glob.glob(str(Path(pattern).expanduser()), recursive=True)
    return sorted(p for p in found if Path(p).is_file())
