"""Study B corpora: documents per base language and parallel sentence pairs, streamed.

Sources (``study_b.languages.{lang}.source``):

* ``hub`` - a ``datasets`` dataset with a text column (e.g. TinyStories), a hub id or a
  local hub-style folder. By default ``load_dataset(path, name, split=..., revision=...)``;
  with ``data_files`` (glob patterns inside the repo) and/or ``shards`` (the first N data
  files) only those files are downloaded and read (e.g. a few of French-PD-Books' parquet
  shards), and ``streaming: true`` reads them without converting them to Arrow first.
  ``filter: {column, min}`` keeps the rows whose score column is at least ``min`` (e.g. an
  OCR quality score).
* ``local`` - text files or globs per split (one path/glob or a list); one document per
  file, per blank-line separated block or per line (``document_split``).
* ``synthetic`` - the English-like / French-like generator of :mod:`synthetic_lang`.

Cleaning (``clean``) and deduplication (``dedup``) come before the train/test split
(:func:`clean_records`): ``clean: gutenberg`` cuts every document to its book with
:func:`langskew.gutenberg.clean_book` (Project Gutenberg header, footer and licence removed;
a document without the markers kept whole and counted); ``dedup: true`` drops a document whose
id (``hub.id_column``) or whose cleaned text (BLAKE2b digest) was seen before, in either
split, so that no held-out book has a copy in training. The job logs the documents and bytes
read, kept and removed, and why.

Documents flow one at a time from the source to a Parquet writer that flushes every
``WRITE_BATCH`` documents, so memory stays bounded whatever the corpus size. A split that
the source does not provide (``test: null``) is a *seeded random sample* of the source's
documents: each document goes to the test split with probability ``test_fraction`` (a
generator seeded with ``holdout_seed``), so the held-out text represents the whole corpus
rather than its last files. ``max_documents`` caps each split (reading stops there).

Parallel pairs (``study_b.parallel``) come from the synthetic generator, a hub dataset with
two text columns (e.g. Europarl en-fr, where a column may be a dotted path such as
``translation.en``) or local files. Every pair is kept, also one with an empty side (the
authors packed all of Europarl as it is). With the languages' tokenizers, the pairs are read
until ``n_parallel`` packed sequences exist (:func:`langskew.study_b.languages.pack_parallel`,
the authors' packing; the first ``n_parallel`` are what the alignment uses): a source that
runs out first, or ``n_pairs`` (an optional cap on the pairs read) reached first, is an
error that says how many were found. Without tokenizers the first ``n_pairs`` are read.

Outputs: ``corpus/{lang}/{train,test}.parquet`` (column ``text``, one row per document)
and ``corpus/parallel.parquet`` (one column per language).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from langskew import gutenberg
from langskew import hub as hubio
from langskew.errors import LangskewError
from langskew.io import atomic_path, write_parquet
from langskew.paths import as_list, matching_files
from langskew.progress import progress
from langskew.study_b import synthetic_lang
from langskew.workflow import Job

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
SOURCES = ("hub", "local", "synthetic")
DOCUMENT_SPLITS = ("file", "blank_line", "line")
WRITE_BATCH = 2048   # documents per Parquet row group (bounded memory)
READ_BATCH = 256     # rows per batch read from a hub dataset


# ---------------------------------------------------------------------------------------
# Hub sources
# ---------------------------------------------------------------------------------------
def _field(row: dict, column: str) -> Any:
    """A row's value for ``column``; a dotted name walks nested dicts (``translation.en``)."""
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            raise LangskewError(f"column {column!r} is missing (row keys: {sorted(row)})")
        value = value[part]
    return value


def file_mode(hub: dict) -> bool:
    """Read chosen data files (data_files / shards / streaming) instead of a prepared split."""
    return bool(hub.get("data_files") or hub.get("shards") or hub.get("streaming"))


