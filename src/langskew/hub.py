"""Hugging Face hub access shared by both studies: loading with named errors, and file selection.

Every hub dataset of the workflow goes through :func:`load_hub_dataset`, so that a failure
(an unknown repo, a config or split that does not exist, a repo that ships only a loading
script, no network on a compute node) becomes a :class:`LangskewError` that names the dataset
and says what to do, instead of a traceback from ``datasets``.

Large datasets can be read from a chosen set of their files (``data_files`` patterns and/or
the first ``shards`` files): :func:`resolve_data_files` lists the repo's files (or, offline,
the listing the hub cache holds), downloads only the chosen ones into the hub cache and
returns their local paths. Loading those files (optionally ``streaming``) never downloads or
converts the rest of the dataset, and works with ``HF_HUB_OFFLINE=1`` once the files are
cached (see ``langskew.prefetch``).
"""

from __future__ import annotations

import fnmatch
import gc
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from langskew.errors import LangskewError
from langskew.paths import as_list

logger = logging.getLogger(__name__)

#: Repos that ship only a loading script (refused by ``datasets`` >= 4) -> a maintained parquet copy.
PARQUET_COPIES = {
    "mteb/amazon_reviews_multi": "mteb/AmazonReviewsClassification",
    "amazon_reviews_multi": "mteb/AmazonReviewsClassification",
    "defunct-datasets/amazon_reviews_multi": "mteb/AmazonReviewsClassification",
}

#: File extensions -> the ``datasets`` builder that reads them.
BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text",
            ".arrow": "arrow"}


def _script_hint(path: str) -> str:
    copy = PARQUET_COPIES.get(path) or PARQUET_COPIES.get(Path(path).name)  # a hub id, or a local clone
    if copy:
        return f"use the parquet copy {copy!r} instead (hub.path: {copy})"
    return ("use a copy of it in parquet format (many script datasets have one on the hub, e.g. under "
            "the 'refs/convert/parquet' revision), or point hub.path at a local folder of parquet files")


def explain_hub_error(exc: Exception, where: str, path: str) -> LangskewError:
    """A LangskewError naming the dataset, with a suggestion for the usual causes."""
    text = str(exc)
    if "Dataset scripts are no longer supported" in text or "trust_remote_code" in text:
        return LangskewError(f"{where}: the hub repo {path!r} provides only a loading script, which the "
                             f"installed datasets library no longer runs; {_script_hint(path)}")
    if "OfflineModeIsEnabled" in text or "offline" in text.lower():
        return LangskewError(f"{where}: {path!r} is not in the local cache (hub cache or datasets' cache) and "
                             f"HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set; load it once with network access "
                             f"(the workflow: `snakemake prefetch`, docs/paper-config.md) ({text})")
    if isinstance(exc, ConnectionError) or "Couldn't reach" in text:
        return LangskewError(f"{where}: the hub cannot be reached for {path!r}; on a machine without internet "
                             f"run `snakemake prefetch` where there is network, then set HF_HUB_OFFLINE=1 "
                             f"HF_DATASETS_OFFLINE=1 ({text})")
    if type(exc).__name__ == "DatasetNotFoundError":
        return LangskewError(f"{where}: no dataset {path!r} on the hub (or it is gated/private: log in with "
                             f"`hf auth login` or set HF_TOKEN) ({text})")
    return LangskewError(f"{where}: could not load {path!r}: {type(exc).__name__}: {text}")


def cached_snapshot(path: str, revision: str | None = None) -> Path | None:
    """Offline (``HF_HUB_OFFLINE``): the folder of a hub dataset repo's snapshot in the hub cache,
    as ``snapshot_download`` or ``datasets`` left it (None online, for a local folder or a builder
    name, or when the cache holds no snapshot of the repo)."""
    from huggingface_hub import constants, snapshot_download

    if not constants.HF_HUB_OFFLINE or is_local(path) or path in BUILDERS.values():
        return None
    try:
        return Path(snapshot_download(path, repo_type="dataset", revision=revision))
    except Exception:  # not cached: datasets' own cache may still hold it
        return None


def load_hub_dataset(where: str, path: str, **kwargs: Any):
    """``datasets.load_dataset(path, **kwargs)`` with every failure turned into a named LangskewError.

    Offline, a repo whose snapshot is in the hub cache is read from there (its README's configs
    and data files, as online), whichever cache the download filled: ``datasets`` alone reads
    offline only from its own Arrow cache.
    """
    import datasets

    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    snapshot = cached_snapshot(path, kwargs.get("revision"))
    if snapshot is not None:
        logger.info("%s: %s read offline from the hub cache (%s)", where, path, snapshot)
        kwargs.pop("revision", None)
    try:
        return datasets.load_dataset(str(snapshot or path), **kwargs)
    except LangskewError:
        raise
    except Exception as exc:  # datasets raises RuntimeError, ValueError, OSError, its own errors...
        raise explain_hub_error(exc, where, path) from exc


