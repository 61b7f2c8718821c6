"""Models for Study A: load a hub/local classifier, or build a tiny encoder for offline runs.

The tiny model exists so that the whole workflow (and the tests) can run without network:
a tokenizer trained on the run's own texts plus a randomly initialised encoder, saved with
``save_pretrained`` so that it loads through exactly the same ``AutoTokenizer`` /
``AutoModelForSequenceClassification`` path as a hub checkpoint. Two architectures, the
studies' two model families (``architecture`` in the tiny block):

- ``bert`` (the default, mBERT's family): a cased WordPiece tokenizer, ``[CLS] A [SEP] B [SEP]``
  with token type ids, a ``BertModel`` with a pooler;
- ``xlmr`` (XLM-R's family): a SentencePiece unigram model saved as ``sentencepiece.bpe.model``
  and read by ``XLMRobertaTokenizer`` (transformers' own conversion, XLM-R's ids: ``<s>`` 0,
  ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` last), ``<s> A </s></s> B </s>`` without
  token type ids, an ``XLMRobertaModel`` without a pooler (its classification head reads the
  first token), positions offset by two as in RoBERTa (``model_max_length`` =
  ``max_position_embeddings - 2``, as xlm-roberta-base's 512 of 514).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from langskew.errors import LangskewError
from langskew.io import atomic_dir
from langskew.paths import as_list
from langskew.workflow import Job

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ARCHITECTURES = ("bert", "xlmr")
#: RoBERTa's position ids start after the padding id (1): two positions are never a token's
XLMR_POSITION_OFFSET = 2
ARCH_DEFAULTS: dict[str, int] = {
    "vocab_size": 2000,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 128,
}


def architecture_of(arch: Mapping[str, Any] | None) -> str:
    """The tiny block's ``architecture`` (``bert`` when unset); any other value is an error."""
    name = (arch or {}).get("architecture", "bert")
    if name not in ARCHITECTURES:
        raise LangskewError(f"tiny model architecture {name!r}: expected one of {', '.join(ARCHITECTURES)}")
    return str(name)


def _arch(arch: Mapping[str, Any] | None) -> dict[str, int]:
    """Merge ``arch``'s sizes over the defaults; reject unknown keys and inconsistent sizes."""
    # the seed is passed on its own, the architecture read by architecture_of
    arch = {k: v for k, v in (arch or {}).items() if k not in ("seed", "architecture")}
    unknown = sorted(set(arch) - set(ARCH_DEFAULTS))
    if unknown:
        raise LangskewError(f"tiny model arch: unknown key {unknown[0]!r}; known: {', '.join(ARCH_DEFAULTS)}")
    merged = {**ARCH_DEFAULTS, **{k: int(v) for k, v in arch.items()}}
    if merged["hidden_size"] % merged["num_attention_heads"]:
        raise LangskewError(f"tiny model arch: hidden_size {merged['hidden_size']} is not divisible by "
                            f"num_attention_heads {merged['num_attention_heads']}")
    return merged


def wordpiece_vocab(words: Mapping[str, int], vocab_size: int) -> list[str]:
    """A WordPiece vocabulary of about ``vocab_size`` entries for words with their counts.

    The subwords are learned by SentencePiece BPE on the words (weighted by count, in sorted
    order), which gives the same vocabulary on every run: the ``tokenizers`` WordPiece trainer
    breaks ties between equally frequent pairs in hash-map order, which changes from one
    process to the next (huggingface/tokenizers#1794). A piece that starts a word is kept as
    it is, one inside a word gets the ``##`` prefix; every character is added in both forms, so
    every word of the texts can be segmented. Like WordPiece, a piece may join letters and
    digits or characters of two scripts. Order: special tokens, characters, ``##`` characters,
    then the pieces as SentencePiece ranks them.
    """
    import io
    import tempfile

    import sentencepiece as spm

    chars = sorted({c for w in words for c in w})
    head = SPECIAL_TOKENS + chars + [f"##{c}" for c in chars]
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "words.tsv"
        table.write_text("".join(f"{w}\t{words[w]}\n" for w in sorted(words)), encoding="utf-8")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            input=str(table), input_format="tsv", model_writer=model, model_type="bpe",
            vocab_size=max(vocab_size - len(head), len(chars) + 4), hard_vocab_limit=False,
            character_coverage=1.0, normalization_rule_name="identity", split_by_number=False,
            split_by_unicode_script=False, unk_id=0, bos_id=-1, eos_id=-1,
            num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_unknown(i) or sp.is_control(i))]
    subwords = [p[1:] if p.startswith("\u2581") else f"##{p}" for p in pieces]
    return list(dict.fromkeys(head + [t for t in subwords if t and t != "##"]))


