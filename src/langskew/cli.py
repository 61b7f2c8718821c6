"""The ``langskew`` command.

``langskew diagnose FILE --text-col T --label-col L --language-col G`` measures how much the
label distribution of a multilingual dataset depends on the language (the numbers of the
workflow's ``study_a_diagnose`` rule, see :mod:`langskew.study_a.diagnose`) without running the
workflow. FILE is CSV, TSV, JSON Lines or Parquet (by extension). Output: Markdown on
stdout (default), or ``--format csv`` (one summary row per split) or ``--format json``
(summary and per-(language, label) cells).

``langskew budget [RESULTS] [--configfile FILE]...``, run in the workflow folder after any
run (complete or not), reads the benchmark file every job wrote below ``RESULTS/benchmarks``
(default: the config's ``outdir``) and prints the GPU-hours per rule, the runtime and memory
each config resources key should request (longest job and peak memory x ``--margin``,
rounded up) and the training tokens of the configured Study B grid
(:mod:`langskew.budget`). ``config.yaml`` of the current folder is read first and the
``--configfile`` files overlay it, as with Snakemake.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

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


def _text_values(series: pd.Series) -> pd.Series:
    """Labels and languages as stripped text; NaN/None/blank become missing."""
    text = series.astype("string").str.strip()
    return text.mask(text == "")


def check_values(df: pd.DataFrame, column: str, what: str) -> pd.Series:
    """The column as text, or an error naming the column and the first rows with an empty ``what``."""
    values = _text_values(df[column])
    empty = values.isna().to_numpy()
    if empty.any():
        rows = [int(i) + 1 for i in empty.nonzero()[0][:5]]
        raise LangskewError(f"column {column!r}: {int(empty.sum())} rows have an empty {what} "
                            f"(data rows {', '.join(map(str, rows))}{', ...' if empty.sum() > 5 else ''})")
    return values


def _split_list(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def diagnose_file(path: str | Path, text_col: str, label_col: str, language_col: str,
                  split_col: str | None = None, languages: Sequence[str] | None = None,
                  labels: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a file and diagnose it: (summary per split, cells). See :func:`diagnose_frame`."""
    from langskew.diagnosis import diagnose_frame

    columns = {"text_col": text_col, "label_col": label_col, "language_col": language_col}
    if split_col:
        columns["split_col"] = split_col
    df = read_columns(path, columns)
    frame = pd.DataFrame({"language": check_values(df, language_col, "language"),
                          "label": check_values(df, label_col, "label")})
    if split_col:
        frame["split"] = check_values(df, split_col, "split")
    empty_text = _text_values(df[text_col]).isna()
    if languages is not None:
        present = set(frame["language"].unique())
        missing = [lang for lang in languages if lang not in present]
        if missing:
            raise LangskewError(f"language {missing[0]!r} (--languages) has no rows in column {language_col!r}")
    summary, cells = diagnose_frame(frame, split_col="split" if split_col else None,
                                    languages=languages, labels=labels)
    summary["empty_texts"] = ([int(empty_text.sum())] if not split_col else
                              [int(empty_text[(frame["split"] == s).to_numpy()].sum()) for s in summary["split"]])
    note = summary["empty_texts"].map(lambda k: f"{k} rows have an empty text" if k else "")
    summary["notes"] = ["; ".join(filter(None, pair)) for pair in zip(summary["notes"], note)]
    return summary, cells


def _json_safe(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if hasattr(value, "item"):
        return _json_safe(value.item())
    return value


def render(summary: pd.DataFrame, cells: pd.DataFrame, fmt: str, title: str) -> str:
    from langskew.diagnosis import markdown_report

    if fmt == "csv":
        return summary.to_csv(index=False)
    if fmt == "json":
        doc = {"summary": [{k: _json_safe(v) for k, v in row.items()} for row in summary.to_dict("records")],
               "cells": [{k: _json_safe(v) for k, v in row.items()} for row in cells.to_dict("records")]}
        return json.dumps(doc, indent=2) + "\n"
    return markdown_report(summary, cells, ["split"], title)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langskew", description="Language imbalance in multilingual data.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("diagnose", help="how much the labels of a dataset depend on the language",
                       description="Chi-square test, Cramér's V (bias-corrected), mutual information, shortcut "
                                   "gain, per-language class weights and a verdict (none / mild / strong) for "
                                   "the language-label table of a CSV, TSV, JSONL or Parquet file.")
    d.add_argument("file", help="data file: .csv, .tsv, .jsonl or .parquet")
    d.add_argument("--text-col", required=True, help="column with the text (checked, and empty texts counted)")
    d.add_argument("--label-col", required=True, help="column with the label (names or numbers)")
    d.add_argument("--language-col", required=True, help="column with the language")
    d.add_argument("--split-col", help="optional column with the split (train/validation/test): one diagnosis per split")
    d.add_argument("--languages", help="comma-separated languages that must be present (and their order)")
    d.add_argument("--labels", help="comma-separated labels in class order; any other label is an error")
    d.add_argument("--format", choices=["md", "csv", "json"], default="md", help="output format (default: md)")
    b = sub.add_parser("budget", help="GPU-hours and runtimes measured by a run's benchmark files",
                       description="GPU-hours per rule, the runtime and mem_mb each config resources key should "
                                   "request, and the training tokens of the configured Study B grid.")
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
        summary, cells = diagnose_file(args.file, args.text_col, args.label_col, args.language_col,
                                       split_col=args.split_col, languages=_split_list(args.languages),
                                       labels=_split_list(args.labels))
    except LangskewError as err:
        print(f"langskew diagnose: error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(render(summary, cells, args.format, f"Language-label skew of {Path(args.file).name}"))
    if args.format == "md":
        from langskew.diagnosis import mitigation_command

        sys.stdout.write(mitigation_command(cells, args.file, args.text_col, args.label_col, args.language_col))
    return 0


if __name__ == "__main__":
    sys.exit(main())
