"""Languages of a Study B run: cloned languages, the real EN+FR pair, and batch sampling.

A *base language* is one token stream written by :mod:`langskew.study_b.tokenizer`
(``tokens/{lang}/meta.json`` + ``train.bin``/``test.bin``). A run's *model languages* are
built from base languages:

* ``clone``: K copies of one base language. Language i owns ids [i*V, (i+1)*V); a
  sequence of language i is the base sequence with every cloned id shifted by i*V. The
  padding id is never shifted. With ``clone_fraction`` < 1 a fixed, seeded subset of ids
  is cloned (the authors' draw, :func:`cloned_mask`) and the others are shared "anchor" ids. Decoding is ``id % V``.
* ``real``: EN + FR with their own tokenizers. ``disjoint``: FR id + V_en. ``anchored``:
  an FR piece whose string is in the EN vocabulary maps to the EN id, the other FR pieces
  get new ids after V_en.
* ``mono``: one base language as is.

:class:`Mixture` draws the language of every sequence with the schedule's probabilities
at the current step, and its :meth:`Mixture.batch` is a pure function of
(seed, step, rank, world_size), so resuming training needs only the step.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from langskew.errors import LangskewError, require_positive
from langskew.io import read_json

logger = logging.getLogger(__name__)

KINDS = ("clone", "real", "mono")
VOCAB_MODES = ("disjoint", "anchored")


# ---------------------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------------------
def parse_schedule(text: str) -> list[list[float]]:
    """Parse a two-language stage schedule such as ``"0.1_0.9"`` into prob vectors.

    Each underscore-separated number is p(L2) for one equal stage of training:
    ``"0.1_0.9"`` -> ``[[0.9, 0.1], [0.1, 0.9]]`` (p 0.1 for the first half, 0.9 after).
    """
    try:
        values = [float(v) for v in str(text).split("_")]
    except ValueError as exc:
        raise LangskewError(f"schedule {text!r}: expected numbers joined by '_', e.g. '0.1_0.9'") from exc
    for v in values:
        if not 0.0 <= v <= 1.0:
            raise LangskewError(f"schedule {text!r}: p(L2)={v} is outside [0, 1]")
    return [[1.0 - v, v] for v in values]


def check_schedule(schedule: Sequence[Sequence[float]], n_languages: int, where: str = "schedule") -> np.ndarray:
    """Validate a list of per-stage probability vectors; return it as a float array [S, K]."""
    arr = np.asarray(schedule, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != n_languages:
        raise LangskewError(f"{where}: expected a list of stages, each with {n_languages} probabilities; "
                            f"got {schedule!r}")
    if (arr < 0).any() or not np.allclose(arr.sum(axis=1), 1.0, atol=1e-6):
        raise LangskewError(f"{where}: every stage must hold non-negative probabilities summing to 1; "
                            f"got {schedule!r}")
    return arr / arr.sum(axis=1, keepdims=True)


def stage_index(step: int, total_steps: int, n_stages: int) -> int:
    """Index of the equal training stage that ``step`` (0-based) falls in."""
    require_positive("training stages", {"total_steps": total_steps})
    return min(max(int(step), 0) * n_stages // total_steps, n_stages - 1)


def cloned_mask(vocab_size: int, clone_fraction: float, pad_id: int | None, seed: int) -> np.ndarray:
    """Boolean mask over base ids: True where the id is cloned, False for shared anchors.

    The authors' draw: all ``V`` ids shuffled with ``random.Random(seed)`` (they used seed
    0, this workflow's default ``study_b.seed``), the first ``int(clone_fraction * V)`` are
    cloned. The padding id is never shifted, so it stays shared even when drawn.
    """
    import random

    if not 0.0 <= clone_fraction <= 1.0:
        raise LangskewError(f"clone_fraction={clone_fraction} is outside [0, 1]")
    ids = list(range(vocab_size))
    random.Random(int(seed)).shuffle(ids)
    mask = np.zeros(vocab_size, dtype=bool)
    mask[ids[:int(clone_fraction * vocab_size)]] = True
    if pad_id is not None:
        mask[pad_id] = False
    return mask


def clone_ids(ids: np.ndarray, lang_index: int, vocab_size: int, mask: np.ndarray | None = None,
              pad_id: int | None = None) -> np.ndarray:
    """Map base ids into language ``lang_index``: cloned ids shifted by ``lang_index * V``.

    ``mask`` (from :func:`cloned_mask`) marks the cloned ids; without it every id except
    ``pad_id`` is cloned.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if mask is None:
        mask = np.ones(vocab_size, dtype=bool)
        if pad_id is not None:
            mask[pad_id] = False
    return ids + mask[ids].astype(np.int64) * (lang_index * vocab_size)