def open_hub(hub: dict, split_name: str, where: str):
    """A hub split as a ``datasets`` Dataset or IterableDataset (never sliced: slicing a split
    makes ``datasets`` download and convert all of it first)."""
    if not hub.get("path"):
        raise LangskewError(f"{where}: hub key 'path' is missing")
    path = str(hub["path"])
    if file_mode(hub):
        patterns = hub.get("data_files")
        if not patterns and hub.get("name") and not hubio.is_local(path):
            raise LangskewError(f"{where}: hub.name {hub['name']!r} with shards/streaming needs hub.data_files "
                                f"(the config's files, e.g. '{hub['name']}/*.parquet')")
        files = hubio.resolve_data_files(path, hub.get("revision"), patterns, hub.get("shards"), where)
        logger.info("%s: reading %d file(s) of %s (streaming=%s)", where, len(files), path, bool(hub.get("streaming")))
        return hubio.load_hub_dataset(where, hubio.builder_for(files, where), data_files={"train": files},
                                      split="train", streaming=bool(hub.get("streaming")),
                                      cache_dir=hub.get("cache_dir"))
    logger.info("%s: loading %s (%s), split %s", where, path, hub.get("name"), split_name)
    return hubio.load_hub_dataset(where, path, name=hub.get("name"), split=split_name,
                                  revision=hub.get("revision"), cache_dir=hub.get("cache_dir"))


def hub_rows(hub: dict, split_name: str, where: str) -> Iterator[dict]:
    """Rows of a hub split, read in batches; rows failing ``hub.filter`` are skipped."""
    ds = open_hub(hub, split_name, where)
    rule = hub.get("filter") or None
    if rule and rule.get("column") not in (ds.column_names or [rule.get("column")]):
        raise LangskewError(f"{where}: filter column {rule.get('column')!r} is missing (columns: {ds.column_names})")
    # the batches' generator holds the only reference to ds; closed here however reading ends
    # (exhausted, or the caller stopped early), it frees ds at once (hubio.stream_batches)
    batches = hubio.stream_batches(ds, READ_BATCH)
    del ds
    kept = dropped = 0
    with contextlib.closing(batches):
        for batch in batches:
            names = list(batch)
            for i in range(len(batch[names[0]]) if names else 0):
                row = {k: batch[k][i] for k in names}
                if rule and not _passes(row.get(rule["column"]), rule):
                    dropped += 1
                    continue
                kept += 1
                yield row
    if rule:
        logger.info("%s: filter %s kept %d rows, dropped %d", where, rule, kept, dropped)


def _passes(value: Any, rule: dict) -> bool:
    if value is None:
        return False
    value = float(value)
    return (rule.get("min") is None or value >= float(rule["min"])) and \
           (rule.get("max") is None or value <= float(rule["max"]))


def hub_records(hub: dict, split_name: str, where: str = "hub source") -> Iterator[tuple[str | None, str]]:
    """(id, text) of the non-empty documents of one hub split: text from ``hub["text_column"]``
    (default ``text``), id from ``hub["id_column"]`` (None without one)."""
    column, id_column = hub.get("text_column", "text"), hub.get("id_column")
    rows = hub_rows(hub, split_name, where)
    first = next(rows, None)
    if first is None:
        return
    for name, what in ((column, "text"), (id_column, "id")):
        if name is not None and name.split(".")[0] not in first:
            raise LangskewError(f"{where}: hub dataset {hub['path']!r}: {what} column {name!r} is missing "
                                f"(columns: {sorted(first)})")
    for row in itertools.chain([first], rows):
        text = _field(row, column)
        if text is not None and str(text).strip():
            yield (None if id_column is None else str(_field(row, id_column))), str(text)


def hub_documents(hub: dict, split_name: str, where: str = "hub source") -> Iterator[str]:
    """Non-empty documents of one hub split from ``hub["text_column"]`` (default ``text``)."""
    return (text for _, text in hub_records(hub, split_name, where))


