"""Synthetic multilingual classification data on which Study A's effect can show at demo scale.

Every language gets its own surface vocabulary: pseudo-words built from a syllable
inventory drawn for that language code (any code works: en, fr, xx ...), plus a few
tokens shared by all languages (digits, punctuation, personal names). Within a language:

* cue words, a short list per class, are the *informative* tokens (``meta
  ["informative_tokens"]``). Cues are soft. A fraction ``clear_rate`` of examples is
  clear: ``clear_tokens`` cues, each from the own class's list with probability
  ``clear_strength`` (0.9). The others are weak: ``cue_tokens`` (1) cue from the own
  class with probability ``cue_strength`` (0.5), else from another class's list. Why
  this mixture: a language prior of 1:2:3 (or 5:4:3:2:1) can only flip decisions whose
  evidence is weaker than the prior odds, and several equally weak cues add up past that
  point, so several weak cues per example give a gap of only 1-3 points even for the
  Bayes classifier. One weak cue (likelihood ratio 2 for 3 classes, 4 for 5) sits below
  the prior odds against the minority classes, so a classifier that learned the language
  prior loses those examples (about 10 points on the weak part, 4-8 points overall),
  while the clear part keeps the task learnable (balanced accuracy about 0.6-0.65).
  Per-language class weights remove the prior and so the loss.
* filler words are uninformative about the label but reveal the language, which is what
  lets a model learn a prior per language.

Tasks: ``single`` mimics Amazon reviews (one text of 10-25 tokens); ``pair`` mimics XNLI
(premise of 8-14 tokens, hypothesis of 5-9). In pairs the hypothesis also depends on the
premise: entailed hypotheses copy more premise content words (and the premise's name),
neutral ones bring new content words, contradictions copy content and carry a negation
cue. The overlap is graded, not deterministic, so cues stay necessary.

Label noise: a fraction ``label_noise`` of rows have text generated from another class,
keeping the number of rows per (language, label) exactly as asked.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError

SPLITS = ("train", "validation", "test")
SHARED_NAMES = ("Anna", "Marco", "Lena", "Omar", "Sofia", "Ravi", "Yuki", "Jonas", "Amara", "Pavel")
SHARED_PUNCT = (".", ",", "!", "?")
SHARED_DIGITS = tuple(str(d) for d in range(10))

ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
          "bl", "br", "ch", "cr", "dr", "fl", "gr", "kh", "kr", "pl", "pr", "sh", "sk", "st", "th",
          "tr", "ts", "zh", "gl", "sv", "ny", "qu")
NUCLEI = ("a", "e", "i", "o", "u", "y", "ai", "au", "ei", "ou", "ie", "oa", "ä", "ö", "ü", "é", "è",
          "å", "ø", "ee", "oo", "ui")
CODAS = ("", "", "", "n", "r", "s", "l", "t", "k", "m", "x", "ng", "rd", "st")

DEFAULT_KNOBS: dict[str, Any] = {
    "label_noise": 0.05,     # fraction of rows whose text comes from another class
    "clear_rate": 0.35,      # fraction of examples with strong evidence
    "clear_tokens": 2,       # cue tokens in a clear example
    "clear_strength": 0.9,   # probability that a clear example's cue is from its own class
    "cue_tokens": 1,         # cue tokens in a weak example
    "cue_strength": 0.5,     # probability that a weak example's cue is from its own class
    "cues_per_class": 6,     # informative words per (language, class)
    "filler_vocab": 200,     # uninformative words per language
    "content_vocab": 80,     # content words per language (pair premises/hypotheses)
    "shared_rate": 0.15,     # probability that a filler slot holds a shared token instead
}


@dataclass
class Lexicon:
    """One language's words: cue lists per class, filler and content words."""

    cues: list[list[str]]
    filler: list[str]
    content: list[str]

    def informative(self) -> dict[str, int]:
        return {tok: c for c, words in enumerate(self.cues) for tok in words}


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """Stable generator for (seed, keys): independent of Python's hash randomisation."""
    return np.random.default_rng([int(seed)] + [zlib.crc32(k.encode()) for k in keys])


def _inventory(rng: np.random.Generator) -> tuple[list[str], list[str], list[str]]:
    """A language's syllable inventory: onsets, nuclei, codas."""
    pick = lambda pool, k: [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]  # noqa: E731
    return pick(ONSETS, 9), pick(NUCLEI, 4), pick(CODAS, 5)