def decode_ids(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Base ids of cloned-language ids: ``id % V``."""
    return np.asarray(ids, dtype=np.int64) % vocab_size


@dataclass(frozen=True)
class AnchoredVocab:
    """Result of merging a second vocabulary into the first by piece string."""

    mapping: np.ndarray  # base id of language 2 -> model id
    n_shared: int        # pieces of language 2 that reuse a language-1 id
    vocab_size: int      # total model vocabulary


def anchored_mapping(en_pieces: Sequence[str], fr_pieces: Sequence[str]) -> AnchoredVocab:
    """Map FR pieces onto EN ids where the string exists in the EN vocabulary.

    Other FR pieces get fresh ids ``V_en, V_en + 1, ...`` in FR id order. Returns the
    mapping (indexed by FR id), the shared count and the total vocabulary size.
    """
    en_index: dict[str, int] = {}
    for i, piece in enumerate(en_pieces):
        en_index.setdefault(piece, i)
    mapping = np.empty(len(fr_pieces), dtype=np.int64)
    next_id = len(en_pieces)
    shared = 0
    for j, piece in enumerate(fr_pieces):
        if piece in en_index:
            mapping[j] = en_index[piece]
            shared += 1
        else:
            mapping[j] = next_id
            next_id += 1
    return AnchoredVocab(mapping=mapping, n_shared=shared, vocab_size=next_id)


def disjoint_mapping(n_first: int, n_second: int) -> AnchoredVocab:
    """Second language's ids shifted past the first's: FR id + V_en; nothing shared."""
    return AnchoredVocab(mapping=np.arange(n_second, dtype=np.int64) + n_first, n_shared=0,
                         vocab_size=n_first + n_second)


# ---------------------------------------------------------------------------------------
# Token streams
# ---------------------------------------------------------------------------------------
@dataclass
class TokenStream:
    """One base language's token streams (memmaps) and metadata."""

    meta_path: Path
    meta: dict
    train: np.ndarray
    test: np.ndarray

    @property
    def language(self) -> str:
        return self.meta["language"]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def pieces(self) -> list[str]:
        """The tokenizer's pieces in id order (needed for the anchored vocabulary)."""
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(_resolve(self.meta["tokenizer"], self.meta_path)))
        return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def _resolve(path: str, meta_path: Path) -> Path:
    """A path from meta.json: as written (relative to the working dir) or beside the meta."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    beside = meta_path.parent / p.name
    if beside.exists():
        return beside
    raise LangskewError(f"{meta_path}: tokenizer file {path!r} not found")


def open_stream(meta_path: str | os.PathLike) -> TokenStream:
    """Open ``tokens/{lang}/meta.json`` and memory-map its train/test streams."""
    meta_path = Path(meta_path)
    meta = read_json(meta_path)
    for key in ("language", "vocab_size", "dtype", "eod_id", "pad_id", "n_tokens"):
        if key not in meta:
            raise LangskewError(f"{meta_path}: key {key!r} is missing")
    arrays = {}
    for split in ("train", "test"):
        n = int(meta["n_tokens"][split])
        path = meta_path.parent / f"{split}.bin"
        arrays[split] = (np.memmap(path, dtype=meta["dtype"], mode="r", shape=(n,)) if n
                         else np.zeros(0, dtype=meta["dtype"]))
    return TokenStream(meta_path=meta_path, meta=meta, train=arrays["train"], test=arrays["test"])


# ---------------------------------------------------------------------------------------
# The mixture
# ---------------------------------------------------------------------------------------
@dataclass
class Mixture:
    """Model languages of one run and deterministic batches drawn from them.

    ``tables[k]`` maps base ids of ``streams[source[k]]`` to model ids of language k.
    """

    run: dict
    seed: int
    streams: list[TokenStream]
    source: list[int]                 # model language -> index into streams
    tables: list[np.ndarray]          # model language -> base-id lookup table
    vocab_size: int
    language_names: list[str]
    schedule: np.ndarray              # [stages, K]
    total_steps: int
    data_fraction: float = 1.0
    info: dict = field(default_factory=dict)
    parallel_path: Path | None = None
    _perm_cache: dict = field(default_factory=dict, repr=False)
    _count_cache: dict = field(default_factory=dict, repr=False)

    # -- languages and schedule ---------------------------------------------------------
    @property
    def n_languages(self) -> int:
        return len(self.language_names)

    def stage_probs(self, step: int, total_steps: int | None = None) -> list[float]:
        """Language probabilities of the stage that ``step`` falls in."""
        total = self.total_steps if total_steps is None else int(total_steps)
        return self.schedule[stage_index(step, total, len(self.schedule))].tolist()

    def expected_tokens(self, batch_size: int, context: int, total_steps: int | None = None) -> dict[str, float]:
        """Expected training tokens of each model language over the whole run."""
        total = self.total_steps if total_steps is None else int(total_steps)
        bounds = [s * total // len(self.schedule) for s in range(len(self.schedule) + 1)]
        steps = np.diff(bounds).astype(np.float64)
        per_lang = (steps[:, None] * self.schedule).sum(axis=0) * batch_size * context
        return dict(zip(self.language_names, per_lang.tolist()))

    def map_ids(self, ids: np.ndarray, lang_index: int) -> np.ndarray:
        """Base ids of language ``lang_index``'s stream mapped into model ids."""
        return self.tables[lang_index][np.asarray(ids, dtype=np.int64)]

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """Model ids of a cloned or mono run back to base ids (``id % V``)."""
        if self.run["kind"] == "real":
            raise LangskewError("decode: ids of a real-language run are decoded with each language's tokenizer")
        return decode_ids(ids, self.streams[0].vocab_size)

    # -- training batches ---------------------------------------------------------------
    def _train_limit(self, stream_index: int) -> int:
        n = len(self.streams[stream_index].train)
        return max(int(n * min(self.data_fraction, 1.0)), 0)

    def _n_chunks(self, stream_index: int, context: int) -> int:
        return (self._train_limit(stream_index) - 1) // context

    def _permutation(self, stream_index: int, context: int, epoch: int) -> np.ndarray:
        """Seeded permutation of a stream's chunks for one epoch (the latest few are cached)."""
        key = (stream_index, context, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) >= 8:
                self._perm_cache.pop(next(iter(self._perm_cache)))
            n = self._n_chunks(stream_index, context)
            rng = np.random.default_rng([self.seed, 0xDA7A, stream_index, context, epoch])
            self._perm_cache[key] = rng.permutation(n)
        return self._perm_cache[key]

    def _chunk(self, stream_index: int, context: int, position: int) -> int:
        """Chunk index of the ``position``-th sequence drawn from a stream: an epoch-wise permutation.

        Consecutive positions walk through a seeded permutation of the stream's
        non-overlapping chunks and a new permutation starts each pass (epoch), so no chunk
        is read twice before the whole stream has been read once.
        """
        n = self._n_chunks(stream_index, context)
        return int(self._permutation(stream_index, context, position // n)[position % n])

    def _languages_of_step(self, step: int, global_b: int) -> np.ndarray:
        """Model language of each of the ``global_b`` slots of ``step`` (seeded by (seed, step))."""
        rng = np.random.default_rng([self.seed, 0xBA7C, int(step)])
        return rng.choice(self.n_languages, size=global_b, p=self.stage_probs(step))

    def _drawn_before(self, step: int, global_b: int) -> np.ndarray:
        """Sequences drawn from each stream over the steps before ``step`` (global batch ``global_b``).

        Replays the language draws of the earlier steps; the counts of every 1,024th step
        and of the latest step asked for are cached, so consecutive steps cost one draw each.
        """
        every = 1024
        cache = self._count_cache.setdefault(int(global_b), {"marks": {0: np.zeros(len(self.streams), np.int64)},
                                                            "latest": (0, np.zeros(len(self.streams), np.int64))})
        latest_step, latest = cache["latest"]
        base = max(k for k in cache["marks"] if k <= step)
        counts = (latest if base <= latest_step <= step else cache["marks"][base]).copy()
        source = np.asarray(self.source, dtype=np.int64)
        for t in range(latest_step if base <= latest_step <= step else base, int(step)):
            counts += np.bincount(source[self._languages_of_step(t, global_b)], minlength=len(self.streams))
            if (t + 1) % every == 0:
                cache["marks"][t + 1] = counts.copy()
        cache["latest"] = (int(step), counts.copy())
        return counts

    def batch(self, step: int, batch_size: int, context: int, rank: int = 0, world_size: int = 1) -> dict:
        """Sequences of this rank at ``step``: dict(x, y: LongTensor[B, T], lang: LongTensor[B]).

        The global batch holds ``batch_size * world_size`` sequences; rank r gets slots
        [r*B, (r+1)*B). The language of each slot is drawn with the stage probabilities
        at ``step`` from an RNG seeded by (seed, step), so the batch depends only on
        (seed, step, rank, world_size). Each stream is read in order of its own draws: the
        sequence of a slot is the stream's next one after all drawn from it at earlier
        steps and earlier slots of this step (clones share their base language's stream;
        a language drawn with p reads p of the run's sequences, as the authors' loaders).
        """
        if not 0 <= rank < world_size:
            raise LangskewError(f"rank {rank} is outside 0..{world_size - 1}")
        for s in set(self.source):
            if self._n_chunks(s, context) < 1:
                raise LangskewError(f"language {self.streams[s].language!r}: the train stream "
                                    f"({self._train_limit(s)} tokens after data_fraction) is shorter "
                                    f"than one context of {context + 1} tokens")
        global_b = batch_size * world_size
        langs = self._languages_of_step(step, global_b)
        sources = np.asarray(self.source, dtype=np.int64)[langs]
        before = self._drawn_before(step, global_b)
        lo = rank * batch_size
        x = np.empty((batch_size, context), dtype=np.int64)
        y = np.empty((batch_size, context), dtype=np.int64)
        for row, slot in enumerate(range(lo, lo + batch_size)):
            k, s = int(langs[slot]), int(sources[slot])
            position = int(before[s]) + int(np.count_nonzero(sources[:slot] == s))
            start = self._chunk(s, context, position) * context
            seq = self.map_ids(self.streams[s].train[start:start + context + 1], k)
            x[row], y[row] = seq[:-1], seq[1:]
        import torch  # here, not at the top: the workflow imports this module while it parses

        return dict(x=torch.from_numpy(x), y=torch.from_numpy(y),
                    lang=torch.from_numpy(langs[lo:lo + batch_size].astype(np.int64)))

    def data_passes(self, sequences: Sequence[float], context: int) -> dict[str, float]:
        """Passes each model language's training stream went through, from the sequences drawn per language.

        ``sequences[k]``: sequences of model language k drawn in the run. A stream's passes
        are the sequences drawn from it (all languages that read it: clones share one) over
        its ``context``-token chunks (after ``data_fraction``); above 1 some data was seen twice.
        """
        per_stream = np.zeros(len(self.streams), dtype=np.float64)
        for k, n in enumerate(sequences):
            per_stream[self.source[k]] += float(n)
        return {name: float(per_stream[self.source[k]] / max(self._n_chunks(self.source[k], context), 1))
                for k, name in enumerate(self.language_names)}

    # -- evaluation data ----------------------------------------------------------------
    def heldout(self, lang_index: int, max_tokens: int | None = None) -> np.ndarray:
        """Held-out (test) stream of model language ``lang_index`` in model ids: all of it
        (``max_tokens`` None, the authors' evaluation), or :func:`heldout_spread`'s seeded spread of
        ``max_tokens`` tokens over every held-out document (the same for clones of one base language)."""
        if not 0 <= lang_index < self.n_languages:
            raise LangskewError(f"language index {lang_index} is outside 0..{self.n_languages - 1}")
        stream = self.streams[self.source[lang_index]]
        test = stream.test
        if max_tokens is not None:
            test = heldout_spread(test, int(stream.meta["eod_id"]), int(max_tokens),
                                  [self.seed, self.source[lang_index]])
        return self.map_ids(test, lang_index)

    def parallel(self, n: int, min_len: int, max_len: int, pair: tuple[int, int] = (0, 1),
                 source: str = "parallel") -> list[tuple[np.ndarray, np.ndarray]]:
        """The first ``n`` parallel (language a, language b) id sequences of the same content
        (fewer is an error naming how many exist).

        ``source="parallel"`` (the authors' construction): the parallel sentences
        (``tokens/parallel.npz``) packed into sequences of ``min_len`` to ``max_len`` tokens
        on both sides (:func:`pack_parallel`). Real languages use each side in its own
        language; clones use the cloned base language's side in both clones (identical
        positions). ``source="heldout"`` (clones only): consecutive held-out windows of
        ``max_len`` base tokens mapped into both clones.
        """
        a, b = pair
        if self.n_languages < 2 or not (0 <= a < self.n_languages and 0 <= b < self.n_languages):
            raise LangskewError(f"parallel: run {self.run.get('id')!r} has no language pair {pair}")
        if not 1 <= int(min_len) <= int(max_len):
            raise LangskewError(f"parallel: need 1 <= parallel_min_len <= parallel_max_len, got {min_len}, {max_len}")
        if source not in ("parallel", "heldout"):
            raise LangskewError(f"parallel: source {source!r} is not one of parallel, heldout")
        if self.run["kind"] == "clone" and source == "heldout":
            test = self.streams[0].test
            n_avail = len(test) // max_len
            if n_avail < n:
                raise LangskewError(f"parallel: the held-out stream holds {n_avail} windows of {max_len} tokens, "
                                    f"fewer than the {n} asked for (study_b.eval.n_parallel)")
            windows = [test[i * max_len:(i + 1) * max_len] for i in range(n)]
            return [(self.map_ids(w, a), self.map_ids(w, b)) for w in windows]
        if self.parallel_path is None or not Path(self.parallel_path).exists():
            raise LangskewError(f"parallel: no parallel.npz for run {self.run.get('id')!r} "
                                f"(looked for {self.parallel_path})")
        packed = load_packed_parallel(self.parallel_path, int(min_len), int(max_len))
        langs = [self.streams[self.source[k]].language for k in (a, b)]
        for lang in langs:
            if lang not in packed:
                raise LangskewError(f"{self.parallel_path}: no parallel sentences of language {lang!r} "
                                    f"(has {sorted(packed)}); for clones set study_b.eval.clone_parallel: heldout")
        if len(packed[langs[0]]) < n:
            raise LangskewError(f"{self.parallel_path}: {len(packed[langs[0]])} parallel sequences of {min_len} to "
                                f"{max_len} tokens could be packed, fewer than the {n} asked for "
                                f"(study_b.eval.n_parallel); read more pairs or lower parallel_min_len")
        return [(self.map_ids(sa, a), self.map_ids(sb, b))
                for sa, sb in zip(packed[langs[0]][:n], packed[langs[1]][:n])]


def heldout_spread(test: np.ndarray, eod_id: int, max_tokens: int, seed) -> np.ndarray:
    """A seeded spread of ``max_tokens`` tokens over every document of a held-out stream.

    The documents are the stretches between EOD ids. Each gives one contiguous span of its
    text at a seeded random offset, its length the document's share of ``max_tokens``
    (``max_tokens - n_documents`` split in proportion to the documents' lengths, largest
    remainders first; a document whose share rounds to zero gives its EOD alone), followed by
    one EOD id: ``max_tokens`` tokens in all, in document order. Within a span every token
    keeps its document's preceding tokens of the span as context; a window reaching back past
    the span's start sees the previous span (another document), as windows do at document
    boundaries of the whole stream. A stream of at most ``max_tokens`` tokens is returned whole. Fewer than two tokens per
    document is a LangskewError (study_b.eval.max_tokens too small to reach every document).
    """
    test = np.asarray(test)
    if max_tokens >= len(test):
        return test
    ends = np.flatnonzero(test == eod_id)
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [len(test)]])
    keep = stops > starts  # documents with text (an EOD right after another, or at the end, has none)
    starts, stops = starts[keep], stops[keep]
    if max_tokens < 2 * len(starts):
        raise LangskewError(f"study_b.eval.max_tokens={max_tokens} is below two tokens per held-out document "
                            f"({len(starts)} documents, {len(test)} tokens): raise it, or null for all")
    lengths = stops - starts
    budget = max_tokens - len(starts)  # one EOD after every span
    share = budget * lengths / lengths.sum()
    quota = np.floor(share).astype(np.int64)
    quota[np.argsort(-(share - quota), kind="stable")[: budget - int(quota.sum())]] += 1
    quota = np.minimum(quota, lengths)
    rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 0x5B8EAD])
    offsets = rng.integers(0, lengths - quota + 1)
    pieces = []
    for start, offset, n in zip(starts, offsets, quota):
        pieces += [test[start + offset:start + offset + n], np.array([eod_id], dtype=test.dtype)]
    return np.concatenate(pieces)