# ---------------------------------------------------------------------------------------
# Local and synthetic sources
# ---------------------------------------------------------------------------------------
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


def expand_globs(patterns: str | Iterable[str], where: str) -> list[str]:
    """Files of one path/glob or a list of them (each sorted; a pattern matching nothing is an error)."""
    files: list[str] = []
    for pat in as_list(patterns):
        matches = matching_files(pat)
        if not matches:
            raise LangskewError(f"{where}: no file matches {pat!r}")
        files.extend(matches)
    return files


def file_documents(path: str | Path, mode: str, encoding: str = "utf-8") -> Iterator[str]:
    """The documents of one file as :func:`split_text` cuts them, read line by line for the
    ``blank_line`` and ``line`` modes (memory: one document, not the file)."""
    if mode not in DOCUMENT_SPLITS:
        raise LangskewError(f"document_split {mode!r} is not one of {', '.join(DOCUMENT_SPLITS)}")
    with open(path, encoding=encoding) as fh:
        if mode == "file":
            yield from split_text(fh.read(), mode)
            return
        block: list[str] = []
        for line in fh:  # universal newlines, as read_text
            if mode == "line":
                yield from (p.strip() for p in line.splitlines() if p.strip())
            elif line.strip():  # a blank line (whitespace only, as the pattern's \s) ends a document
                block.append(line)
            elif block:
                doc = "".join(block).strip()
                block = []
                if doc:
                    yield doc
        if block and (doc := "".join(block).strip()):
            yield doc


def local_documents(local: dict, split: str, where: str = "local source") -> Iterator[str]:
    """Documents of the files (one path/glob or a list) under ``local[split]``, file by file."""
    mode = local.get("document_split", "blank_line")
    for path in expand_globs(local[split], f"{where}: split {split!r}"):
        yield from file_documents(path, mode, local.get("encoding", "utf-8"))


def synthetic_documents(syn: dict, split: str, language: str) -> Iterator[str]:
    """Synthetic documents in grammar ``syn["grammar"]`` (default: the language name), with the
    lexicon of ``syn["richness"]`` (default 1)."""
    grammar = syn.get("grammar") or language
    n = (syn.get("n_documents") or {}).get(split)
    if n is None:
        raise LangskewError(f"synthetic source of {language!r}: n_documents.{split} is missing")
    seed = int(syn.get("seed", 0)) * 1000 + SPLITS.index(split)
    richness = synthetic_lang.check_richness(syn.get("richness", 1),
                                             f"study_b.languages.{language}.synthetic.richness")
    return synthetic_lang.documents(grammar, int(n), seed, richness=richness)


def source_split(spec: dict, split: str, language: str) -> Iterator[tuple[str | None, str]] | None:
    """(id, text) of the documents of ``split`` straight from the source (id None where the
    source has none), or None if it has no such split."""
    source = spec.get("source")
    where = f"study_b.languages.{language}"
    if source == "hub":
        hub = spec.get("hub") or {}
        split_name = (hub.get("splits") or {"train": "train", "test": "test"}).get(split)
        if split_name is None or (split == "test" and file_mode(hub)):
            return None  # chosen data files are all train documents
        return hub_records(hub, split_name, where)
    if source == "local":
        local = spec.get("local") or {}
        return None if not local.get(split) else ((None, d) for d in local_documents(local, split, where))
    if source == "synthetic":
        return ((None, d) for d in synthetic_documents(spec.get("synthetic") or {}, split, language))
    raise LangskewError(f"{where}.source {source!r} is not one of {', '.join(SOURCES)}")


