"""Study B corpora: documents per base language and parallel sentence pairs.

Sources (``study_b.languages.{lang}.source``):

* ``hub`` - ``datasets.load_dataset(path, name, split=..., revision=...)`` with a text
  column (e.g. TinyStories); also a local hub-style folder (parquet files + README.md).
* ``local`` - text files or globs per split; one document per file, per blank-line
  separated block or per line (``document_split``).
* ``synthetic`` - the English-like / French-like generator of :mod:`synthetic_lang`.

A split that a source does not provide (``test: null``) is carved from the end of the
train documents (``test_fraction``). Parallel pairs (``study_b.parallel``) come from the
synthetic generator, a hub dataset with two text columns (e.g. Europarl fr-en, where a
column may be a dotted path such as ``translation.en``) or local files.

Outputs: ``corpus/{lang}/{train,test}.parquet`` (column ``text``, one row per document)
and ``corpus/parallel.parquet`` (one column per language).
"""

from __future__ import annotations

import glob
import logging
import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from langskew.errors import LangskewError
from langskew.io import write_parquet
from langskew.study_b import synthetic_lang

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
SOURCES = ("hub", "local", "synthetic")
DOCUMENT_SPLITS = ("file", "blank_line", "line")


# ---------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------
def _field(row: dict, column: str) -> Any:
    """A row's value for ``column``; a dotted name walks nested dicts (``translation.en``)."""
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            raise LangskewError(f"column {column!r} is missing (row keys: {sorted(row)})")
        value = value[part]
    return value


def _load_hub(hub: dict, split_name: str, limit: int | None):
    """A hub split as a ``datasets.Dataset`` (the first ``limit`` rows if given)."""
    import datasets

    if not hub.get("path"):
        raise LangskewError("hub source: key 'path' is missing")
    split = split_name if limit is None else f"{split_name}[:{int(limit)}]"
    logger.info("loading hub dataset %s (%s), split %s", hub["path"], hub.get("name"), split)
    return datasets.load_dataset(hub["path"], hub.get("name"), split=split, revision=hub.get("revision"),
                                 cache_dir=hub.get("cache_dir"))


def hub_documents(hub: dict, split_name: str, limit: int | None = None) -> list[str]:
    """Documents of one hub split from the text column ``hub["text_column"]`` (default ``text``)."""
    ds = _load_hub(hub, split_name, limit)
    column = hub.get("text_column", "text")
    top = column.split(".")[0]
    if top not in ds.column_names:
        raise LangskewError(f"hub dataset {hub['path']!r}: text column {column!r} is missing "
                            f"(columns: {ds.column_names})")
    if "." not in column:
        return [str(t) for t in ds[column] if t is not None and str(t).strip()]
    return [str(_field(row, column)) for row in ds]


def split_text(text: str, mode: str) -> list[str]:
    """Cut one file's text into documents: the whole file, blank-line blocks or lines."""
    if mode == "file":
        parts = [text]
    elif mode == "blank_line":
        parts = re.split(r"\n\s*\n", text)
    elif mode == "line":
        parts = text.splitlines()
    else:
        raise LangskewError(f"document_split {mode!r} is not one of {', '.join(DOCUMENT_SPLITS)}")
    return [p.strip() for p in parts if p.strip()]


def _expand_globs(patterns: str | Iterable[str], where: str) -> list[str]:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files: list[str] = []
    for pat in patterns:
        matches = sorted(glob.glob(str(pat), recursive=True))
        if not matches:
            raise LangskewError(f"{where}: no file matches {pat!r}")
        files.extend(matches)
    return files


def local_documents(local: dict, split: str, where: str = "local source") -> list[str]:
    """Documents of the files (paths or globs) listed under ``local[split]``."""
    mode = local.get("document_split", "blank_line")
    docs: list[str] = []
    for path in _expand_globs(local[split], f"{where}: split {split!r}"):
        docs.extend(split_text(Path(path).read_text(encoding=local.get("encoding", "utf-8")), mode))
    return docs


def synthetic_documents(syn: dict, split: str, language: str) -> list[str]:
    """Synthetic documents in grammar ``syn["grammar"]`` (default: the language name)."""
    grammar = syn.get("grammar") or language
    n = (syn.get("n_documents") or {}).get(split)
    if n is None:
        raise LangskewError(f"synthetic source of {language!r}: n_documents.{split} is missing")
    seed = int(syn.get("seed", 0)) * 1000 + SPLITS.index(split)
    return list(synthetic_lang.documents(grammar, int(n), seed))


def _source_split(spec: dict, split: str, language: str) -> list[str] | None:
    """Documents of ``split`` straight from the source, or None if it has no such split."""
    source = spec.get("source")
    limit = (spec.get("max_documents") or {}).get(split)
    if source == "hub":
        hub = spec.get("hub") or {}
        split_name = (hub.get("splits") or {"train": "train", "test": "test"}).get(split)
        return None if split_name is None else hub_documents(hub, split_name, limit)
    if source == "local":
        local = spec.get("local") or {}
        return None if not local.get(split) else local_documents(local, split, f"language {language!r}")
    if source == "synthetic":
        return synthetic_documents(spec.get("synthetic") or {}, split, language)
    raise LangskewError(f"study_b.languages.{language}.source {source!r} is not one of {', '.join(SOURCES)}")