def pack_parallel(sides: dict[str, Sequence[np.ndarray]], min_len: int, max_len: int) -> dict[str, list[np.ndarray]]:
    """Pack parallel sentences into parallel sequences, as the authors built theirs.

    Sentences are taken in order; a sentence pair longer than ``max_len`` on any side is
    skipped. A pair joins the current sequence while every side stays within ``max_len``
    tokens; otherwise the current sequence is closed (and dropped when a side is shorter
    than ``min_len``) and the pair starts the next one. The last sequence is kept only when
    every side reaches ``min_len``. Returns {language: list of sequences}, aligned by index.
    """
    langs = list(sides)
    n = {len(v) for v in sides.values()}
    if len(n) != 1:
        raise LangskewError(f"parallel: sides have different numbers of sentences: "
                            f"{ {k: len(v) for k, v in sides.items()} }")
    out: dict[str, list[np.ndarray]] = {lang: [] for lang in langs}
    current: dict[str, list[np.ndarray]] = {lang: [] for lang in langs}
    lengths = dict.fromkeys(langs, 0)

    def close() -> None:
        if all(lengths[lang] >= min_len for lang in langs):
            for lang in langs:
                out[lang].append(np.concatenate(current[lang]).astype(np.int64))

    for i in range(n.pop() if n else 0):
        sent = {lang: np.asarray(sides[lang][i]) for lang in langs}
        if any(len(v) > max_len for v in sent.values()):
            continue
        if not all(lengths[lang] + len(sent[lang]) <= max_len for lang in langs):
            close()
            current = {lang: [] for lang in langs}
            lengths = dict.fromkeys(langs, 0)
        for lang in langs:
            current[lang].append(sent[lang])
            lengths[lang] += len(sent[lang])
    if any(lengths.values()):
        close()
    return out