def build_lexicon(language: str, n_classes: int, seed: int, knobs: Mapping[str, Any]) -> Lexicon:
    """Draw distinct pseudo-words for ``language`` (same language + seed -> same words)."""
    rng = _rng(seed, "lexicon", language)
    onsets, nuclei, codas = _inventory(rng)
    n_cues, n_filler, n_content = int(knobs["cues_per_class"]), int(knobs["filler_vocab"]), int(knobs["content_vocab"])
    needed = n_cues * n_classes + n_filler + n_content
    reserved = {t.lower() for t in SHARED_NAMES + SHARED_PUNCT + SHARED_DIGITS}
    words: list[str] = []
    seen: set[str] = set()
    for _ in range(needed * 50):
        n_syll = int(rng.choice([1, 2, 2, 3]))
        word = "".join(onsets[rng.integers(len(onsets))] + nuclei[rng.integers(len(nuclei))]
                       for _ in range(n_syll)) + codas[rng.integers(len(codas))]
        if len(word) >= 3 and word not in seen and word not in reserved:
            seen.add(word)
            words.append(word)
            if len(words) == needed:
                break
    else:
        raise LangskewError(f"could not draw {needed} distinct words for language {language!r}; "
                            f"lower filler_vocab/content_vocab")
    cues = [words[c * n_cues:(c + 1) * n_cues] for c in range(n_classes)]
    rest = words[n_cues * n_classes:]
    return Lexicon(cues=cues, filler=rest[:n_filler], content=rest[n_filler:])