def stream_batches(ds: Any, batch_size: int) -> Iterator[dict]:
    """The batches of ``ds`` (a ``datasets`` Dataset or IterableDataset), as ``ds.iter`` gives them.

    A streaming dataset sits in a reference cycle, so it outlives its last use until the garbage
    collector runs, perhaps only at interpreter exit, where freeing its Arrow readers while Arrow
    itself is being torn down can abort the process after the job's work is done ("terminate called
    without an active exception": apache/arrow#45214, huggingface/datasets#7566). When iteration
    ends, or stops early and the generator is closed, the collector is therefore run at once.
    The caller passes its only reference (``stream_batches(open(...), n)``, not a kept variable).
    """
    import datasets

    streaming = isinstance(ds, datasets.IterableDataset)
    try:
        yield from ds.iter(batch_size=batch_size)
    finally:
        del ds
        if streaming:
            gc.collect()


def _files_under(root: Path) -> list[str]:
    """Every file below ``root``, as sorted paths relative to it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def is_local(path: str) -> bool:
    return Path(path).is_dir()


def _list_hub_files(repo: str, revision: str | None, patterns: Sequence[str], where: str) -> list[str]:
    """Files of a hub dataset repo (relative paths); offline: as the hub cache knows them."""
    from huggingface_hub import HfApi, constants

    try:
        if constants.HF_HUB_OFFLINE:
            return _cached_repo_files(repo, revision)
        return sorted(HfApi().list_repo_files(repo, repo_type="dataset", revision=revision))
    except Exception as exc:
        raise explain_hub_error(exc, where, repo) from exc


def _cached_repo_files(repo: str, revision: str | None) -> list[str]:
    """Offline listing of a dataset repo from the hub cache, without network.

    Recent versions of ``huggingface_hub`` cache the repo's whole file listing at the commit
    ``snapshot_download`` fetched from (``trees/<commit>.json``), also when it fetched only some
    files (the chosen shards), and refuse offline a snapshot that lacks a listed file the call asks
    for. Files are then chosen from that listing exactly as online, and only the chosen ones must be
    in the cache. Without a cached listing, the files of the cached snapshot are the listing.
    """
    from huggingface_hub import snapshot_download

    try:
        from huggingface_hub import get_cached_repo_tree
        from huggingface_hub.errors import CachedRepoTreeNotFoundError
    except ImportError:  # a huggingface_hub without a tree cache
        pass
    else:
        try:
            return sorted(f.path for f in get_cached_repo_tree(repo, repo_type="dataset", revision=revision))
        except CachedRepoTreeNotFoundError:
            pass
    return _files_under(Path(snapshot_download(repo, repo_type="dataset", revision=revision)))


def resolve_data_files(path: str, revision: str | None, data_files: str | Iterable[str] | None,
                       shards: int | None, where: str) -> list[str]:
    """Local paths of the chosen data files of a hub repo or local hub-style folder.

    ``data_files``: glob patterns relative to the repo root (default: every file with a known
    data extension); ``shards``: keep the first N matching files in sorted order. Only the
    chosen files are downloaded (into the hub cache, where offline runs find them).
    """
    patterns = as_list(data_files)
    if is_local(path):
        root = Path(path)
        names = _files_under(root)
    else:
        names = _list_hub_files(path, revision, patterns, where)
    if patterns:
        chosen = [n for n in names if _matches(n, patterns) and Path(n).suffix in BUILDERS]
    else:  # every parquet file (the hub's own format), else every file of a known data format
        chosen = [n for n in names if n.endswith(".parquet")] or [n for n in names if Path(n).suffix in BUILDERS]
    if not chosen:
        raise LangskewError(f"{where}: no data file of {path!r} matches {patterns or 'a data extension'} "
                            f"({len(names)} files in the repo)")
    if shards is not None:
        chosen = chosen[:int(shards)]
    if not is_local(path):
        from huggingface_hub import snapshot_download

        try:
            root = Path(snapshot_download(path, repo_type="dataset", revision=revision, allow_patterns=chosen))
        except Exception as exc:
            raise explain_hub_error(exc, where, path) from exc
    logger.info("%s: %d data file(s) of %s: %s%s", where, len(chosen), path, chosen[:3],
                " ..." if len(chosen) > 3 else "")
    return [str(root / n) for n in chosen]


def builder_for(files: Sequence[str], where: str) -> str:
    """The ``datasets`` builder of a list of files (they must share one format)."""
    kinds = {BUILDERS.get(Path(f).suffix) for f in files}
    if len(kinds) != 1 or None in kinds:
        raise LangskewError(f"{where}: data files must share one format of {sorted(BUILDERS)}, got {files[:3]}")
    return kinds.pop()