def load_packed_parallel(path: str | os.PathLike, min_len: int, max_len: int) -> dict[str, list[np.ndarray]]:
    """The sentences of ``parallel.npz`` (``{lang}_ids`` / ``{lang}_offsets``) packed by :func:`pack_parallel`."""
    data = np.load(path)
    langs = sorted(k[:-len("_ids")] for k in data.files if k.endswith("_ids"))
    sides = {}
    for lang in langs:
        if f"{lang}_offsets" not in data.files:
            raise LangskewError(f"{path}: array {lang + '_offsets'!r} is missing")
        ids, off = data[f"{lang}_ids"], data[f"{lang}_offsets"]
        sides[lang] = [ids[off[i]:off[i + 1]] for i in range(len(off) - 1)]
    return pack_parallel(sides, min_len, max_len)


# ---------------------------------------------------------------------------------------
# Construction from a run spec
# ---------------------------------------------------------------------------------------
def run_schedule(run: dict, n_languages: int) -> np.ndarray:
    """The run's stage schedule as an array [stages, K] (a string is parsed as p(L2) stages)."""
    schedule = run.get("schedule")
    if schedule is None:
        schedule = [[1.0 / n_languages] * n_languages]
    elif isinstance(schedule, str):
        schedule = parse_schedule(schedule)
    return check_schedule(schedule, n_languages, where=f"run {run.get('id')!r}: schedule")