# ---------------------------------------------------------------------------------------
# Cleaning and deduplication (before the train/test split)
# ---------------------------------------------------------------------------------------
@dataclass
class CleanReport:
    """What :func:`clean_records` read, kept and removed (documents and UTF-8 bytes)."""

    read: int = 0
    kept: int = 0
    unmarked: int = 0         # clean: gutenberg, no markers found: kept whole
    emptied: int = 0          # nothing but licence between the markers: removed
    duplicate_id: int = 0
    duplicate_text: int = 0
    bytes_read: int = 0
    bytes_kept: int = 0
    bytes_cleaned: int = 0    # header, footer, licence and credits cut from kept and emptied books
    bytes_duplicate: int = 0  # the duplicates (as read for an id, as cleaned for a text)
    seen_ids: set = field(default_factory=set, repr=False)
    seen_texts: set = field(default_factory=set, repr=False)

    def summary(self, language: str) -> str:
        removed = self.read - self.kept
        return (f"language {language}: {self.read:,} documents read ({self.bytes_read:,} bytes), {self.kept:,} kept "
                f"({self.bytes_kept:,} bytes); removed {removed:,} documents and "
                f"{self.bytes_read - self.bytes_kept:,} bytes: {self.bytes_cleaned:,} bytes of header, footer and "
                f"licence, {self.emptied:,} documents with no text between the markers, {self.duplicate_id:,} "
                f"duplicates by id and {self.duplicate_text:,} by content ({self.bytes_duplicate:,} bytes); "
                f"{self.unmarked:,} documents without Gutenberg markers kept whole")


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _clean_one(doc_id: str | None, text: str, clean: str, dedup: bool, report: CleanReport) -> str | None:
    """One document cleaned and checked against those seen; None when it is removed."""
    size = len(text.encode("utf-8"))
    report.read += 1
    report.bytes_read += size
    if dedup and doc_id is not None:
        if doc_id in report.seen_ids:
            report.duplicate_id += 1
            report.bytes_duplicate += size
            return None
        report.seen_ids.add(doc_id)
    if clean == "gutenberg":
        book = gutenberg.clean_book(text)
        report.unmarked += not book.marked
        text = book.text
        cleaned = len(text.encode("utf-8"))
        report.bytes_cleaned += size - cleaned
        size = cleaned
        if not text.strip():
            report.emptied += 1
            return None
    if dedup:
        digest = _digest(text)
        if digest in report.seen_texts:
            report.duplicate_text += 1
            report.bytes_duplicate += size
            return None
        report.seen_texts.add(digest)
    report.kept += 1
    report.bytes_kept += size
    return text


def clean_records(records: Iterable[tuple[str | None, str]], clean: str = "none", dedup: bool = False,
                  report: CleanReport | None = None) -> Iterator[str]:
    """The texts of ``records`` ((id, text), in order) cleaned (``clean``: none or gutenberg) and,
    with ``dedup``, without a document whose id or cleaned text came before (in ``report``'s
    memory, which the train and test sources of one corpus share); ``report`` counts."""
    if clean not in gutenberg.CLEANINGS:
        raise LangskewError(f"clean {clean!r} is not one of {', '.join(gutenberg.CLEANINGS)}")
    report = report if report is not None else CleanReport()
    for doc_id, text in records:
        kept = _clean_one(doc_id, text, clean, bool(dedup), report)
        if kept is not None:
            yield kept


# ---------------------------------------------------------------------------------------
# Streaming a corpus into train / test
# ---------------------------------------------------------------------------------------
class _DocSink:
    """Collects documents of one split, capped at ``limit``; flushes to Parquet in batches."""

    def __init__(self, limit: int | None, writer: Callable[[list[str]], None] | None):
        self.limit, self.writer, self.n, self.buffer, self.kept = limit, writer, 0, [], []

    @property
    def full(self) -> bool:
        return self.limit is not None and self.n >= self.limit

    def add(self, doc: str) -> None:
        if self.full:
            return
        self.n += 1
        if self.writer is None:
            self.kept.append(doc)
            return
        self.buffer.append(doc)
        if len(self.buffer) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.writer is not None and self.buffer:
            self.writer(self.buffer)
            self.buffer = []


