"""Thin glue between Snakemake's ``script:`` directive and the package.

Every script in ``scripts/`` is three lines: import :func:`run` and a job function of the
installed package, and hand the function to :func:`run`, which sends logging (and warnings,
tracebacks) to the rule's log file and passes the rule's inputs, outputs, params and threads
as keyword arguments, plus ``tensorboard``: the job's TensorBoard folder when the config
turns TensorBoard logging on, else None (see :func:`langskew.curves.tensorboard_dir`).
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any, Callable

from langskew.curves import tensorboard_dir


def setup_logging(log_path: str | None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    logging.captureWarnings(True)


def run(smk: Any, func: Callable[..., Any]) -> Any:
    """Call ``func(input=..., output=..., params=..., threads=..., log=...)`` for a Snakemake job."""
    log_path = smk.log[0] if len(smk.log) else None
    setup_logging(log_path)
    logger = logging.getLogger("langskew")
    logger.info("rule %s: %s", smk.rule, func.__module__ + "." + func.__name__)
    try:
        return func(input=smk.input, output=smk.output, params=smk.params, threads=smk.threads,
                    log=log_path, wildcards=smk.wildcards, resources=smk.resources,
                    tensorboard=tensorboard_dir(getattr(smk, "config", None) or {}, log_path, smk.rule))
    except SystemExit:
        raise
    except BaseException:
        logger.error("rule %s failed:\n%s", smk.rule, traceback.format_exc())
        raise
