"""Study B alignment between the languages of a run (rule ``study_b_alignment``).

Representation alignment (:func:`representation_alignment`): per layer, the mean cosine of
the hidden states of parallel tokens, at the same positions for clones and on one
maximum-weight matching of the tokens for real languages (EN/FR). Gradient alignment
(:func:`gradient_alignment`): per parameter tensor, the cosine between the gradients of the
two members of a parallel pair, with the fused attention projection split into Q, K and V.

Precision (``study_b.eval.alignment_precision``): ``fp16``, the authors' default
(``compare_representations.py``): on CUDA the forward pass of both measures runs under fp16
autocast and the loss is backpropagated without loss scaling (no GradScaler), so gradients
below fp16's range round to zero as in their runs; the cosines are taken in fp32. ``fp32``
runs in full precision. On the CPU both run in fp32, as the authors' code does there (its
autocast is enabled only for CUDA tensors): a CPU run, the demo's, is the same whichever is set.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from langskew import devices
from langskew.errors import LangskewError
from langskew.io import write_csv
from langskew.progress import progress
from langskew.study_b.model import GPT, load_run
from langskew.workflow import Job

logger = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a LangskewError naming the key."""
    if precision not in PRECISIONS:
        raise LangskewError(f"study_b.eval.alignment_precision must be one of {', '.join(PRECISIONS)}, "
                            f"got {precision!r}")
    return precision


def _autocast(device: torch.device, precision: str):
    """fp16 autocast on a device where precision settings apply (CUDA), else full precision."""
    return devices.autocast(device, devices.amp_dtype(device, check_precision(precision)))


@torch.no_grad()
def hidden_states(model: GPT, ids: np.ndarray, device: torch.device, precision: str = "fp16") -> list[torch.Tensor]:
    """Output of every block (before the final LN) for one sequence: n_layer tensors (T, d), fp32."""
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)[None, : model.cfg.context]
    with _autocast(device, precision):
        _, _, hidden = model(x, return_hidden=True)
    return [h[0].float() for h in hidden]


def _similarity(ha: torch.Tensor, hb: torch.Tensor) -> torch.Tensor:
    return F.normalize(ha, dim=-1) @ F.normalize(hb, dim=-1).T


def token_cosine(ha: torch.Tensor, hb: torch.Tensor, match: bool) -> float:
    """Mean cosine of parallel token vectors of one layer: same positions, or a maximum-weight matching."""
    return float(layer_cosines([ha], [hb], match)[0])


def max_weight_matching(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a maximum-weight bipartite matching (min(A, B) pairs)."""
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(sim, maximize=True)


def layer_cosines(hidden_a: Sequence[torch.Tensor], hidden_b: Sequence[torch.Tensor], match: bool) -> np.ndarray:
    """Mean cosine of parallel token vectors in every layer of one parallel pair.

    ``match=False`` (clones): the same positions. ``match=True`` (real languages): one
    maximum-weight matching of the tokens on the similarity averaged over the layers, used
    for every layer (as the authors; a matching per layer would inflate the cosines).
    """
    sims = [_similarity(ha, hb) for ha, hb in zip(hidden_a, hidden_b)]
    if not match:
        if hidden_a[0].shape != hidden_b[0].shape:
            raise LangskewError(f"alignment: position-wise cosine needs equal lengths, got {len(hidden_a[0])} and "
                                f"{len(hidden_b[0])}")
        return np.array([float(s.diagonal().mean()) for s in sims])
    stacked = torch.stack(sims).cpu().numpy()  # (layers, A, B)
    rows, cols = max_weight_matching(stacked.mean(axis=0))
    return stacked[:, rows, cols].mean(axis=1)


def representation_alignment(model: GPT, pairs: Sequence[tuple[np.ndarray, np.ndarray]], match: bool,
                             device: torch.device | str | None = None, precision: str = "fp16") -> pd.DataFrame:
    """Per-layer cosine of parallel hidden states, averaged over pairs (layer 1 = first block);
    ``precision``: fp16 autocast on CUDA (the authors') or fp32."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    values = np.array([layer_cosines(hidden_states(model, a, device, precision),
                                     hidden_states(model, b, device, precision), match)
                       for a, b in progress(pairs, desc="representation alignment", unit="pair")])
    if values.size == 0:
        raise LangskewError("alignment: no parallel pairs")
    return pd.DataFrame({"layer": np.arange(1, values.shape[1] + 1), "cosine_mean": values.mean(axis=0),
                         "cosine_sd": values.std(axis=0, ddof=1) if len(values) > 1 else np.nan,
                         "n": len(values)})


def _split_qkv(name: str, grad: torch.Tensor) -> dict[str, torch.Tensor]:
    """The fused ``attn.qkv`` gradient as separate Q, K and V tensors (the authors' separate layers)."""
    if ".attn.qkv." not in name:
        return {name: grad}
    parts = grad.chunk(3, dim=0)
    return {name.replace(".attn.qkv.", f".attn.{p}."): t for p, t in zip("qkv", parts)}


