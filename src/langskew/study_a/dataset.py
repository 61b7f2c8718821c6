"""Normalise a dataset source (hub, local files, synthetic) to Study A's on-disk contract.

Output: ``{out_dir}/{split}.parquet`` for train/validation/test with columns id, language,
text, text_pair, label (int64 in 0..C-1), and ``meta.json``. ``spec`` is one entry of the
config's ``datasets:`` registry. Bad input (a missing column, split or language, labels
outside the label set) raises :class:`LangskewError` naming it; rows of languages that are
not configured are dropped; row order is kept, because subsets take the first N rows.
Labels may be class indices, class names from ``labels`` or keys of ``label_map``.

A source without a language column (``columns.language: null``) and ``detect_language: true``
gets each row's language detected from its text (:mod:`langskew.langid`; for pairs the first
text decides): the detected language is the ``language`` column, rows detected in a language
that is not configured are dropped like any other, and ``meta.json`` records per split what
detection found (``language_detection``: rows per detected language, rows kept, the share of
rows detected with probability under 0.5, for pairs the rows whose texts disagree).

Hub datasets are loaded through :func:`langskew.hub.load_hub_dataset`, so a repo that ships
only a loading script, a missing repo/config/split or an unreachable hub is an error naming
the dataset. ``mteb/AmazonReviewsClassification`` (the paper's Amazon source) has one
parquet config per language with ``text`` and ``label`` (0..4); its ``text`` is the review
title, a blank line and the review body (``title + "\n\n" + body``, as the copy was made from
``amazon_reviews_multi``). The authors read the body alone (``review_body``):
``strip_title: "\n\n"`` keeps what follows the first blank line of each text, and a text
without that separator is an error naming the rows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from langskew import hub as hubio
from langskew import io
from langskew.errors import LangskewError
from langskew.study_a.synthetic import generate_synthetic
from langskew.workflow import Job

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
#: detection probability below which a row counts as uncertain in meta.json
MIN_CONFIDENCE = 0.5
COLUMNS = ["id", "language", "text", "text_pair", "label"]
TASKS = ("pair", "single")


# --------------------------------------------------------------------------- spec checks
def _check_spec(name: str, spec: Mapping[str, Any]) -> None:
    """Fail on a malformed registry entry before anything is loaded."""
    for key in ("source", "task", "languages", "labels"):
        if spec.get(key) in (None, [], ""):
            raise LangskewError(f"dataset {name!r}: key {key!r} is missing")
    if spec["task"] not in TASKS:
        raise LangskewError(f"dataset {name!r}: task {spec['task']!r} must be one of {', '.join(TASKS)}")
    sep = spec.get("strip_title")
    if sep is not None and (not isinstance(sep, str) or not sep):
        raise LangskewError(f"dataset {name!r}: strip_title {sep!r} must be a non-empty separator string or null")
    if len(set(spec["languages"])) != len(spec["languages"]):
        raise LangskewError(f"dataset {name!r}: languages {list(spec['languages'])} has duplicates")
    if spec.get("detect_language") and (spec["source"] == "synthetic" or (spec.get("columns") or {}).get("language")):
        raise LangskewError(f"dataset {name!r}: detect_language needs a hub or local source with "
                            f"columns.language: null (the detected language takes its place)")
    if spec["source"] in ("hub", "local"):
        columns = spec.get("columns") or {}
        for key in ("text", "label"):
            if not columns.get(key):
                raise LangskewError(f"dataset {name!r}: columns.{key} is missing")
        if spec["task"] == "pair" and not columns.get("text_pair"):
            raise LangskewError(f"dataset {name!r}: task 'pair' needs columns.text_pair")
    if spec["source"] == "hub":
        hub = spec.get("hub") or {}
        if not hub.get("path"):
            raise LangskewError(f"dataset {name!r}: hub.path is missing")
        if not hub.get("name") and not (spec.get("columns") or {}).get("language") and not spec.get("detect_language"):
            raise LangskewError(f"dataset {name!r}: with hub.name null, columns.language must name "
                                f"the column that holds the language (or detect_language: true)")
    elif spec["source"] == "local":
        local = spec.get("local") or {}
        for split in SPLITS:
            if not local.get(split):
                raise LangskewError(f"dataset {name!r}: local.{split} (the {split} split's file) is missing")
        if not (spec.get("columns") or {}).get("language") and len(spec["languages"]) != 1 \
                and not spec.get("detect_language"):
            raise LangskewError(f"dataset {name!r}: local files with several languages need columns.language "
                                f"(or detect_language: true)")
    elif spec["source"] == "synthetic":
        if not (spec.get("synthetic") or {}).get("n_per_label"):
            raise LangskewError(f"dataset {name!r}: synthetic.n_per_label is missing")
    else:
        raise LangskewError(f"dataset {name!r}: source {spec['source']!r} must be hub, local or synthetic")


# --------------------------------------------------------------------------- normalising
def _unknown_error(where: str, unknown: pd.Series, known: Sequence[str], hint: str) -> LangskewError:
    counts = unknown.astype(str).value_counts()
    listed = ", ".join(f"{label!r} ({n} rows)" for label, n in counts.items())
    return LangskewError(f"{where}: {len(counts)} unknown label(s): {listed}; known: {list(known)}. {hint}")


def label_indices(raw: pd.Series, labels: Sequence[Any], label_map: Mapping[Any, int] | None, where: str,
                  drop_unknown: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Raw labels -> (class indices 0..C-1, mask of the rows kept).

    A raw label is looked up in ``label_map`` when one is given. Otherwise, when the class
    names in ``labels`` are words (``[spam, ham]``), a raw label equal to a name maps to its
    position (spam -> 0) and an integer 0..C-1 is taken as the index; when the names are
    themselves integers (Amazon's ``["1", ..., "5"]``), raw labels are read as indices
    0..C-1 only (a ``label_map`` translates anything else, e.g. stars 1..5). Labels that
    match nothing are an error listing each unknown label with its row count, unless
    ``drop_unknown`` is set: then those rows are dropped and the counts logged per label.
    """
    n_classes = len(labels)
    keys = raw.astype(str)
    if label_map:
        lookup = {str(k): int(v) for k, v in label_map.items()}
        bad_targets = sorted({v for v in lookup.values() if not 0 <= v < n_classes})
        if bad_targets:
            raise LangskewError(f"label_map maps to {bad_targets[0]}, outside 0..{n_classes - 1}")
        known, hint = sorted(lookup), "Add them to label_map"
    else:
        names = [str(x) for x in labels]
        numeric_names = all(n.lstrip("-").isdigit() for n in names)
        lookup = {} if numeric_names else {n: i for i, n in enumerate(names)}
        values = pd.to_numeric(raw, errors="coerce")
        integral = (values.notna() & (values == values.round()) & (values >= 0) & (values < n_classes)
                    & ~keys.isin(list(lookup)))
        pairs = pd.DataFrame({"key": keys[integral], "value": values[integral]}).drop_duplicates("key")
        for key, value in zip(pairs["key"], pairs["value"]):
            lookup.setdefault(key, int(value))
        known = ([] if numeric_names else names) + [f"0..{n_classes - 1}"]
        hint = "Give a label_map to translate raw labels"
    mapped = keys.map(lookup)
    unknown = mapped.isna()
    if unknown.any():
        if not drop_unknown:
            raise _unknown_error(where, raw[unknown], known, hint + ", or set drop_unknown_labels: true to drop those rows.")
        for label, n in raw[unknown].astype(str).value_counts().items():
            logger.warning("%s: dropped %d rows with unknown label %r", where, n, label)
    keep = (~unknown).to_numpy()
    return mapped[~unknown].to_numpy(dtype=np.int64), keep


