"""Thin glue between Snakemake's ``script:`` directive and the package.

Every script in ``scripts/`` is three lines: import :func:`run` and the stage's job function,
and hand the function to :func:`run`. A job function reads

    def probe_job(job: Job, *, settings: dict, model: dict) -> None

``job`` carries the rule's inputs, outputs, threads, log file, wildcards and resources; the
rule's ``params`` arrive as keyword arguments, exactly: a param the function does not take,
or an argument without default that the rule does not pass, stops the job with a message
naming both before any work starts. The one exception is ``code_digest``, which every rule
passes so that a change of the package code reruns its jobs (:mod:`langskew.digest`): ``run``
leaves it out of the call. Logging (warnings and tracebacks too) goes to the rule's
log file.
"""

from __future__ import annotations

import inspect
import logging
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from langskew import devices
from langskew.curves import tensorboard_dir
from langskew.errors import LangskewError

#: The param every rule carries for Snakemake's rerun trigger alone; no job function takes it.
CODE_DIGEST = "code_digest"


@dataclass
class Job:
    """What Snakemake hands a job besides its params.

    ``input`` / ``output``: Snakemake named lists (attribute and index access).
    ``log_file``: the rule's log (None outside Snakemake). ``tensorboard``: the job's
    TensorBoard folder when the config turns TensorBoard logging on, else None.
    """

    input: Any = field(default_factory=list)
    output: Any = field(default_factory=list)
    threads: int = 1
    log_file: str | None = None
    wildcards: Any = None
    resources: Any = None
    rule: str = ""
    tensorboard: str | None = None


def setup_logging(log_path: str | None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    logging.captureWarnings(True)


def check_params(func: Callable[..., Any], params: dict[str, Any], rule: str = "") -> None:
    """The rule's params (``code_digest`` aside) match the job function's keyword arguments, or a
    LangskewError names the gap."""
    params = {k: v for k, v in params.items() if k != CODE_DIGEST}
    sig = inspect.signature(func)
    named = {n: p for n, p in list(sig.parameters.items())[1:]
             if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    extra = sorted(set(params) - set(named))
    missing = sorted(n for n, p in named.items() if p.default is p.empty and n not in params)
    if extra or missing:
        where = f"rule {rule!r} and {func.__module__}.{func.__name__}"
        parts = ([f"params the function does not take: {', '.join(extra)}"] if extra else []) + \
                ([f"arguments the rule does not pass: {', '.join(missing)}"] if missing else [])
        raise LangskewError(f"{where} disagree: " + "; ".join(parts))


def job_params(smk: Any) -> dict[str, Any]:
    """The rule's named params as a dict, ``code_digest`` left out (unnamed params are not allowed)."""
    params = dict(smk.params.items())
    if len(params) != len(smk.params):
        raise LangskewError(f"rule {smk.rule!r}: every param must be named")
    params.pop(CODE_DIGEST, None)
    return params


def requested_gpus(resources: Any) -> int | None:
    """The rule's ``gpu`` resource as an int, or None when the rule sets none."""
    if resources is None:
        return None
    value = dict(resources.items()).get("gpu") if hasattr(resources, "items") else getattr(resources, "gpu", None)
    if value is None or value == "":
        return None
    return int(value)


def check_package_source(scriptdir: str | None) -> None:
    """The imported package is the workflow's own (``<workflow>/src/langskew`` beside
    ``scripts/``), or a LangskewError names both: an environment built for another checkout
    (a conda prefix shared by two checkouts, a venv with another checkout installed) would
    otherwise run that checkout's code."""
    if not scriptdir or "://" in str(scriptdir):
        return
    own = Path(scriptdir).resolve().parent / "src" / "langskew"
    if not (own / "__init__.py").is_file():
        return  # the workflow is used without its sources (e.g. the package installed from a URL)
    import langskew

    imported = Path(langskew.__file__).resolve().parent
    if imported != own.resolve():
        raise LangskewError(
            f"this job imported langskew from {imported}, but the workflow's own package is {own}: "
            f"the environment was built for another checkout. Give each checkout its own conda "
            f"prefix (--conda-prefix, docs/cluster.md) or install this one (pip install -e {own.parent.parent})")


def run(smk: Any, func: Callable[..., Any]) -> Any:
    """Call ``func(Job(...), **params)`` for a Snakemake job."""
    log_path = smk.log[0] if len(smk.log) else None
    setup_logging(log_path)
    logger = logging.getLogger("langskew")
    gpus = requested_gpus(getattr(smk, "resources", None))
    devices.use_gpus(gpus)
    logger.info("%s", devices.environment_line(gpus))
    logger.info("rule %s: %s", smk.rule, func.__module__ + "." + func.__name__)
    try:
        check_package_source(getattr(smk, "scriptdir", None))
        devices.require_gpus(gpus)
        params = job_params(smk)
        check_params(func, params, smk.rule)
        job = Job(input=smk.input, output=smk.output, threads=int(smk.threads), log_file=log_path,
                  wildcards=smk.wildcards, resources=smk.resources, rule=smk.rule,
                  tensorboard=tensorboard_dir(getattr(smk, "config", None) or {}, log_path, smk.rule))
        return func(job, **params)
    except SystemExit:
        raise
    except BaseException:
        logger.error("rule %s failed:\n%s", smk.rule, traceback.format_exc())
        raise