def _holdout_draws(seed: int, chunk: int = 4096) -> Iterator[float]:
    """An endless seeded stream of uniform draws, one per document (drawn in chunks)."""
    rng = np.random.default_rng([int(seed), 0x40D])
    while True:
        yield from rng.random(chunk).tolist()


def stream_corpus(spec: dict, language: str, sinks: dict[str, _DocSink]) -> dict[str, int]:
    """Route the source's documents, cleaned and deduplicated, into the train/test sinks; return the counts."""
    train = source_split(spec, "train", language)
    if train is None:
        raise LangskewError(f"study_b.languages.{language}: the source has no train split")
    test = source_split(spec, "test", language)
    clean, dedup, report = spec.get("clean") or "none", bool(spec.get("dedup")), CleanReport()
    train = clean_records(train, clean, dedup, report)
    test = None if test is None else clean_records(test, clean, dedup, report)
    desc = f"corpus {language}"
    if test is None:
        frac = float(spec.get("test_fraction", 0.01))
        draws = _holdout_draws(int(spec.get("holdout_seed", 0)))
        for doc in progress(train, desc=desc, unit="doc", leave=False):
            sinks["test" if next(draws) < frac else "train"].add(doc)
            if sinks["train"].full:  # the test sample comes from the documents read so far
                break
    else:
        for split, docs in (("train", train), ("test", test)):
            for doc in progress(docs, desc=f"{desc} {split}", unit="doc", leave=False):
                sinks[split].add(doc)
                if sinks[split].full:
                    break
    for split, sink in sinks.items():
        sink.flush()
        if sink.n == 0:
            hint = " (too few documents to hold out a test sample; raise test_fraction)" if test is None else ""
            raise LangskewError(f"study_b.languages.{language}: the {split} split is empty{hint}")
    counts = {split: sink.n for split, sink in sinks.items()}
    if clean != "none" or dedup:
        logger.info("%s", report.summary(language))
    logger.info("language %s: %d train and %d test documents", language, counts["train"], counts["test"])
    return counts


def _limits(spec: dict) -> dict[str, int | None]:
    limits = spec.get("max_documents") or {}
    return {split: (None if limits.get(split) is None else int(limits[split])) for split in SPLITS}


def load_corpus(spec: dict, language: str) -> dict[str, list[str]]:
    """Train and test documents of one base language, in memory (small corpora, tests)."""
    limits = _limits(spec)
    sinks = {split: _DocSink(limits[split], None) for split in SPLITS}
    stream_corpus(spec, language, sinks)
    return {split: sink.kept for split, sink in sinks.items()}


TEXT_SCHEMA = pa.schema([("text", pa.string())])


def write_corpus(spec: dict, language: str, outputs: dict[str, str | Path]) -> dict[str, int]:
    """Stream one language's documents into ``outputs["train"|"test"]`` Parquet files."""
    limits = _limits(spec)
    with atomic_path(outputs["train"]) as tmp_train, atomic_path(outputs["test"]) as tmp_test:
        writers = {"train": pq.ParquetWriter(tmp_train, TEXT_SCHEMA), "test": pq.ParquetWriter(tmp_test, TEXT_SCHEMA)}
        try:
            sinks = {split: _DocSink(limits[split], lambda docs, w=writers[split]: w.write_table(
                pa.table({"text": pa.array(docs, pa.string())}, schema=TEXT_SCHEMA))) for split in SPLITS}
            counts = stream_corpus(spec, language, sinks)
        finally:
            for w in writers.values():
                w.close()
    return counts


def iter_texts(path: str | Path, batch_rows: int = WRITE_BATCH) -> Iterator[str]:
    """The ``text`` column of a corpus Parquet file, one document at a time (row-group batches).

    ``pre_buffer=False``: pyarrow's default pre-buffers the column chunks of every row group
    it is asked for, i.e. the whole compressed column, so memory grew with the corpus."""
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=batch_rows, columns=["text"]):
        yield from batch.column(0).to_pylist()