def _require_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    for col in columns:
        if col not in df.columns:
            raise LangskewError(f"{where}: column {col!r} missing (has {list(df.columns)})")


def strip_titles(texts: pd.Series, separator: str, where: str) -> pd.Series:
    """The body of each ``title<separator>body`` text: what follows the separator's first occurrence.

    A text without the separator is an error naming how many rows lack it and the first one.
    """
    missing = ~texts.str.contains(separator, regex=False)
    if missing.any():
        first = texts[missing].iloc[0]
        raise LangskewError(f"{where}: strip_title: {int(missing.sum())} of {len(texts)} texts have no title "
                            f"separator {separator!r} (first: {first[:60]!r}); the text column must hold "
                            f"'title{separator}body', or set strip_title: null to keep the texts whole")
    return texts.str.split(separator, n=1, regex=False).str[1]


def normalise_frame(raw: pd.DataFrame, spec: Mapping[str, Any], split: str, where: str,
                    language: str | None = None) -> pd.DataFrame:
    """Map a raw table to the normalised schema; keep configured languages, in original order.

    ``language`` fixes the language of every row (one hub config or file per language);
    otherwise it is read from ``columns.language`` (or is the single configured language).
    With ``strip_title`` (a separator) the text is the part after the title (:func:`strip_titles`).
    """
    columns = spec.get("columns") or {}
    languages = list(spec["languages"])
    lang_col = columns.get("language") if language is None else None
    wanted = [columns["text"], columns["label"]] + ([columns["text_pair"]] if spec["task"] == "pair" else [])
    _require_columns(raw, wanted + ([lang_col] if lang_col else []), where)
    detection = None
    if lang_col:
        lang = raw[lang_col].astype(str)
    elif language is None and spec.get("detect_language"):
        lang, detection = detect_frame_languages(raw, spec, where)
    else:
        lang = pd.Series(language or languages[0], index=raw.index)
    keep = lang.isin(languages).to_numpy()
    if detection is not None:
        detection["kept"] = int(keep.sum())
        logger.info("%s: languages detected with %s: %s; %d rows kept (languages %s)", where,
                    detection["identifier"], detection["detected"], detection["kept"], ", ".join(languages))
    raw, lang = raw.loc[keep], lang.loc[keep]
    label, known = label_indices(raw[columns["label"]], list(spec["labels"]), spec.get("label_map"), where,
                                 bool(spec.get("drop_unknown_labels", False)))
    raw, lang = raw.loc[known], lang.loc[known]
    text = raw[columns["text"]].fillna("").astype(str)
    if spec.get("strip_title"):
        text = strip_titles(text, str(spec["strip_title"]), where)
    out = pd.DataFrame({
        "language": lang.to_numpy(dtype=object),
        "text": text.to_numpy(dtype=object),
        "text_pair": (raw[columns["text_pair"]].fillna("").astype(str).to_numpy(dtype=object)
                      if spec["task"] == "pair" else np.full(len(raw), None, dtype=object)),
        "label": label,
    })
    if detection is not None:
        out.attrs["language_detection"] = detection
    return out


