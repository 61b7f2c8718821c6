"""Study B held-out perplexity of every language of a trained run (rule ``study_b_perplexity``).

Perplexity (:func:`sliding_window_perplexity`), as the authors' evaluation (``last_n``):
windows of ``window`` tokens move by ``stride`` and every window, the first included, scores
only its last ``stride`` targets, so every scored token sees at least ``window - stride``
tokens of context. The first ``window - stride`` targets of the stream are therefore never
scored. The last window is moved back to end exactly at the end of the stream and scores
only targets not yet scored (the authors pad it instead; the scored targets are the same).
A stream shorter than one window scores its last ``min(stride, N - 1)`` targets.
PPL = exp(mean NLL over the scored targets).

Precision (``study_b.eval.precision``): on CUDA the forward pass runs under fp16 autocast by
default, as the authors' evaluation (``torch.cuda.amp.autocast()``); the cross-entropy is
taken in fp32 from those logits. ``bf16`` autocasts in bfloat16, ``fp32`` runs in full
precision. On the CPU it is always fp32. A model trained in bf16 is not held to fp16's range
(largest value 65504): where its activations exceed it, a window's loss is infinite or NaN,
and the job stops with :class:`NonFiniteLossError` naming the precision to use instead
(``bf16``, the range of training, or ``fp32``) rather than write an infinite perplexity.


The run's model and token streams come from :func:`langskew.study_b.model.load_run`, which
the alignment stage shares.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from langskew.devices import amp_dtype, autocast
from langskew.errors import LangskewError
from langskew.io import write_json
from langskew.study_b.model import GPT, load_run
from langskew.workflow import Job

logger = logging.getLogger(__name__)


def window_plan(n_tokens: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(start, n_scored) of each window over a stream of ``n_tokens`` tokens.

    A window's inputs are ``ids[start:start + L]`` and its targets ``ids[start + 1:start + L + 1]``
    (L = ``window``, or N - 1 for a stream shorter than a window); its last ``n_scored``
    targets are scored: ``stride`` for every window (the first included) except the last,
    which is moved back to the end of the stream and scores only the targets not yet scored.
    """
    if not 0 < stride <= window:
        raise LangskewError(f"perplexity: need 0 < stride <= window, got stride={stride}, window={window}")
    n_targets = n_tokens - 1
    if n_targets < 1:
        raise LangskewError(f"perplexity: a stream of {n_tokens} tokens has nothing to score")
    if n_targets <= window:
        return [(0, min(stride, n_targets))]
    plan, covered, start = [(0, stride)], window, 0
    while covered < n_targets:
        start += stride
        end = min(start + window, n_targets)
        start = end - window
        plan.append((start, end - covered))
        covered = end
    return plan


PRECISIONS = ("fp16", "bf16", "fp32")


class NonFiniteLossError(LangskewError):
    """A scored token's loss is infinite or NaN: the activations left the evaluation precision's range."""


def _check_finite(nll: torch.Tensor, start: int, dtype: torch.dtype | None) -> None:
    """Stop on a non-finite loss among a window's scored targets, naming the precision to use."""
    if bool(torch.isfinite(nll).all()):
        return
    if dtype == torch.float16:
        advice = ("the model's activations exceed fp16's range (largest value 65504), as those of a model "
                  "trained in bf16 may; set study_b.eval.precision: bf16 (the range of training) or fp32")
    elif dtype == torch.bfloat16:
        advice = "set study_b.eval.precision: fp32"
    else:
        advice = "the loss is non-finite in fp32 too, so no precision helps: the model itself is broken " \
                 "(a diverged training run?)"
    name = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")
    raise NonFiniteLossError(f"perplexity: non-finite loss in {name} in the window starting at held-out token "
                             f"{start}: {advice}")


@torch.no_grad()
def sliding_window_nll(model: GPT, ids: np.ndarray, window: int = 512, stride: int = 128, batch_size: int = 8,
                       device: torch.device | str | None = None, precision: str = "fp16") -> tuple[float, int]:
    """Summed NLL (nats) and number of scored tokens under the sliding-window scheme.

    ``precision``: the autocast dtype on CUDA (``fp16``, the authors'; ``bf16``; ``fp32``: none).
    """
    if precision not in PRECISIONS:
        raise LangskewError(f"perplexity: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if window > model.cfg.context:
        raise LangskewError(f"perplexity: window {window} exceeds the model context {model.cfg.context}")
    ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    plan = window_plan(len(ids_t), window, stride)
    length = min(window, len(ids_t) - 1)
    dtype = amp_dtype(device, precision)
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(plan), batch_size):
        chunk = plan[i:i + batch_size]
        seqs = torch.stack([ids_t[s:s + length + 1] for s, _ in chunk]).to(device)  # (b, L + 1)
        with autocast(device, dtype):
            logits, _ = model(seqs[:, :-1])  # (b, L, vocab)
        nll = F.cross_entropy(logits.float().transpose(1, 2), seqs[:, 1:], reduction="none")  # (b, L)
        for row, (start, n_scored) in enumerate(chunk):
            _check_finite(nll[row, length - n_scored:], start, dtype)
            total += float(nll[row, length - n_scored:].double().sum())
            count += n_scored
    return total, count


def sliding_window_perplexity(model: GPT, ids: np.ndarray, window: int = 512, stride: int = 128,
                              batch_size: int = 8, device: torch.device | str | None = None,
                              precision: str = "fp16") -> float:
    """Token perplexity exp(mean NLL) of ``ids`` (see the module docstring for the windows)."""
    total, count = sliding_window_nll(model, ids, window, stride, batch_size, device, precision)
    return math.exp(total / count)


def perplexity_job(job: Job, *, run: dict, window: int, stride: int, max_tokens: int | None, batch_size: int,
                   precision: str, seed: int) -> dict[str, float]:
    """Rule ``study_b_perplexity``: {language name: held-out perplexity} of one trained run -> output[0].

    ``window``, ``stride``, ``batch_size``, ``max_tokens`` (held-out tokens per language; None for
    all), ``precision`` (autocast on CUDA: fp16, bf16 or fp32): the keys of ``study_b.eval``.
    """
    if precision not in PRECISIONS:
        raise LangskewError(f"perplexity: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    model, mixture, device = load_run(job, run, seed)
    result = {}
    for i, name in enumerate(mixture.language_names):
        ids = mixture.heldout(i, max_tokens)
        result[name] = sliding_window_perplexity(model, ids, int(window), int(stride), int(batch_size), device,
                                                 precision)
        logger.info("%s: %s perplexity %.3f over %d tokens", run["id"], name, result[name], len(ids))
    write_json(result, job.output[0])
    return result
