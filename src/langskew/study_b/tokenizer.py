"""One SentencePiece BPE tokenizer per base language, and the memmap token streams.

Tokenizer: BPE with byte fallback and split digits, ``pad_id`` 0, ``unk_id`` 1, the
end-of-document id ``eos_id`` 2, no BOS. Text is taken as it is, as in the authors'
tokenizers: identity normalisation (no NFKC), no dummy prefix (no "▁" added before the
first word) and whitespace kept (runs of spaces are not collapsed), so decoding a document
gives it back byte for byte. Training and encoding stream the documents (SentencePiece
samples ``input_sentence_size`` lines), so memory stays bounded as the corpus grows. Streams (the contract in
docs/CONVENTIONS.md): ``tokens/{lang}/{train,test}.bin`` hold the documents' ids joined
by the EOD id (a flat memmap; uint16 when the vocabulary fits), with ``meta.json``;
``tokens/parallel.npz`` holds the parallel sentences, each side tokenised by its own
language's tokenizer.
"""

from __future__ import annotations

import io
import itertools
import logging
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError
from langskew.io import atomic_path, write_json
from langskew.progress import progress
from langskew.study_b.corpus import iter_texts
from langskew.workflow import Job

logger = logging.getLogger(__name__)

PAD_ID, UNK_ID, EOD_ID = 0, 1, 2
ENCODE_CHUNK = 1024  # documents encoded per call (bounded memory, visible progress)

#: SentencePiece settings of the paper configuration (config: study_b.tokenizer).
DEFAULTS = {"model_type": "bpe", "byte_fallback": True, "split_digits": True, "character_coverage": 0.9995,
            "input_sentence_size": 2_000_000, "max_sentence_length": 16384, "hard_vocab_limit": True,
            "normalization_rule_name": "identity", "add_dummy_prefix": False, "remove_extra_whitespaces": False,
            "max_sentencepiece_length": 99, "allow_whitespace_only_pieces": True}


def _lines(documents: Iterable[str], max_chars: int) -> Iterator[str]:
    """Training sentences for SentencePiece: the documents' non-blank lines, cut to ``max_chars``."""
    for doc in documents:
        for line in doc.splitlines():
            if not line.strip():
                continue
            while line:
                yield line[:max_chars]
                line = line[max_chars:]


def train_tokenizer(documents: Iterable[str], model_path: str | Path, vocab_size: int,
                    options: dict | None = None, threads: int = 1, seed: int = 0) -> int:
    """Train a BPE SentencePiece model on ``documents``; write it to ``model_path``.

    ``options`` may set ``character_coverage``, ``input_sentence_size``,
    ``max_sentence_length``, ``byte_fallback``, ``split_digits``, ``model_type``,
    ``hard_vocab_limit`` (False lets a tiny corpus end below ``vocab_size``),
    ``normalization_rule_name``, ``add_dummy_prefix``, ``remove_extra_whitespaces``,
    ``max_sentencepiece_length`` and ``allow_whitespace_only_pieces`` (defaults:
    :data:`DEFAULTS`, the trainer spec of the authors' ``.model`` files). ``documents`` may be any iterable (it is read once).
    Returns the number of pieces.
    """
    import sentencepiece as spm

    opts = {**DEFAULTS, **{k: v for k, v in (options or {}).items() if k in DEFAULTS}}
    if vocab_size < 300 and opts["byte_fallback"]:
        raise LangskewError(f"study_b.tokenizer.vocab_size={vocab_size}: with byte_fallback the vocabulary "
                            f"needs at least 256 byte pieces, 3 special ids and the characters; use >= 300")
    spm.set_random_generator_seed(int(seed))  # sentence sampling is reproducible
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_lines(documents, int(opts["max_sentence_length"])), model_writer=buf,
        vocab_size=int(vocab_size), model_type=opts["model_type"], byte_fallback=bool(opts["byte_fallback"]),
        split_digits=bool(opts["split_digits"]), character_coverage=float(opts["character_coverage"]),
        input_sentence_size=int(opts["input_sentence_size"]), shuffle_input_sentence=True,
        max_sentence_length=int(opts["max_sentence_length"]), hard_vocab_limit=bool(opts["hard_vocab_limit"]),
        normalization_rule_name=str(opts["normalization_rule_name"]),
        add_dummy_prefix=bool(opts["add_dummy_prefix"]),
        remove_extra_whitespaces=bool(opts["remove_extra_whitespaces"]),
        max_sentencepiece_length=int(opts["max_sentencepiece_length"]),
        allow_whitespace_only_pieces=bool(opts["allow_whitespace_only_pieces"]),
        pad_id=PAD_ID, unk_id=UNK_ID, eos_id=EOD_ID, bos_id=-1, num_threads=max(int(threads), 1),
        minloglevel=2)
    with atomic_path(model_path) as tmp:
        tmp.write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    logger.info("trained tokenizer %s: %d pieces", model_path, sp.get_piece_size())
    return sp.get_piece_size()