def _streams_for(run: dict, token_metas: Sequence[str]) -> list[TokenStream]:
    """Open the token metas and order them as ``run["base_languages"]``."""
    streams = [open_stream(p) for p in token_metas]
    by_lang = {s.language: s for s in streams}
    wanted = list(run.get("base_languages") or [s.language for s in streams])
    missing = [lang for lang in wanted if lang not in by_lang]
    if missing:
        raise LangskewError(f"run {run.get('id')!r}: no token stream for base language {missing[0]!r} "
                            f"(got {sorted(by_lang)})")
    return [by_lang[lang] for lang in wanted]


def build_mixture(run: dict, token_metas: list[str], seed: int, parallel_path: str | None = None) -> Mixture:
    """Build the model languages of ``run`` (a run spec of :mod:`grid`) over its token streams.

    ``token_metas`` are the ``tokens/{lang}/meta.json`` paths of ``run["base_languages"]``
    (any order). ``parallel_path`` defaults to ``tokens/parallel.npz`` beside the folders.
    """
    kind = run.get("kind")
    if kind not in KINDS:
        raise LangskewError(f"run {run.get('id')!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
    streams = _streams_for(run, token_metas)
    if parallel_path is None:
        parallel_path = streams[0].meta_path.parent.parent / "parallel.npz"
    common = dict(run=run, seed=int(seed), streams=streams, total_steps=int(run.get("steps") or 1),
                  data_fraction=float(run.get("data_fraction", 1.0) or 1.0), parallel_path=Path(parallel_path))
    if kind == "clone":
        return _clone_mixture(run, streams, common)
    if kind == "real":
        return _real_mixture(run, streams, common)
    if len(streams) != 1:
        raise LangskewError(f"run {run.get('id')!r}: a mono run takes one base language, got {len(streams)}")
    V = streams[0].vocab_size
    return Mixture(source=[0], tables=[np.arange(V, dtype=np.int64)], vocab_size=V,
                   language_names=[streams[0].language], schedule=run_schedule({**run, "schedule": [[1.0]]}, 1),
                   info={"vocab_size": V}, **common)


def _clone_mixture(run: dict, streams: list[TokenStream], common: dict) -> Mixture:
    if len(streams) != 1:
        raise LangskewError(f"run {run.get('id')!r}: a clone run takes one base language, got {len(streams)}")
    K = int(run.get("n_languages", 2))
    if K < 2:
        raise LangskewError(f"run {run.get('id')!r}: n_languages must be >= 2 for clones, got {K}")
    V = streams[0].vocab_size
    pad = streams[0].meta.get("pad_id")
    mask = cloned_mask(V, float(run.get("clone_fraction", 1.0)), pad, common["seed"])
    tables = [clone_ids(np.arange(V), k, V, mask) for k in range(K)]
    info = {"vocab_size": K * V, "base_vocab_size": V, "n_cloned": int(mask.sum()),
            "n_anchors": int(V - mask.sum())}
    return Mixture(source=[0] * K, tables=tables, vocab_size=K * V,
                   language_names=[f"L{k + 1}" for k in range(K)], schedule=run_schedule(run, K),
                   info=info, **common)


def _real_mixture(run: dict, streams: list[TokenStream], common: dict) -> Mixture:
    if len(streams) != 2:
        raise LangskewError(f"run {run.get('id')!r}: a real-language run takes two base languages, "
                            f"got {len(streams)}")
    mode = run.get("vocab_mode") or "disjoint"
    first, second = streams
    if mode == "disjoint":
        merged = disjoint_mapping(first.vocab_size, second.vocab_size)
    elif mode == "anchored":
        merged = anchored_mapping(first.pieces(), second.pieces())
    else:
        raise LangskewError(f"run {run.get('id')!r}: vocab_mode {mode!r} is not one of {', '.join(VOCAB_MODES)}")
    tables = [np.arange(first.vocab_size, dtype=np.int64), merged.mapping.copy()]
    pad_first, pad_second = first.meta.get("pad_id"), second.meta.get("pad_id")
    if pad_first is not None and pad_second is not None:
        tables[1][pad_second] = pad_first  # padding is shared in every vocabulary mode
    logger.info("run %s: %s vocabulary, %d shared pieces, %d ids in total", run.get("id"), mode,
                merged.n_shared, merged.vocab_size)
    info = {"vocab_size": merged.vocab_size, "vocab_mode": mode, "n_shared": merged.n_shared,
            "base_vocab_sizes": [first.vocab_size, second.vocab_size]}
    return Mixture(source=[0, 1], tables=tables, vocab_size=merged.vocab_size,
                   language_names=[first.language, second.language], schedule=run_schedule(run, 2),
                   info=info, **common)