def load_corpus(spec: dict, language: str) -> dict[str, list[str]]:
    """Train and test documents of one base language from its config ``spec``.

    When the source has no test split, the last ``test_fraction`` of the train documents
    (at least one) is held out. ``max_documents`` caps each split.
    """
    train = _source_split(spec, "train", language)
    if not train:
        raise LangskewError(f"language {language!r}: the train split is empty")
    test = _source_split(spec, "test", language)
    if test is None:
        frac = float(spec.get("test_fraction", 0.01))
        n_test = max(int(round(len(train) * frac)), 1)
        if n_test >= len(train):
            raise LangskewError(f"language {language!r}: too few documents ({len(train)}) to hold out a test split")
        train, test = train[:-n_test], train[-n_test:]
    limits = spec.get("max_documents") or {}
    out = {"train": train, "test": test}
    for split in SPLITS:
        if limits.get(split) is not None:
            out[split] = out[split][:int(limits[split])]
        if not out[split]:
            raise LangskewError(f"language {language!r}: the {split} split is empty")
    logger.info("language %s: %d train and %d test documents", language, len(out["train"]), len(out["test"]))
    return out


# ---------------------------------------------------------------------------------------
# Parallel pairs
# ---------------------------------------------------------------------------------------
def load_parallel(spec: dict, languages: list[str]) -> pd.DataFrame:
    """Parallel sentence pairs, one column per language (``spec["n_pairs"]`` rows at most)."""
    if len(languages) != 2:
        raise LangskewError(f"study_b.parallel.languages must name two languages, got {languages}")
    source = spec.get("source")
    n = spec.get("n_pairs")
    if source == "synthetic":
        syn = spec.get("synthetic") or {}
        grammars = tuple((syn.get("grammars") or {}).get(lang, lang) for lang in languages)
        pairs = list(synthetic_lang.parallel_sentences(grammars, int(n or 1000), int(syn.get("seed", 0))))
        df = pd.DataFrame(pairs, columns=languages)
    elif source == "hub":
        hub = spec.get("hub") or {}
        ds = _load_hub(hub, hub.get("split", "train"), n)
        columns = hub.get("columns") or {lang: f"translation.{lang}" for lang in languages}
        df = pd.DataFrame({lang: [str(_field(row, columns[lang])) for row in ds] for lang in languages})
    elif source == "local":
        df = _local_parallel(spec.get("local") or {}, languages)
    else:
        raise LangskewError(f"study_b.parallel.source {source!r} is not one of {', '.join(SOURCES)}")
    df = df[(df[languages[0]].str.strip() != "") & (df[languages[1]].str.strip() != "")].reset_index(drop=True)
    if n is not None:
        df = df.iloc[:int(n)]
    if df.empty:
        raise LangskewError("study_b.parallel: no sentence pairs")
    return df


def _local_parallel(local: dict, languages: list[str]) -> pd.DataFrame:
    """Aligned line files ``files: {en: a.txt, fr: b.txt}`` or a table ``path`` with ``columns``."""
    if local.get("files"):
        lines = {lang: Path(local["files"][lang]).read_text(encoding="utf-8").splitlines() for lang in languages}
        if len(lines[languages[0]]) != len(lines[languages[1]]):
            raise LangskewError(f"study_b.parallel.local.files: {languages[0]} has {len(lines[languages[0]])} "
                                f"lines but {languages[1]} has {len(lines[languages[1]])}")
        return pd.DataFrame(lines)
    path = local.get("path")
    if not path:
        raise LangskewError("study_b.parallel.local: give 'files' (one per language) or 'path'")
    reader = {".parquet": pd.read_parquet, ".csv": pd.read_csv, ".tsv": lambda p: pd.read_csv(p, sep="\t"),
              ".jsonl": lambda p: pd.read_json(p, lines=True)}.get(Path(path).suffix)
    if reader is None:
        raise LangskewError(f"study_b.parallel.local.path {path!r}: use .parquet, .csv, .tsv or .jsonl")
    table = reader(path)
    columns = local.get("columns") or {lang: lang for lang in languages}
    missing = [columns[lang] for lang in languages if columns[lang] not in table.columns]
    if missing:
        raise LangskewError(f"study_b.parallel.local.path {path!r}: column {missing[0]!r} is missing")
    return pd.DataFrame({lang: table[columns[lang]].astype(str) for lang in languages})


# ---------------------------------------------------------------------------------------
# Job functions
# ---------------------------------------------------------------------------------------
def corpus_job(input, output, params, threads, log, **_) -> None:
    """Rule ``study_b_corpus``: params.language, params.spec -> output.train / output.test parquet."""
    docs = load_corpus(dict(params.spec), params.language)
    for split in SPLITS:
        write_parquet(pd.DataFrame({"text": docs[split]}), output[split])


def parallel_corpus_job(input, output, params, threads, log, **_) -> None:
    """Rule ``study_b_parallel_corpus``: params.spec, params.languages -> output[0] parquet."""
    write_parquet(load_parallel(dict(params.spec), list(params.languages)), output[0])