def load_tokenizer(model_path: str | Path):
    import sentencepiece as spm

    if not Path(model_path).exists():
        raise LangskewError(f"tokenizer {model_path} does not exist")
    return spm.SentencePieceProcessor(model_file=str(model_path))


def stream_dtype(vocab_size: int) -> str:
    """Smallest unsigned dtype that holds every id."""
    return "uint16" if vocab_size <= np.iinfo(np.uint16).max + 1 else "uint32"


def flatten(encoded: Sequence[Sequence[int]], sep: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate id lists (each followed by ``sep`` if given); return (ids, offsets)."""
    extra = 0 if sep is None else 1
    lengths = np.fromiter((len(ids) + extra for ids in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.full(int(offsets[-1]), -1 if sep is None else sep, dtype=np.int64)
    for i, ids in enumerate(encoded):
        flat[offsets[i]:offsets[i] + len(ids)] = ids
    return flat, offsets


def _chunks(documents: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(documents)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def encode_documents(sp, documents: Iterable[str], path: str | Path, dtype: str, threads: int = 1,
                     desc: str = "encode") -> tuple[int, int]:
    """Write the documents' ids, each followed by the EOD id, to a flat binary file.

    Documents are read and encoded ``ENCODE_CHUNK`` at a time. Returns (tokens, documents).
    """
    eod = sp.eos_id()
    n = n_docs = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for chunk in progress(_chunks(documents, ENCODE_CHUNK), desc=desc, unit="chunk", leave=False):
            encoded = sp.encode(chunk, num_threads=max(int(threads), 1))
            flat, _ = flatten(encoded, sep=eod)
            flat.astype(dtype).tofile(fh)
            n += len(flat)
            n_docs += len(chunk)
    return n, n_docs


def write_token_streams(model_path: str | Path, language: str, documents: dict[str, Iterable[str]],
                        outputs: dict[str, str | Path], threads: int = 1) -> dict:
    """Encode the train/test documents (any iterables) into ``outputs["train"|"test"]`` and write
    ``outputs["meta"]``."""
    sp = load_tokenizer(model_path)
    vocab = sp.get_piece_size()
    dtype = stream_dtype(vocab)
    counts = {split: encode_documents(sp, documents[split], outputs[split], dtype, threads,
                                      desc=f"{language} {split}") for split in ("train", "test")}
    n_tokens = {split: c[0] for split, c in counts.items()}
    meta = {"language": language, "vocab_size": vocab, "dtype": dtype, "eod_id": sp.eos_id(),
            "pad_id": sp.pad_id(), "n_tokens": n_tokens, "tokenizer": str(model_path),
            "n_documents": {split: c[1] for split, c in counts.items()}}
    write_json(meta, outputs["meta"])
    logger.info("language %s: %s tokens (%s)", language, n_tokens, dtype)
    return meta


def encode_parallel(pairs: pd.DataFrame, tokenizers: dict[str, str | Path], path: str | Path) -> dict[str, int]:
    """Tokenise each column of ``pairs`` with its language's tokenizer into ``parallel.npz``.

    Arrays ``{lang}_ids`` and ``{lang}_offsets`` (sentence i = ids[offsets[i]:offsets[i+1]]).
    """
    arrays: dict[str, np.ndarray] = {}
    for lang, model_path in tokenizers.items():
        if lang not in pairs.columns:
            raise LangskewError(f"parallel corpus has no column for language {lang!r} (columns: {list(pairs.columns)})")
        encoded = load_tokenizer(model_path).encode(pairs[lang].astype(str).tolist())
        arrays[f"{lang}_ids"], arrays[f"{lang}_offsets"] = flatten(encoded)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return {lang: len(arrays[f"{lang}_offsets"]) - 1 for lang in tokenizers}


# ---------------------------------------------------------------------------------------
# Job functions
# ---------------------------------------------------------------------------------------
def tokenizer_job(job: Job, *, tokenizer: dict, seed: int) -> None:
    """Rule ``study_b_tokenizer``: input.train parquet -> output[0] SentencePiece model (settings: ``tokenizer``)."""
    cfg = dict(tokenizer)
    train_tokenizer(iter_texts(job.input.train), job.output[0], int(cfg["vocab_size"]), cfg, job.threads, int(seed))


def tokens_job(job: Job, *, language: str) -> None:
    """Rule ``study_b_tokens``: input.tokenizer, input.train/test -> output.train/test/meta."""
    docs = {split: iter_texts(job.input[split]) for split in ("train", "test")}
    write_token_streams(job.input.tokenizer, language, docs,
                        {"train": job.output.train, "test": job.output.test, "meta": job.output.meta}, job.threads)


def parallel_tokens_job(job: Job, *, languages: list[str]) -> None:
    """Rule ``study_b_parallel_tokens``: input.pairs parquet + input.tokenizers (one per language) -> output[0] npz."""
    tokenizers = dict(zip(languages, job.input.tokenizers))
    counts = encode_parallel(pd.read_parquet(job.input.pairs), tokenizers, job.output[0])
    logger.info("parallel sentences: %s", counts)