def sequence_gradients(model: GPT, ids: np.ndarray, device: torch.device,
                       precision: str = "fp16") -> dict[str, torch.Tensor]:
    """Gradient of the mean next-token loss of one sequence, per parameter tensor (flattened).

    The fused attention input projection is reported as three tensors, ``attn.q``,
    ``attn.k`` and ``attn.v`` (weight and bias each). ``fp16``: the forward pass under fp16
    autocast on CUDA and the backward pass of the unscaled loss, as the authors.
    """
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)[None, : model.cfg.context + 1]
    model.zero_grad(set_to_none=True)
    with _autocast(device, precision):
        _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()  # no loss scaling (the authors')
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            out.update({k: g.detach().flatten().clone() for k, g in _split_qkv(name, p.grad).items()})
    return out


#: Summary rows of the gradient table: the paper's mean over the transformer blocks' tensors,
#: and the mean over every tensor (embeddings, final LayerNorm and output layer included).
GRADIENT_MEAN = "mean"
GRADIENT_MEAN_ALL = "mean_all_tensors"


def is_block_tensor(name: str) -> bool:
    """A parameter tensor of a transformer block (embeddings, final LN and output layer are not)."""
    return name.startswith("blocks.")


def gradient_alignment(model: GPT, pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                       device: torch.device | str | None = None, precision: str = "fp16") -> pd.DataFrame:
    """Cosine between the two members' gradients per parameter tensor, averaged over pairs.

    Q, K and V are separate tensors. Two summary rows follow the tensors: ``mean``, the
    mean over the transformer blocks' tensors (the paper's mean gradient cosine; the
    clones' embedding gradients are orthogonal by construction), and
    ``mean_all_tensors``, the mean over every tensor. ``in_mean`` marks the tensors of ``mean``.
    ``precision``: fp16 autocast on CUDA without loss scaling (the authors') or fp32.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()  # no dropout anyway; keeps LN/attention in inference mode
    sums: dict[str, float] = {}
    for a, b in progress(pairs, desc="gradient alignment", unit="pair"):
        ga = sequence_gradients(model, a, device, precision)
        gb = sequence_gradients(model, b, device, precision)
        for name in ga:
            cos = F.cosine_similarity(ga[name], gb[name], dim=0, eps=1e-12)
            sums[name] = sums.get(name, 0.0) + float(cos)
    model.zero_grad(set_to_none=True)
    if not sums:
        raise LangskewError("alignment: no parallel pairs")
    table = pd.DataFrame({"parameter": list(sums), "cosine_mean": [v / len(pairs) for v in sums.values()],
                          "n": len(pairs)})
    table["in_mean"] = table["parameter"].map(is_block_tensor)
    if not table["in_mean"].any():
        raise LangskewError("alignment: the model has no transformer-block parameters")
    summary = pd.DataFrame({"parameter": [GRADIENT_MEAN, GRADIENT_MEAN_ALL],
                            "cosine_mean": [table.loc[table["in_mean"], "cosine_mean"].mean(),
                                            table["cosine_mean"].mean()],
                            "n": [len(pairs)] * 2, "in_mean": [False, False]})
    return pd.concat([table, summary], ignore_index=True)


def alignment_job(job: Job, *, run: dict, n_parallel: int, parallel_min_len: int, parallel_max_len: int,
                  clone_parallel: str, alignment_precision: str, seed: int) -> None:
    """Rule ``study_b_alignment``: representation (per layer) and gradient (per tensor) alignment of L1/L2
    -> output.representation, output.gradient.

    The keys of ``study_b.eval``: ``n_parallel`` (the first n parallel sequences), ``parallel_min_len`` and
    ``parallel_max_len`` (tokens per packed parallel sequence; at most the model context),
    ``clone_parallel`` (``parallel``: clones use the packed parallel sentences of their base
    language, as the authors; ``heldout``: windows of held-out text), ``alignment_precision``
    (``fp16``: fp16 autocast on CUDA without loss scaling, the authors'; ``fp32``). Parallel
    sentences: input.parallel, when the rule gives it.
    """
    precision = check_precision(alignment_precision)
    run = dict(run)
    if run["kind"] == "mono":
        raise LangskewError(f"alignment: run {run['id']!r} is monolingual")
    model, mixture, device = load_run(job, run, seed, getattr(job.input, "parallel", None))
    min_len, max_len = int(parallel_min_len), int(parallel_max_len)
    if max_len > model.cfg.context:
        raise LangskewError(f"alignment: study_b.eval.parallel_max_len={max_len} exceeds the model context "
                            f"{model.cfg.context}")
    source = "parallel" if run["kind"] == "real" else str(clone_parallel or "parallel")
    pairs = mixture.parallel(int(n_parallel), min_len, max_len, source=source)
    pairs = [(a, b) for a, b in pairs if len(a) >= 2 and len(b) >= 2]
    if len(pairs) < int(n_parallel):
        raise LangskewError(f"alignment of {run['id']}: {len(pairs)} parallel sequences of at least 2 tokens, "
                            f"fewer than n_parallel={int(n_parallel)}")
    match = run["kind"] == "real"
    logger.info("alignment of %s: %d pairs, precision %s (autocast: %s on %s)", run["id"], len(pairs), precision,
                devices.amp_dtype(device, precision), device)
    write_csv(representation_alignment(model, pairs, match, device, precision), job.output.representation)
    write_csv(gradient_alignment(model, pairs, device, precision), job.output.gradient)