def detect_frame_languages(raw: pd.DataFrame, spec: Mapping[str, Any], where: str) -> tuple[pd.Series, dict]:
    """Each row's language detected from ``columns.text`` (for pairs the first text decides; rows
    whose two texts differ are counted), and what detection found, for meta.json."""
    from langskew.langid import detect_rows

    columns = spec.get("columns") or {}
    text = raw[columns["text"]]
    if spec.get("strip_title"):
        text = strip_titles(text.fillna("").astype(str), str(spec["strip_title"]), where)
    pair = raw[columns["text_pair"]] if spec["task"] == "pair" else None
    detection = detect_rows(text, pair)
    info = {"identifier": detection.identifier, "rows": len(raw),
            "detected": {str(k): int(v) for k, v in detection.counts().items()},
            "low_confidence_share": detection.low_confidence_share(MIN_CONFIDENCE),
            "pair_disagreements": detection.disagreements if pair is not None else None}
    return pd.Series(detection.language, index=raw.index, dtype=object), info


def _assign_ids(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """ids f"{language}-{split}-{n}" with n counting rows of that language in order."""
    df = df.drop(columns="id", errors="ignore").reset_index(drop=True)
    n = df.groupby("language", sort=False).cumcount()
    df.insert(0, "id", [f"{lang}-{split}-{i}" for lang, i in zip(df["language"], n)])
    df["label"] = df["label"].astype("int64")
    return df[COLUMNS]


def _check_languages(frames: Mapping[str, pd.DataFrame], languages: Sequence[str], name: str) -> None:
    for split, df in frames.items():
        present = set(df["language"])
        for lang in languages:
            if lang not in present:
                raise LangskewError(f"dataset {name!r}: language {lang!r} has no rows in split {split!r}")


# --------------------------------------------------------------------------- loaders
def _read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, JSONL/JSON or Parquet file (format from the extension)."""
    path = Path(path)
    if not path.exists():
        raise LangskewError(f"file {str(path)!r} does not exist")
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith((".csv", ".csv.gz")):
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    if suffixes.endswith((".tsv", ".tsv.gz")):
        return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
    if suffixes.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return pd.read_json(path, lines=True)
    if suffixes.endswith(".json"):
        return pd.read_json(path)
    if suffixes.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    raise LangskewError(f"file {str(path)!r}: unknown format (use .csv, .tsv, .jsonl, .json or .parquet)")


def _load_local(name: str, spec: Mapping[str, Any], seed: int) -> dict[str, pd.DataFrame]:
    given = (spec.get("columns") or {}).get("language") or spec.get("detect_language")
    language = None if given else spec["languages"][0]
    frames = {}
    for split in SPLITS:
        path = spec["local"][split]
        frames[split] = normalise_frame(_read_table(path), spec, split, f"dataset {name!r} file {str(path)!r}",
                                        language)
    return frames


def _hub_split(hub: Mapping[str, Any], split: str) -> str:
    splits = hub.get("splits") or {}
    return splits.get(split, split)


def load_hub_table(name: str, hub: Mapping[str, Any], config: str | None, split: str,
                    language: str | None = None) -> tuple[pd.DataFrame, str]:
    """One split of one hub config as a DataFrame (errors name dataset/config/split).

    ``hub.data_files`` (a pattern, a list, or a dict split -> patterns; ``{language}`` is
    filled in) reads only those files of the repo; ``hub.streaming`` reads them without
    preparing an Arrow copy of the whole dataset in the datasets cache.
    """
    where = f"dataset {name!r} ({hub['path']}, config {config!r}, split {_hub_split(hub, split)!r})"
    data_files = _fill_language(hub.get("data_files"), language)
    ds = hubio.load_hub_dataset(where, str(hub["path"]), name=config, revision=hub.get("revision"),
                                split=_hub_split(hub, split), data_files=data_files,
                                streaming=bool(hub.get("streaming")) or None, cache_dir=hub.get("cache_dir"))
    if hub.get("streaming"):
        batches = hubio.stream_batches(ds, 10_000)
        del ds  # the batches' generator holds the only reference, and frees it when it ends
        frames = [pd.DataFrame(batch) for batch in batches]
        return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), where
    return ds.to_pandas(), where


def _fill_language(data_files: Any, language: str | None) -> Any:
    """``{language}`` in data_files patterns -> the language (recursively through lists and dicts)."""
    if data_files is None or language is None:
        return data_files
    if isinstance(data_files, str):
        return data_files.format(language=language)
    if isinstance(data_files, Mapping):
        return {k: _fill_language(v, language) for k, v in data_files.items()}
    return [_fill_language(v, language) for v in data_files]


def _load_hub(name: str, spec: Mapping[str, Any], seed: int) -> dict[str, pd.DataFrame]:
    hub = spec["hub"]
    frames = {}
    for split in SPLITS:
        if spec.get("detect_language"):  # one table; its rows' languages are detected
            raw, where = load_hub_table(name, hub, hub.get("name"), split)
            frames[split] = normalise_frame(raw, spec, split, where)
        elif hub.get("name"):
            parts = []
            for lang in spec["languages"]:
                raw, where = load_hub_table(name, hub, str(hub["name"]).format(language=lang), split, lang)
                parts.append(normalise_frame(raw, spec, split, where, language=lang))
            frames[split] = pd.concat(parts, ignore_index=True)
        else:
            raw, where = load_hub_table(name, hub, None, split)
            frames[split] = normalise_frame(raw, spec, split, where)
    return frames


def _load_synthetic(name: str, spec: Mapping[str, Any], seed: int) -> tuple[dict[str, pd.DataFrame], dict]:
    knobs = dict(spec["synthetic"])
    n_per_label = knobs.pop("n_per_label")
    return generate_synthetic(spec["task"], list(spec["languages"]), list(spec["labels"]), n_per_label,
                              seed, **knobs)


LOADERS: dict[str, Callable[[str, Mapping[str, Any], int], dict[str, pd.DataFrame]]] = {
    "hub": _load_hub, "local": _load_local,
}


# --------------------------------------------------------------------------- entry points
def load_dataset_frames(name: str, spec: Mapping[str, Any], seed: int = 0) -> tuple[dict[str, pd.DataFrame], dict]:
    """({split: normalised frame}, meta) for a registry entry, without writing anything."""
    _check_spec(name, spec)
    informative = None
    if spec["source"] == "synthetic":
        frames, synth_meta = _load_synthetic(name, spec, seed)
        informative = synth_meta["informative_tokens"]
    else:
        frames = LOADERS[spec["source"]](name, spec, seed)
    _check_languages(frames, spec["languages"], name)
    detection = {split: df.attrs["language_detection"] for split, df in frames.items()
                 if "language_detection" in df.attrs}
    frames = {split: _assign_ids(df, split) for split, df in frames.items()}
    meta = {"dataset": name, "task": spec["task"], "languages": list(spec["languages"]),
            "labels": [str(x) for x in spec["labels"]], "informative_tokens": informative,
            "source": spec["source"], "language_detection": detection or None,
            "rows": {split: {str(k): int(v) for k, v in df["language"].value_counts(sort=False).items()}
                     for split, df in frames.items()}}
    return frames, meta


def prepare_dataset(name: str, spec: Mapping[str, Any], out_dir: str | Path, seed: int = 0) -> dict:
    """Write ``{out_dir}/{split}.parquet`` and ``meta.json`` for one dataset; return the meta."""
    frames, meta = load_dataset_frames(name, spec, seed)
    out_dir = Path(out_dir)
    for split, df in frames.items():
        io.write_parquet(df, out_dir / f"{split}.parquet")
        logger.info("%s %s: %d rows %s", name, split, len(df), meta["rows"][split])
    io.write_json(meta, out_dir / "meta.json")
    return meta


def dataset_job(job: Job, *, name: str, spec: Mapping[str, Any], seed: int) -> dict:
    """Snakemake job: one dataset (``name``, its source ``spec``, ``seed``) -> the files next to output.meta."""
    out_dir = Path(job.output.meta).parent
    for split in SPLITS:
        expected = out_dir / f"{split}.parquet"
        if hasattr(job.output, split) and Path(getattr(job.output, split)) != expected:
            raise LangskewError(f"output.{split} must be {expected} (beside meta.json)")
    return prepare_dataset(str(name), dict(spec), out_dir, int(seed))