# ---------------------------------------------------------------------------------------
# Parallel pairs
# ---------------------------------------------------------------------------------------
def _hub_pairs(hub: dict, languages: list[str]) -> Iterator[tuple[str, ...]]:
    columns = hub.get("columns") or {lang: f"translation.{lang}" for lang in languages}
    for row in hub_rows(hub, hub.get("split", "train"), "study_b.parallel"):
        yield tuple(str(_field(row, columns[lang]) or "") for lang in languages)


def _local_pairs(local: dict, languages: list[str]) -> Iterator[tuple[str, ...]]:
    """Aligned line files ``files: {en: a.txt, fr: b.txt}`` (read line by line) or a table ``path``."""
    if local.get("files"):
        paths = [Path(local["files"][lang]) for lang in languages]
        for p in paths:
            if not p.is_file():
                raise LangskewError(f"study_b.parallel.local.files: {str(p)!r} does not exist")
        handles = [open(p, encoding=local.get("encoding", "utf-8")) for p in paths]
        try:
            for i, lines in enumerate(itertools.zip_longest(*handles)):
                if None in lines:
                    short = languages[lines.index(None)]
                    raise LangskewError(f"study_b.parallel.local.files: the {short} file has fewer lines "
                                        f"({i}) than the other")
                yield tuple(line.rstrip("\n") for line in lines)
        finally:
            for h in handles:
                h.close()
        return
    yield from _local_table(local, languages).itertuples(index=False, name=None)


def _local_table(local: dict, languages: list[str]) -> pd.DataFrame:
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
    return pd.DataFrame({lang: table[columns[lang]].fillna("").astype(str) for lang in languages})


PARALLEL_CHUNK = 1000  # pairs read and tokenised between two packing checks


def _parallel_pairs(spec: dict, languages: list[str]) -> Iterator[tuple[str, ...]]:
    """Every sentence pair of the source, in order, as strings (empty sides included)."""
    source = spec.get("source")
    n = spec.get("n_pairs")
    if source == "synthetic":
        syn = spec.get("synthetic") or {}
        grammars = tuple((syn.get("grammars") or {}).get(lang, lang) for lang in languages)
        # richness: the workflow fills in the languages' one when it is not set (synthetic_lang.parallel_richness)
        richness = synthetic_lang.check_richness(syn.get("richness") or 1, "study_b.parallel.synthetic.richness")
        pairs: Iterable[tuple] = synthetic_lang.parallel_sentences(grammars, int(n or 10**9), int(syn.get("seed", 0)),
                                                                   richness=richness)
    elif source == "hub":
        pairs = _hub_pairs(spec.get("hub") or {}, languages)
    elif source == "local":
        pairs = _local_pairs(spec.get("local") or {}, languages)
    else:
        raise LangskewError(f"study_b.parallel.source {source!r} is not one of {', '.join(SOURCES)}")
    for pair in pairs:
        yield tuple(str(s) for s in pair)


def load_parallel(spec: dict, languages: list[str], tokenizers: dict[str, str | Path] | None = None,
                  n_parallel: int | None = None, min_len: int = 128, max_len: int = 512) -> pd.DataFrame:
    """Sentence pairs of ``spec``, one column per language, every pair kept (empty sides too).

    With ``tokenizers`` ({language: SentencePiece model}) and ``n_parallel``: the pairs read
    until ``n_parallel`` packed sequences of ``min_len`` to ``max_len`` tokens per side are
    complete; fewer is a :class:`LangskewError` that says how many were found. Otherwise
    the first ``n_pairs`` pairs (all when null). ``n_pairs`` caps the pairs read either way.
    """
    if len(languages) != 2:
        raise LangskewError(f"study_b.parallel.languages must name two languages, got {languages}")
    cap = spec.get("n_pairs")
    pairs = _parallel_pairs(spec, languages)
    if cap is not None:
        pairs = itertools.islice(pairs, int(cap))
    if tokenizers is None or n_parallel is None:
        kept = list(pairs)
    else:
        kept = _read_until_packed(pairs, languages, tokenizers, int(n_parallel), int(min_len), int(max_len), cap)
    if not kept:
        raise LangskewError("study_b.parallel: no sentence pairs")
    empty = sum(1 for pair in kept if not all(s.strip() for s in pair))
    logger.info("parallel: %d pairs read (%d with an empty side, kept as the authors did)", len(kept), empty)
    return pd.DataFrame(kept, columns=languages)


