"""SHAP values of one fine-tuned classifier on (a sample of) its test set (Study A).

The studies' method: a Partition explainer with a text masker over the model's class
*probabilities*; the base value is the output on the fully masked input. The values
themselves are computed by :mod:`langskew.study_a.shap_fast` (shap's algorithm, batched
across examples); :mod:`langskew.study_a.shap_compare` compares the values of two models.

On-disk format of one model's values (one parquet, long format): columns ``id``,
``language``, ``label``, ``token_index``, ``token``, ``class_index``, ``value``. The base
value of each example and class is stored in the same frame as a row with
``token_index = -1`` and ``token = "<base>"``, so one file holds everything and the
efficiency property reads ``sum(value) == f(x)`` per (id, class).

Pair tasks (XNLI) are explained as one string, in one of two ways (``pair_input``):

- ``authors`` (the paper configuration): the authors' string ``premise <sep>hypothesis``
  (premise, a space, the tokenizer's separator, the hypothesis) explained with shap's own
  text masker and encoded by the model function as *one* sequence: token type ids 1 after
  the first separator where the tokenizer makes them (mBERT: the same ids as a true pair),
  else none (XLM-R: ``<s> premise </s>hypothesis </s>``, one ``</s>`` between the texts, not
  the pair template's two). The separator is a token of the explanation like any other;
  shap's masker leaves a token whose text is exactly the separator unmasked, which in this
  string it is, so its value is 0.
- ``pair``: ``premise <sep> hypothesis``; the masker is told to never mask the separator,
  and the model function splits each masked string on it and encodes the two halves as a
  real pair (token type ids, the pair template), exactly as in fine-tuning. The
  separator's value is 0 as well.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError
from langskew.io import write_parquet
from langskew.progress import progress
from langskew.study_a.inference import check_frame, load_for_inference, read_examples
from langskew.workflow import Job

logger = logging.getLogger(__name__)

BASE_INDEX = -1
BASE_TOKEN = "<base>"
VALUE_COLUMNS = ["id", "language", "label", "token_index", "token", "class_index", "value"]
EXAMPLE_COLUMNS = ("id", "language", "label", "text", "text_pair")


# --------------------------------------------------------------------------------------
# Explaining one model
# --------------------------------------------------------------------------------------

def probability_function(model: Any, tokenizer: Any, batch_size: int, max_length: int, pair: bool,
                         pair_input: str = "authors"):
    """The plain model function: ``f(list of str) -> (n, C)`` class probabilities, ``batch_size`` strings a call.

    Pairs are read as ``pair_input`` says (module docstring). This is the
    function a one-example-at-a-time ``shap.Explainer`` would call; :func:`explain` uses
    the batched :class:`langskew.study_a.shap_fast.ProbabilityModel`, which computes the same
    probabilities (kept for comparisons).
    """
    from langskew.study_a.shap_fast import ProbabilityModel

    fast = ProbabilityModel(model, tokenizer, max_length, pair, precision="fp32", pair_input=pair_input)

    def f(texts) -> np.ndarray:
        texts = [str(t) for t in texts]
        return np.concatenate([fast(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
                              or [np.zeros((0, int(model.config.num_labels)))])

    return f


def truncate_texts(tokenizer: Any, text: str, text_pair: str | None, max_length: int) -> tuple[str, str | None]:
    """Cut ``text`` (and ``text_pair``) to the characters the model sees at ``max_length``.

    Tokens past the truncation point cannot change the output, so explaining them would
    only spend model evaluations on zeros.
    """
    enc = tokenizer(text, text_pair, truncation=True, max_length=max_length, return_offsets_mapping=True)
    seq_ids = enc.sequence_ids(0)
    ends = {0: 0, 1: 0}
    for sid, (_, end) in zip(seq_ids, enc["offset_mapping"]):
        if sid is not None:
            ends[sid] = max(ends[sid], end)
    return text[:ends[0]], (None if text_pair is None else text_pair[:ends[1]])


def authors_pair_string(premise: str, hypothesis: str, sep_token: str) -> str:
    """The authors' SHAP input of a pair: premise, a space, the separator, then the hypothesis."""
    return f"{premise} {sep_token}{hypothesis}"


def joined_inputs(tokenizer: Any, df: pd.DataFrame, max_length: int,
                  pair_input: str = "authors") -> tuple[list[str], bool]:
    """Strings handed to the explainer and whether it is a pair task.

    Pairs are joined as ``pair_input`` says: ``authors`` ``premise <sep>hypothesis``, cut to
    what the model sees of it as one sequence; ``pair`` ``premise <sep> hypothesis``, each
    text cut to what the model sees of the true pair.
    """
    from langskew.study_a.shap_fast import PAIR_INPUTS

    if pair_input not in PAIR_INPUTS:
        raise LangskewError(f"shap pair_input {pair_input!r}: expected one of {', '.join(PAIR_INPUTS)}")
    pair = bool(df["text_pair"].notna().any())
    if pair and tokenizer.sep_token is None:
        raise LangskewError("pair task but the tokenizer has no sep_token to join premise and hypothesis")
    out = []
    for text, text_pair in zip(df["text"].astype(str), df["text_pair"]):
        if pair and pair_input == "authors":
            out.append(truncate_texts(tokenizer, authors_pair_string(text, str(text_pair), tokenizer.sep_token),
                                      None, max_length)[0])
            continue
        a, b = truncate_texts(tokenizer, text, str(text_pair) if pair else None, max_length)
        out.append(f"{a} {tokenizer.sep_token} {b}" if pair else a)
    return out, pair