class _Writer:
    """Draws the tokens of one example from a lexicon."""

    def __init__(self, lex: Lexicon, rng: np.random.Generator, knobs: Mapping[str, Any]):
        self.lex, self.rng, self.k = lex, rng, knobs
        self.n_classes = len(lex.cues)

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.rng.integers(len(seq))]

    def is_clear(self) -> bool:
        """Whether this example gets strong evidence (else one weak cue)."""
        return bool(self.rng.random() < float(self.k["clear_rate"]))

    def cues(self, cls: int, clear: bool) -> list[str]:
        """Cue tokens: each from ``cls``'s list with the example's strength, else another class's."""
        n, strength = ((self.k["clear_tokens"], self.k["clear_strength"]) if clear
                       else (self.k["cue_tokens"], self.k["cue_strength"]))
        out = []
        for _ in range(int(n)):
            src = cls
            if self.rng.random() >= float(strength):
                src = int(self.choice([c for c in range(self.n_classes) if c != cls]))
            out.append(self.choice(self.lex.cues[src]))
        return out

    def filler(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            if self.rng.random() < float(self.k["shared_rate"]):
                out.append(self.choice(SHARED_DIGITS if self.rng.random() < 0.5 else SHARED_NAMES))
            else:
                out.append(self.choice(self.lex.filler))
        return out

    def mix(self, fixed: list[str], length: int, end: str = ".") -> str:
        """Place ``fixed`` tokens at random positions among filler (``length`` tokens in all)."""
        tokens = self.filler(max(length - len(fixed), 0))
        for tok in fixed:
            tokens.insert(int(self.rng.integers(len(tokens) + 1)), tok)
        return " ".join(tokens) + " " + end

    def single(self, cls: int) -> tuple[str, None]:
        """A review of 10-25 tokens (punctuation included)."""
        end = self.choice((".", ".", "!", "?"))
        return self.mix(self.cues(cls, self.is_clear()), int(self.rng.integers(9, 25)), end), None

    def pair(self, cls: int) -> tuple[str, str]:
        """(premise, hypothesis); class 0 entailment, 1 neutral, 2 contradiction (others: as neutral).

        Clear examples also show the class in how the hypothesis relates to the premise:
        entailment copies the premise's name and 2-3 content words, neutral copies at most
        one and adds a new content word, contradiction copies 1-3. Weak examples copy 1-2
        content words whatever the class.
        """
        clear = self.is_clear()
        name = self.choice(SHARED_NAMES)
        content = [self.lex.content[i] for i in self.rng.choice(len(self.lex.content), size=4, replace=False)]
        premise = name + " " + self.mix(content, int(self.rng.integers(7, 13)))
        if clear:
            overlap = int(self.choice({0: (2, 3), 2: (1, 2, 3)}.get(cls, (0, 1))))
            new_word, same_name = cls not in (0, 2), cls == 0 or self.rng.random() < 0.5
        else:
            overlap, new_word, same_name = int(self.choice((1, 2))), self.rng.random() < 0.5, self.rng.random() < 0.7
        fixed = content[:overlap] + self.cues(cls, clear) + ([self.choice(self.lex.content)] if new_word else [])
        subject = name if same_name else self.choice(SHARED_NAMES)
        hypothesis = subject + " " + self.mix(fixed, max(int(self.rng.integers(3, 8)), len(fixed)))
        return premise, hypothesis


def _check_args(task: str, languages: Sequence[str], labels: Sequence[Any],
                n_per_label: Mapping[str, int], knobs: Mapping[str, Any]) -> dict[str, Any]:
    if task not in ("pair", "single"):
        raise LangskewError(f"synthetic task {task!r} must be 'pair' or 'single'")
    if not languages:
        raise LangskewError("synthetic data needs at least one language")
    if len(labels) < 2:
        raise LangskewError(f"synthetic data needs at least two labels, got {list(labels)}")
    unknown = sorted(set(knobs) - set(DEFAULT_KNOBS))
    if unknown:
        raise LangskewError(f"unknown synthetic option {unknown[0]!r}; known: {', '.join(DEFAULT_KNOBS)}")
    for split in SPLITS:
        if split not in n_per_label:
            raise LangskewError(f"synthetic n_per_label lacks split {split!r}")
        if int(n_per_label[split]) < 1:
            raise LangskewError(f"synthetic n_per_label[{split!r}] must be >= 1")
    merged = {**DEFAULT_KNOBS, **knobs}
    if not 0 <= float(merged["label_noise"]) < 1:
        raise LangskewError("synthetic label_noise must be in [0, 1)")
    for key in ("cue_strength", "clear_strength", "clear_rate", "shared_rate"):
        if not 0 <= float(merged[key]) <= 1:
            raise LangskewError(f"synthetic {key} must be in [0, 1]")
    return merged


def _split_frame(task: str, language: str, lex: Lexicon, n_classes: int, n: int, split: str,
                 seed: int, knobs: Mapping[str, Any]) -> pd.DataFrame:
    """``n`` rows per class for one language and split, shuffled (deterministically)."""
    rng = _rng(seed, "rows", language, split)
    writer = _Writer(lex, rng, knobs)
    make = writer.pair if task == "pair" else writer.single
    labels = rng.permutation(np.repeat(np.arange(n_classes), n))
    rows = []
    for label in labels:
        source = int(label)
        if rng.random() < float(knobs["label_noise"]):
            source = int(rng.choice([c for c in range(n_classes) if c != label]))
        text, pair = make(source)
        rows.append((language, text, pair, int(label)))
    df = pd.DataFrame(rows, columns=["language", "text", "text_pair", "label"])
    df.insert(0, "id", [f"{language}-{split}-{i}" for i in range(len(df))])
    df["label"] = df["label"].astype("int64")
    return df


def generate_synthetic(task: str, languages: Sequence[str], labels: Sequence[Any],
                       n_per_label: Mapping[str, int], seed: int, **knobs: Any
                       ) -> tuple[dict[str, pd.DataFrame], dict]:
    """Return ({split: normalised frame}, meta) for a synthetic dataset.

    ``n_per_label`` gives rows per (language, label) for each split. The result depends
    only on the arguments (deterministic by ``seed``); languages are concatenated in the
    given order. ``knobs`` override :data:`DEFAULT_KNOBS`.
    """
    merged = _check_args(task, languages, labels, n_per_label, knobs)
    n_classes = len(labels)
    lexicons = {lang: build_lexicon(lang, n_classes, seed, merged) for lang in languages}
    frames = {split: pd.concat([_split_frame(task, lang, lexicons[lang], n_classes, int(n_per_label[split]),
                                             split, seed, merged) for lang in languages], ignore_index=True)
              for split in SPLITS}
    meta = {"task": task, "languages": list(languages), "labels": [str(x) for x in labels],
            "informative_tokens": {lang: lex.informative() for lang, lex in lexicons.items()},
            "synthetic": {"seed": int(seed), "n_per_label": {s: int(n_per_label[s]) for s in SPLITS}, **merged}}
    return frames, meta