def _read_until_packed(pairs: Iterator[tuple[str, ...]], languages: list[str], tokenizers: dict[str, str | Path],
                       n_parallel: int, min_len: int, max_len: int, cap: int | None) -> list[tuple[str, ...]]:
    """Pairs read chunk by chunk until ``n_parallel`` packed sequences are complete."""
    import sentencepiece as spm

    from langskew.study_b.languages import pack_parallel

    missing = [lang for lang in languages if lang not in tokenizers]
    if missing:
        raise LangskewError(f"study_b.parallel: no tokenizer for language {missing[0]!r}")
    sps = {lang: spm.SentencePieceProcessor(model_file=str(tokenizers[lang])) for lang in languages}
    kept: list[tuple[str, ...]] = []
    ids: dict[str, list] = {lang: [] for lang in languages}
    packed: dict[str, list] = {lang: [] for lang in languages}
    exhausted = False
    while True:
        chunk = list(itertools.islice(pairs, PARALLEL_CHUNK))
        exhausted = len(chunk) < PARALLEL_CHUNK
        kept += chunk
        for i, lang in enumerate(languages):
            ids[lang] += sps[lang].encode([pair[i] for pair in chunk])
        packed = pack_parallel({lang: [np.asarray(x, dtype=np.int64) for x in ids[lang]] for lang in languages},
                               min_len, max_len)
        # n + 1 sequences: the n-th is closed (no later pair can join it), so the first n are final
        if len(packed[languages[0]]) > n_parallel or exhausted:
            break
    found = len(packed[languages[0]])
    if found < n_parallel:
        why = (f"n_pairs={cap} reached" if cap is not None and len(kept) >= int(cap) else "the source ran out")
        raise LangskewError(f"study_b.parallel: only {found} packed parallel sequences of {min_len} to {max_len} "
                            f"tokens from {len(kept)} pairs ({why}); study_b.eval.n_parallel asks for {n_parallel}. "
                            f"Raise or remove n_pairs, read more shards, or lower n_parallel / parallel_min_len")
    logger.info("parallel: %d pairs read for %d packed sequences (n_parallel %d)", len(kept), found, n_parallel)
    return kept


# ---------------------------------------------------------------------------------------
# Job functions
# ---------------------------------------------------------------------------------------
def corpus_job(job: Job, *, language: str, spec: dict) -> None:
    """Rule ``study_b_corpus``: the documents of ``language`` (its ``spec``) -> output.train / output.test parquet."""
    write_corpus(dict(spec), language, {"train": job.output.train, "test": job.output.test})


def parallel_corpus_job(job: Job, *, spec: dict, languages: list[str], n_parallel: int, min_len: int,
                        max_len: int) -> None:
    """Rule ``study_b_parallel_corpus``: the sentence pairs of ``spec`` in ``languages`` -> output[0] parquet,
    read until ``n_parallel`` packed sequences of ``min_len`` to ``max_len`` tokens exist
    (input.tokenizers: one SentencePiece model per language, in ``languages`` order)."""
    tokenizers = dict(zip(languages, job.input.tokenizers))
    write_parquet(load_parallel(dict(spec), list(languages), tokenizers, int(n_parallel), int(min_len), int(max_len)),
                  job.output[0])