def train_wordpiece(texts: Iterable[str], vocab_size: int, model_max_length: int):
    """A cased WordPiece tokenizer learned from ``texts``, wrapped as a BERT tokenizer.

    The same normalisation and word splitting as bert-base-multilingual-cased; the vocabulary
    from :func:`wordpiece_vocab` (the same on every run). The post-processor adds
    ``[CLS] A [SEP]`` and ``[CLS] A [SEP] B [SEP]`` (with token type ids 0/1).
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = Counter(w for text in texts for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = wordpiece_vocab(words, vocab_size)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return BertTokenizerFast(tokenizer_object=tok, do_lower_case=False, unk_token="[UNK]",
                             sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                             mask_token="[MASK]", model_max_length=model_max_length)


def train_sentencepiece(texts: Iterable[str], vocab_size: int, model_max_length: int,
                        folder: str | os.PathLike):
    """An XLM-R tokenizer learned from ``texts``: ``folder/sentencepiece.bpe.model`` and its reader.

    A SentencePiece unigram model (XLM-R's kind, with its default normalisation and ids
    ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2) trained on the texts in their order with one thread,
    which gives the same model on every run, written under XLM-R's file name and loaded with
    ``XLMRobertaTokenizer.from_pretrained``: transformers' own conversion adds the fairseq
    offset (``<pad>`` at 1) and ``<mask>``. ``vocab_size`` counts those two; a corpus with
    fewer distinct pieces gives a smaller vocabulary.
    """
    import sentencepiece as spm
    from transformers import XLMRobertaTokenizer

    with open(Path(folder) / "sentencepiece.bpe.model", "wb") as model:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(list(texts)), model_writer=model, model_type="unigram",
            vocab_size=max(vocab_size - 2, 8), hard_vocab_limit=False, character_coverage=1.0,
            num_threads=1, minloglevel=2)
    return XLMRobertaTokenizer.from_pretrained(str(folder), model_max_length=model_max_length)


def _bert(a: Mapping[str, int], vocab_size: int, pad_id: int):
    """A randomly initialised ``BertModel`` (with its pooler) of sizes ``a``."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=vocab_size, hidden_size=a["hidden_size"],
                        num_hidden_layers=a["num_hidden_layers"],
                        num_attention_heads=a["num_attention_heads"],
                        intermediate_size=a["intermediate_size"],
                        max_position_embeddings=a["max_position_embeddings"],
                        pad_token_id=pad_id, type_vocab_size=2)
    return BertModel(config)


def _xlmr(a: Mapping[str, int], tokenizer: Any):
    """A randomly initialised ``XLMRobertaModel`` of sizes ``a``, without a pooler (as XLM-R's classifier)."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=a["hidden_size"],
                              num_hidden_layers=a["num_hidden_layers"],
                              num_attention_heads=a["num_attention_heads"],
                              intermediate_size=a["intermediate_size"],
                              max_position_embeddings=a["max_position_embeddings"],
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, type_vocab_size=1)
    return XLMRobertaModel(config, add_pooling_layer=False)


def build_tiny_model(texts: list[str], out_dir: str | os.PathLike, arch: Mapping[str, Any] | None,
                     seed: int) -> Path:
    """Train a tokenizer on ``texts``, initialise a tiny encoder (seeded) and save both.

    ``arch`` keys (all optional): architecture (``bert`` or ``xlmr``, module docstring),
    vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
    max_position_embeddings. The directory is written atomically and loads with
    :func:`load_classifier`.
    """
    import torch

    texts = [t for t in texts if isinstance(t, str) and t]
    if not texts:
        raise LangskewError("build_tiny_model: no texts to train the tokenizer on")
    a, architecture = _arch(arch), architecture_of(arch)
    with atomic_dir(out_dir) as tmp:
        if architecture == "xlmr":
            tokenizer = train_sentencepiece(texts, a["vocab_size"], a["max_position_embeddings"] - XLMR_POSITION_OFFSET,
                                            tmp)
        else:
            tokenizer = train_wordpiece(texts, a["vocab_size"], a["max_position_embeddings"])
        gen_state = torch.get_rng_state()
        torch.manual_seed(seed)
        model = _xlmr(a, tokenizer) if architecture == "xlmr" else _bert(a, len(tokenizer), tokenizer.pad_token_id)
        torch.set_rng_state(gen_state)  # do not disturb the caller's RNG stream
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    logger.info("tiny %s model (vocab %d, %s) written to %s", architecture, len(tokenizer), a, out_dir)
    return Path(out_dir)


def texts_of(frames: Iterable[pd.DataFrame]) -> list[str]:
    """All ``text`` and non-null ``text_pair`` strings of normalised frames."""
    out: list[str] = []
    for df in frames:
        for col in ("text", "text_pair"):
            if col in df.columns:
                out.extend(df[col].dropna().astype(str).tolist())
    return out


def tiny_model_job(job: Job, *, arch: Mapping[str, Any], seed: int) -> None:
    """Snakemake job: input.data (normalised parquet files), params ``arch`` and ``seed`` -> output[0]."""
    texts = texts_of(pd.read_parquet(f, columns=None) for f in as_list(job.input.data))
    build_tiny_model(texts, job.output[0], arch, int(seed))


def load_classifier(path: str | os.PathLike, num_labels: int, id2label: Mapping[int, str] | None = None,
                    revision: str | None = None, trust_remote_code: bool = False):
    """(tokenizer, model) for a hub id or a local directory, with a fresh classification head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    id2label = {int(k): str(v) for k, v in (id2label or {i: str(i) for i in range(num_labels)}).items()}
    if len(id2label) != num_labels:
        raise LangskewError(f"id2label has {len(id2label)} entries for num_labels={num_labels}")
    label2id = {v: k for k, v in id2label.items()}
    tokenizer = AutoTokenizer.from_pretrained(str(path), revision=revision,
                                              trust_remote_code=trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path), revision=revision, trust_remote_code=trust_remote_code,
        num_labels=num_labels, id2label=id2label, label2id=label2id)
    return tokenizer, model
