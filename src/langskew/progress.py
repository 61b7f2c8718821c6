"""Progress bars of every stage: :func:`progress`, tqdm that writes at most every
``LOG_INTERVAL`` seconds when the output is not a terminal.

A job on a cluster writes its progress bars into a log file (SLURM's output or the rule's log),
where tqdm's default of a line every 0.1 s would fill the log with carriage-return updates. On a
terminal the bar keeps tqdm's defaults.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm import tqdm

#: Seconds between two updates of a bar written to a file (a log), not a terminal.
LOG_INTERVAL = 10.0


def writes_to_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default: sys.stderr, where tqdm writes) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, updated at most every ``LOG_INTERVAL`` seconds unless it
    writes to a terminal (an explicit ``mininterval`` wins)."""
    if not writes_to_terminal(kwargs.get("file")):
        kwargs.setdefault("mininterval", LOG_INTERVAL)
    return tqdm(iterable, **kwargs)