def explanation_rows(row: pd.Series, tokens: Sequence[str], values: np.ndarray, base: np.ndarray) -> pd.DataFrame:
    """Long-format rows for one example: every (token, class) value plus the base rows."""
    n_tok, n_cls = values.shape
    token_index = np.concatenate([np.repeat(np.arange(n_tok), n_cls), np.full(n_cls, BASE_INDEX)])
    token = np.concatenate([np.repeat(np.asarray(tokens, dtype=object), n_cls), np.full(n_cls, BASE_TOKEN, dtype=object)])
    class_index = np.concatenate([np.tile(np.arange(n_cls), n_tok), np.arange(n_cls)])
    value = np.concatenate([values.reshape(-1), np.asarray(base, dtype=np.float64).reshape(-1)])
    return pd.DataFrame({"id": str(row["id"]), "language": str(row["language"]), "label": int(row["label"]),
                         "token_index": token_index, "token": token, "class_index": class_index,
                         "value": value})


def explain(model: Any, tokenizer: Any, df: pd.DataFrame, batch_size: int = 64, max_evals: int = 500,
            seed: int = 0, max_length: int = 512, labels: Sequence[str] | None = None,
            precision: str = "fp32", max_batch_tokens: int | None = None,
            pair_input: str = "authors") -> pd.DataFrame:
    """SHAP values (Partition explainer, text masker) of class probabilities for every row of ``df``.

    Returns the long frame described in the module docstring (base values as
    ``token_index = -1`` rows). The values are those of ``shap.Explainer`` with shap's
    text masker, ``max_evals`` and its default explainer batch, one example at a time;
    ``batch_size`` examples are explained together so that one model call evaluates all
    their masked inputs (see :mod:`langskew.study_a.shap_fast`). ``precision``: "fp32" (the
    authors'), "bf16" or "fp16" autocast on CUDA, or "auto" (bf16 where the GPU supports it,
    else fp16); the CPU always runs fp32. ``pair_input``: how a pair task is read
    (``authors`` or ``pair``, module docstring). ``seed`` seeds the explainer's tie-breaking draws.
    ``max_length`` is capped at the tokenizer's ``model_max_length``, as in fine-tuning (an
    XLM-R-architecture model takes two tokens fewer than its position embeddings).
    """
    import torch

    from langskew.study_a.shap_fast import ProbabilityModel, explain_texts, text_masker

    check_frame(df, EXAMPLE_COLUMNS)
    n_classes = int(model.config.num_labels)
    names = list(labels) if labels is not None else [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        raise LangskewError(f"labels {names} do not match the model's num_labels={n_classes}")
    torch.manual_seed(seed)
    model.eval()
    max_length = int(min(max_length, tokenizer.model_max_length))
    inputs, pair = joined_inputs(tokenizer, df, max_length, pair_input)
    f = ProbabilityModel(model, tokenizer, max_length, pair, precision=precision, max_batch_tokens=max_batch_tokens,
                         pair_input=pair_input)
    keep_sep = pair and pair_input == "pair"  # the pair masker never masks the separator
    start = time.perf_counter()
    with progress(total=len(df), desc="shap", unit="example") as bar:
        explained = explain_texts(f, text_masker(tokenizer, keep_sep), inputs, max_evals=max_evals,
                                  n_parallel=batch_size, seed=seed, pair=keep_sep, progress=bar.update)
    if len(df):
        logger.info("shap: %d examples in %.1f s (%.2f examples/s); %d distinct masked inputs, %d tokens, "
                 "%.0f%% of computed positions real (precision %s)", len(df), time.perf_counter() - start,
                 len(df) / max(time.perf_counter() - start, 1e-9), f.n_sequences, f.n_tokens,
                 100 * f.n_tokens / max(f.n_padded, 1), precision)
    frames = [explanation_rows(row, e.tokens, e.values, e.base) for (_, row), e in zip(df.iterrows(), explained)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(VALUE_COLUMNS, [str, str, int, int, str, int, float])})
    return pd.concat(frames, ignore_index=True)[VALUE_COLUMNS]


# --------------------------------------------------------------------------------------
# Snakemake job
# --------------------------------------------------------------------------------------

def shap_values_job(job: Job, *, settings: Mapping[str, Any], labels: Sequence[str]) -> None:
    """Snakemake job: SHAP values of one fine-tuned model on (a sample of) the test parquet.

    input: ``model`` (model dir), ``data`` (test parquet). params: ``settings``
    (``n_examples``: None = all, ``random_state``, ``batch_size``: examples explained
    together, ``max_evals``, ``max_length``, ``precision``: fp32/bf16/fp16/auto, CUDA only,
    ``pair_input``: authors/pair), ``labels`` (class names). output[0]: values parquet (see
    module docstring).
    """
    from langskew.devices import set_threads

    set_threads(job.threads)
    seed = int(settings["random_state"])
    df = read_examples(job.input.data, EXAMPLE_COLUMNS, settings["n_examples"], seed)
    tokenizer, model = load_for_inference(str(job.input.model))
    values = explain(model, tokenizer, df, batch_size=int(settings["batch_size"]),
                     max_evals=int(settings["max_evals"]), seed=seed, max_length=int(settings["max_length"]),
                     labels=labels, precision=str(settings["precision"]), pair_input=str(settings["pair_input"]))
    write_parquet(values, job.output[0])
