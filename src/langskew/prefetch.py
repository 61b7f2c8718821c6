"""Fetch every hub dataset and model the configuration names, into the caches the jobs use.

For clusters whose compute nodes have no internet: run ``snakemake prefetch`` once on the
login node (with network), then the workflow with ``HF_HUB_OFFLINE=1`` and
``HF_DATASETS_OFFLINE=1``. Each dataset is loaded through the *same function* its job calls
(``langskew.study_a.dataset`` for Study A, ``langskew.study_b.corpus.open_hub`` for Study B
corpora and parallel data) with the same arguments (path, config, split, revision, data
files, cache folder); each model through ``from_pretrained`` with its revision, which
fetches the tokenizer, config and weight files that ``load_classifier`` reads later. So the
offline job finds exactly what it asks for: a prepared split in the datasets cache
(``HF_DATASETS_CACHE``), or the chosen data files / model files in the hub cache
(``HF_HUB_CACHE``); both live under ``HF_HOME`` unless set separately. The report lists
each item, where it went and, when the hub answers, the commit to pin as ``revision``.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import pandas as pd

from langskew import hub as hubio
from langskew.io import write_table
from langskew.workflow import Job

logger = logging.getLogger(__name__)


def cache_locations() -> dict[str, str]:
    """Where ``datasets`` and ``huggingface_hub`` read and write (after HF_HOME & co.)."""
    import datasets
    from huggingface_hub import constants

    return {"HF_HOME": str(constants.HF_HOME), "HF_HUB_CACHE": str(constants.HF_HUB_CACHE),
            "HF_DATASETS_CACHE": str(datasets.config.HF_DATASETS_CACHE),
            "HF_HUB_OFFLINE": str(bool(constants.HF_HUB_OFFLINE)),
            "HF_DATASETS_OFFLINE": str(bool(datasets.config.HF_DATASETS_OFFLINE))}


def hub_items(cfg: dict) -> Iterator[dict[str, Any]]:
    """Every hub dataset split and model of the enabled studies, with the spec its job uses."""
    sa = cfg.get("study_a") or {}
    if sa.get("enabled", True):
        for name in sa.get("datasets", []):
            spec = cfg["datasets"][name]
            if spec["source"] == "hub":
                yield {"kind": "study_a_dataset", "name": name, "path": spec["hub"]["path"], "spec": spec}
        for name in sa.get("models", []):
            m = cfg["models"][name]
            if m["source"] == "hub":
                yield {"kind": "model", "name": name, "path": m["path"], "spec": m}
    sb = cfg.get("study_b") or {}
    if sb.get("enabled", False):
        for lang, spec in (sb.get("languages") or {}).items():
            if spec.get("source") == "hub":
                yield {"kind": "study_b_corpus", "name": lang, "path": spec["hub"]["path"], "spec": spec}
        par = sb.get("parallel") or {}
        if par.get("source") == "hub" and _real_runs(sb):
            yield {"kind": "study_b_parallel", "name": "parallel", "path": par["hub"]["path"], "spec": par}


def _real_runs(sb: dict) -> bool:
    return any(block.get("kind") == "real" and block.get("enabled", True) for block in sb.get("grid") or [])


def _fetch_study_a(item: dict) -> str:
    from langskew.study_a import dataset

    spec, hub = item["spec"], item["spec"]["hub"]
    done = []
    for split in dataset.SPLITS:
        for lang in (spec["languages"] if hub.get("name") else [None]):
            config = None if lang is None else str(hub["name"]).format(language=lang)
            frame, _ = dataset.load_hub_table(item["name"], hub, config, split, lang)
            done.append(f"{config or 'default'}/{split}: {len(frame)} rows")
    return "; ".join(done)


def _fetch_study_b(item: dict) -> str:
    from langskew.study_b import corpus

    spec = item["spec"]
    hub = spec["hub"]
    where = f"study_b.{'parallel' if item['kind'] == 'study_b_parallel' else 'languages.' + item['name']}"
    if item["kind"] == "study_b_parallel":
        splits = [hub.get("split", "train")]
    else:
        splits = [s for s in (hub.get("splits") or {"train": "train", "test": "test"}).values() if s]
        if corpus.file_mode(hub):
            splits = splits[:1]
    done = []
    for split in splits:
        ds = corpus.open_hub(hub, split, where)
        n = getattr(ds, "num_rows", None)
        done.append(f"{split}: {n if n is not None else 'streamed'} rows")
    return "; ".join(done)


def _fetch_model(item: dict) -> str:
    """Tokenizer, config and weights: the files ``load_classifier`` reads (the encoder without a head,
    so a checkpoint that already has a classification head of another size loads too)."""
    from transformers import AutoModel, AutoTokenizer

    m = item["spec"]
    kwargs = {"revision": m.get("revision"), "trust_remote_code": bool(m.get("trust_remote_code", False))}
    AutoTokenizer.from_pretrained(str(m["path"]), **kwargs)
    model = AutoModel.from_pretrained(str(m["path"]), **kwargs)
    return f"{type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"


def _commit(item: dict) -> str | None:
    """The commit a hub id resolves to at the configured revision (None offline or for folders)."""
    if hubio.is_local(item["path"]):
        return None
    try:
        from huggingface_hub import HfApi, constants

        if constants.HF_HUB_OFFLINE:
            return None
        rev = item["spec"].get("revision") if item["kind"] == "model" else item["spec"]["hub"].get("revision")
        info = HfApi().model_info if item["kind"] == "model" else HfApi().dataset_info
        return info(item["path"], revision=rev).sha
    except Exception as exc:  # informative only
        logger.info("no commit for %s: %s", item["path"], exc)
        return None


FETCHERS = {"study_a_dataset": _fetch_study_a, "study_b_corpus": _fetch_study_b,
            "study_b_parallel": _fetch_study_b, "model": _fetch_model}


def prefetch(cfg: dict) -> pd.DataFrame:
    """Load every hub item of ``cfg``; return one row per item (kind, name, path, revision, commit, what)."""
    rows = []
    caches = cache_locations()
    for key, value in caches.items():
        logger.info("%s = %s", key, value)
    for item in hub_items(cfg):
        revision = item["spec"].get("revision") if item["kind"] == "model" else item["spec"]["hub"].get("revision")
        logger.info("fetching %s %s (%s @ %s)", item["kind"], item["name"], item["path"], revision)
        what = FETCHERS[item["kind"]](item)
        cache = ("local folder" if hubio.is_local(item["path"]) else
                 caches["HF_HUB_CACHE"] if item["kind"] == "model" else
                 f"{caches['HF_DATASETS_CACHE']} + {caches['HF_HUB_CACHE']}")
        rows.append({"kind": item["kind"], "name": item["name"], "path": item["path"], "revision": revision,
                     "commit": _commit(item), "cache": cache, "fetched": what})
        logger.info("  -> %s", what)
    if not rows:
        logger.info("the configuration names no hub dataset or model: nothing to fetch")
    return pd.DataFrame(rows, columns=["kind", "name", "path", "revision", "commit", "cache", "fetched"])


def report_lines(table: pd.DataFrame, caches: dict[str, str]) -> list[str]:
    """What to tell the user: where everything went and how to run offline."""
    lines = ["langskew prefetch: every hub dataset and model of this configuration is cached.", ""]
    lines += [f"  {k} = {v}" for k, v in caches.items()]
    lines.append("")
    for row in table.itertuples():
        pin = f" (pin revision: {row.commit})" if row.commit and row.commit != row.revision else ""
        lines.append(f"  {row.kind:17s} {row.name:10s} {row.path} @ {row.revision}{pin}: {row.fetched}")
    lines += ["", "Run the jobs offline with the same HF_HOME (or HF_HUB_CACHE / HF_DATASETS_CACHE):",
              "  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1"]
    return lines


def prefetch_job(job: Job, *, config: dict) -> None:
    """Rule ``prefetch``: ``config`` (the whole validated config) -> output.csv / output.md."""
    table = prefetch(dict(config))
    lines = report_lines(table, cache_locations())
    print("\n".join(lines), flush=True)
    write_table(table, job.output.csv, job.output.md, title="Hub datasets and models fetched by `snakemake prefetch`")
    if table.empty:
        logger.info("nothing fetched")

