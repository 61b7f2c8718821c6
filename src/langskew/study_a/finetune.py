"""Fine-tune a sequence classifier the way Study A does, in one readable PyTorch loop.

Settings follow Jung & van der Plas (2024), see docs/studies.md: RAdam
(no weight decay) with one learning rate for the encoder and a 10x one for the head,
linear decay to ``final_lr_fraction`` (optional warm-up), micro-batches with gradient
accumulation, validation every ``eval_every`` of an epoch, and the weights with the lowest
validation loss are the ones evaluated (a condition's ``model_selection: worst_group_accuracy``
keeps instead those with the highest worst-group validation accuracy over (language, label)
groups, Sagawa et al. 2020's rule). The loss is cross-entropy weighted per example by
w[language, label] (none / global / per-language class weights from the training set).

Batches are padded dynamically. By default every epoch shuffles the examples uniformly
(seeded by seed and epoch) and cuts them into batches, as the authors' shuffling loader
did. With ``length_grouped`` the shuffled examples are cut into mega-batches of
``MEGA_BATCH_MULT`` batches, each sorted by length and split into batches, so a batch holds
examples of similar length (as HF's ``LengthGroupedSampler``; faster, but a batch's
lengths then correlate with its languages and labels); the batch order is then shuffled.

``precision``: ``fp16`` (the authors' 16-bit mixed precision: fp16 autocast with a
``GradScaler``) for training, validation and test predictions, ``bf16`` (autocast, no
scaler) or ``fp32``. Mixed precision is a CUDA setting: the CPU always runs fp32
(:func:`langskew.devices.amp_dtype`).

A condition may add mitigations (:mod:`langskew.mitigation`: mask entropy maximisation, a
language adversary, per-language logit adjustment, group DRO, per-language class-balanced
resampling, group-balanced sampling); they hook in at four points: the training loss
(:class:`MitigationLoss`, also the validation loss), the optimiser (the adversary's head joins the
head's learning rate; a group DRO condition's weight decay), the end of each optimiser step (group
DRO moves q once per step, its micro-batches pooled) and the epoch's indices (resampling draws them
instead of a permutation). Without one the loop is as above.

The loop runs on :class:`langskew.training.TrainingLoop`, so it is resumable: the model,
optimiser, scheduler, grad scaler, RNG states and :class:`FinetuneState` (position in the
epoch, best weights, curve) are saved every ``checkpoint_every`` optimiser steps and on
SIGTERM / SIGUSR1; a rerun continues from there and ends with the same numbers as an
uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from langskew.checkpointing import Checkpointer, seed_everything
from langskew.devices import amp_dtype, autocast, pick_device, set_threads
from langskew.errors import LangskewError, require_positive
from langskew.io import atomic_dir, write_csv, write_json, write_parquet
from langskew.mitigation import (LANGUAGE_KEY, MitigationConfig, MitigationLoss, group_accuracies,
                                 language_indices, make_sampler)
from langskew.study_a.modeling import load_classifier
from langskew.weights import SCHEMES, class_weights, example_weights
from langskew.training import TrainingLoop, TrainState, warmup_decay
from langskew.workflow import Job

logger = logging.getLogger(__name__)

COLUMNS = ("id", "language", "text", "text_pair", "label")
MEGA_BATCH_MULT = 50
PRECISIONS = ("fp16", "bf16", "fp32")
#: Which validation checkpoint is kept: the lowest validation loss (the paper's rule) or the highest
#: worst-group accuracy over (language, label) groups (Sagawa et al. 2020's rule for group DRO).
MODEL_SELECTIONS = ("val_loss", "worst_group_accuracy")
HP_DEFAULTS: dict[str, Any] = {
    "epochs": 3, "batch_size": 16, "grad_accum": 8, "max_length": 512,
    "lr_encoder": 5e-5, "lr_head": 5e-4, "final_lr_fraction": 0.01, "warmup_fraction": 0.0,
    "adam_eps": 1e-8, "weight_decay": 0.0, "eval_every": 0.1, "eval_batch_size": 64,
    "precision": "fp16", "length_grouped": False, "max_train_examples": None,
    "checkpoint_every": 500, "num_workers": 0,
}


# -- input checks ---------------------------------------------------------------------
def merge_hp(hp: Mapping[str, Any] | None) -> dict[str, Any]:
    """``hp`` over :data:`HP_DEFAULTS`; an unknown key is an error (likely a typo)."""
    hp = dict(hp or {})
    unknown = sorted(set(hp) - set(HP_DEFAULTS))
    if unknown:
        raise LangskewError(f"finetune hp: unknown key {unknown[0]!r}; known: {', '.join(HP_DEFAULTS)}")
    merged = {**HP_DEFAULTS, **hp}
    if merged["precision"] not in PRECISIONS:
        raise LangskewError(f"finetune hp: precision {merged['precision']!r}; expected one of {', '.join(PRECISIONS)}")
    require_positive("finetune hp", {key: merged[key] for key in
                                     ("epochs", "batch_size", "grad_accum", "max_length", "eval_batch_size")})
    return merged


def check_frame(df: pd.DataFrame, name: str, n_classes: int) -> None:
    """Raise if ``df`` lacks a normalised column or has a label outside 0..C-1."""
    for col in COLUMNS:
        if col not in df.columns:
            raise LangskewError(f"{name}: column {col!r} missing (normalised schema: {', '.join(COLUMNS)})")
    if df.empty:
        raise LangskewError(f"{name}: no rows")
    bad = df.loc[(df["label"] < 0) | (df["label"] >= n_classes), "label"]
    if len(bad):
        raise LangskewError(f"{name}: label {int(bad.iloc[0])} outside 0..{n_classes - 1}")


def row_weights(df: pd.DataFrame, table: dict[str, np.ndarray], weighting: str, name: str) -> np.ndarray:
    """w[language, label] per row; with weighting "none" every row weighs 1."""
    if weighting == "none":
        return np.ones(len(df))
    missing = sorted(set(df["language"]) - set(table))
    if missing:
        raise LangskewError(f"{name}: language {missing[0]!r} has no training rows, so no class weights")
    return example_weights(df["label"].to_numpy(), df["language"].to_numpy(), table)


# -- loss and batching ----------------------------------------------------------------
def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of weight_i * CE_i (not divided by the weight sum, as in the paper)."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    return (weights.to(ce.dtype) * ce).mean()


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """Batch order depends on (seed, epoch) only, so a resumed run rebuilds the same epoch."""
    return np.random.default_rng([int(seed), int(epoch)])


def random_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """A shuffled permutation of 0..n-1 cut into batches."""
    perm = _epoch_rng(seed, epoch).permutation(n)
    return [perm[i:i + batch_size].tolist() for i in range(0, n, batch_size)]


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                           mega_batch_mult: int = MEGA_BATCH_MULT) -> list[list[int]]:
    """Batches of similar-length examples; every index exactly once per epoch.

    Shuffle, split into mega-batches of ``mega_batch_mult * batch_size``, sort each by length
    (longest first), cut into batches, shuffle the batch order, and put the batch with the
    longest example first so an out-of-memory error shows up at once.
    """
    rng = _epoch_rng(seed, epoch)
    lengths = np.asarray(lengths)
    perm = rng.permutation(len(lengths))
    mega = mega_batch_mult * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(perm), mega):
        chunk = perm[start:start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches)).tolist()
    batches = [batches[i] for i in order]
    longest = max(range(len(batches)), key=lambda b: lengths[batches[b]].max())
    batches.insert(0, batches.pop(longest))
    return batches


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                  length_grouped: bool, sampler: PerLanguageBalancedSampler | None = None) -> list[list[int]]:
    """The epoch's batches of row indices; with a ``sampler`` over the rows it draws (with replacement)."""
    if sampler is not None:
        sampler.set_epoch(epoch)
        drawn = np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))
        picked = epoch_batches(np.asarray(lengths)[drawn], batch_size, seed, epoch, length_grouped)
        return [drawn[b].tolist() for b in picked]
    if length_grouped:
        return length_grouped_batches(lengths, batch_size, seed, epoch)
    return random_batches(len(lengths), batch_size, seed, epoch)


def padding_stats(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> tuple[int, int]:
    """(real tokens, tokens after padding each batch to its longest example)."""
    lengths = np.asarray(lengths)
    real = int(sum(lengths[b].sum() for b in batches))
    padded = int(sum(lengths[b].max() * len(b) for b in batches))
    return real, padded


# -- tokenisation and collation ---------------------------------------------------------
def encode(tokenizer, df: pd.DataFrame, max_length: int, weights: np.ndarray | None = None) -> list[dict]:
    """Tokenise rows (pairs where ``text_pair`` is set), truncated to ``max_length``, unpadded."""
    feats: list[dict] = [{} for _ in range(len(df))]
    pair_mask = df["text_pair"].notna().to_numpy()
    texts = df["text"].astype(str).tolist()
    for is_pair in (False, True):
        idx = np.flatnonzero(pair_mask == is_pair)
        if not len(idx):
            continue
        first = [texts[i] for i in idx]
        second = df["text_pair"].iloc[idx].astype(str).tolist() if is_pair else None
        enc = tokenizer(first, second, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        for j, i in enumerate(idx):
            feats[i] = {k: enc[k][j] for k in keys}
    labels = df["label"].to_numpy()
    for i, f in enumerate(feats):
        f["label"] = int(labels[i])
        f["weight"] = 1.0 if weights is None else float(weights[i])
    return feats


def collate(features: Sequence[dict], pad_token_id: int, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example (or to ``pad_to``)."""
    lengths = [len(f["input_ids"]) for f in features]
    width = pad_to or max(lengths)
    # filled in numpy, one tensor per array at the end (a tensor per row costs more than the step's optimiser)
    ids = np.full((len(features), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(features), width), dtype=np.int64)
    has_types = "token_type_ids" in features[0]
    types = np.zeros((len(features), width), dtype=np.int64)
    for i, (f, n) in enumerate(zip(features, lengths)):
        ids[i, :n] = f["input_ids"]
        mask[i, :n] = 1
        if has_types:
            types[i, :n] = f["token_type_ids"]
    ids, mask, types = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)
    batch = {"input_ids": ids, "attention_mask": mask,
             "labels": torch.tensor([f["label"] for f in features]),
             "weights": torch.tensor([f["weight"] for f in features], dtype=torch.float32)}
    if LANGUAGE_KEY in features[0]:
        batch[LANGUAGE_KEY] = torch.tensor([f[LANGUAGE_KEY] for f in features])
    if has_types:
        batch["token_type_ids"] = types
    return batch


# -- optimiser, forward pass, prediction -------------------------------------------------
NO_DECAY = ("bias", "LayerNorm.weight")  # parameters a decoupled weight decay leaves alone (Sagawa et al.'s code)


def make_optimizer(model: torch.nn.Module, hp: Mapping[str, Any], decoupled_decay: float = 0.0) -> torch.optim.Optimizer:
    """RAdam with two groups: the encoder (base model) and the classification head.

    ``decoupled_decay`` > 0 (a group DRO condition's ``weight_decay``) replaces hp's L2 weight decay
    by AdamW-style decoupled decay off biases and LayerNorm weights, as Sagawa et al.'s AdamW does;
    the encoder and head groups then split into decayed and undecayed groups. The update runs on
    all tensors at once (``foreach``, CUDA's default; on a CPU about 3x faster than tensor by tensor
    at the demo's sizes: benchmarks/finetune_overhead.py)."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    parts: dict[tuple[bool, bool], list] = {(h, d): [] for h in (False, True) for d in (False, True)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            parts[(not name.startswith(prefix), bool(decoupled_decay) and not any(k in name for k in NO_DECAY))].append(p)
    if not parts[(True, False)] + parts[(True, True)]:
        raise LangskewError(f"no classification-head parameters outside {prefix!r} in {type(model).__name__}")
    if not decoupled_decay:
        groups = [{"params": parts[(False, False)], "lr": float(hp["lr_encoder"])},
                  {"params": parts[(True, False)], "lr": float(hp["lr_head"])}]
        return torch.optim.RAdam(groups, eps=float(hp["adam_eps"]), weight_decay=float(hp["weight_decay"] or 0.0),
                                 foreach=True)
    groups = [{"params": parts[(head, decay)], "lr": float(hp["lr_head" if head else "lr_encoder"]),
               "weight_decay": float(decoupled_decay) if decay else 0.0}
              for head in (False, True) for decay in (True, False) if parts[(head, decay)]]
    return torch.optim.RAdam(groups, eps=float(hp["adam_eps"]), decoupled_weight_decay=True, foreach=True)


def _forward(model, batch: dict[str, torch.Tensor], device: torch.device, dtype,
             loss_fn: MitigationLoss | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, weighted loss) for one collated batch; with ``loss_fn`` its loss (training or validation)."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if loss_fn is not None:
        with autocast(device, dtype):
            loss, logits = loss_fn(model, batch)
        return logits.float(), loss.float()
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weights", LANGUAGE_KEY)}
    with autocast(device, dtype):
        logits = model(**inputs).logits
    return logits.float(), weighted_cross_entropy(logits, batch["labels"], batch["weights"])


@torch.no_grad()
def predict(model, features: Sequence[dict], batch_size: int, pad_token_id: int, device: torch.device,
            dtype=None, loss_fn: MitigationLoss | None = None) -> tuple[np.ndarray, float]:
    """(logits [N, C] in input order, mean weighted loss); batches sorted by length for speed."""
    model.eval()
    order = np.argsort([len(f["input_ids"]) for f in features], kind="stable")
    logits = np.zeros((len(features), model.config.num_labels), dtype=np.float32)
    loss_sum = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        out, loss = _forward(model, collate([features[i] for i in idx], pad_token_id), device, dtype, loss_fn)
        logits[idx] = out.cpu().numpy()
        loss_sum += float(loss) * len(idx)
    model.train()
    return logits, loss_sum / len(features)


# -- the training loop -------------------------------------------------------------------
@dataclass
class FinetuneResult:
    model: Any
    tokenizer: Any
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    curve: pd.DataFrame


CURVE_COLUMNS = ["step", "epoch", "train_loss", "val_loss", "lr"]
#: The curve's extra column in a run with a language adversary: the adversary head's own language
#: accuracy on the training rows since the previous row (is the adversary fooled?).
ADVERSARY_COLUMN = "adversary_accuracy"


def adversary_summary(curve: Sequence[Mapping[str, Any]], best_step: int) -> dict[str, float]:
    """The adversary head's language accuracy in the curve's last row and in the row of ``best_step``."""
    at_best = [row[ADVERSARY_COLUMN] for row in curve if row["step"] == best_step]
    return {"final": float(curve[-1][ADVERSARY_COLUMN]) if curve else math.nan,
            "at_best_step": float(at_best[-1]) if at_best else math.nan}


@dataclass
class FinetuneState(TrainState):
    """What a checkpoint holds besides model, optimiser, scheduler and grad scaler (step, curve: TrainState)."""

    epoch: int = 0  # the epoch under way
    group_pos: int = 0  # its next accumulation group
    best_val_loss: float = math.inf
    best_step: int = -1
    best_score: float = -math.inf  # the model-selection score of the kept weights (higher is better)
    best_worst_group_accuracy: float = math.nan  # validation worst-group accuracy of the kept weights
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # weights of the best validation loss (CPU)
    loss_sum: float = 0.0  # training losses of the micro-batches since the last validation
    loss_n: int = 0


@dataclass
class _Parts:
    """What the optimiser steps of a run use besides its state."""

    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    device: torch.device
    dtype: torch.dtype | None
    pad_id: int
    loss_fn: MitigationLoss | None = None  # a condition's mitigations (None: weighted cross-entropy)
    model_selection: str = "val_loss"
    val_groups: tuple[np.ndarray, np.ndarray] | None = None  # validation (languages, labels)

    def stateful(self) -> dict[str, Any]:
        parts = {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler}
        return {**parts, "mitigation": self.loss_fn} if self.loss_fn is not None else parts


def _cpu_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _prepare(train_df, val_df, test_sets, labels, hp, seed, weighting):
    """Check every input before loading a model; return the (subsampled) train frame and weights."""
    if weighting not in SCHEMES:
        raise LangskewError(f"weighting {weighting!r} unknown; expected one of {', '.join(SCHEMES)}")
    n_classes = len(labels)
    check_frame(train_df, "train", n_classes)
    check_frame(val_df, "validation", n_classes)
    for name, df in test_sets.items():
        check_frame(df, f"test {name!r}", n_classes)
    cap = hp["max_train_examples"]
    if cap and int(cap) < len(train_df):
        train_df = train_df.sample(n=int(cap), random_state=seed).sort_index()
    table = class_weights(train_df["label"].to_numpy(), train_df["language"].to_numpy(), n_classes, weighting)
    w_train = row_weights(train_df, table, weighting, "train")
    w_val = row_weights(val_df, table, weighting, "validation")
    return train_df.reset_index(drop=True), table, w_train, w_val


def finetune(train_df: pd.DataFrame, val_df: pd.DataFrame, test_sets: Mapping[str, pd.DataFrame],
             model_path: str | os.PathLike, labels: Sequence[str], hp: Mapping[str, Any] | None = None,
             seed: int = 0, weighting: str = "none", ckpt_dir: str | os.PathLike | None = None,
             keep_checkpoints: bool = False, revision: str | None = None, trust_remote_code: bool = False,
             outputs: Mapping[str, str | os.PathLike] | None = None,
             device: str | torch.device | None = None,
             tensorboard_dir: str | os.PathLike | None = None,
             mitigation: Mapping[str, Any] | None = None, model_selection: str = "val_loss") -> FinetuneResult:
    """Fine-tune ``model_path`` on ``train_df``, keep the best-validation weights, predict tests.

    ``outputs`` (optional keys model, metrics, predictions, curve) are written before the
    checkpoints are dropped. ``mitigation``: the condition's mitigation keys
    (:meth:`langskew.mitigation.MitigationConfig.from_condition`). ``model_selection``: which
    validation checkpoint is kept (:data:`MODEL_SELECTIONS`). Raises SystemExit(128 + signum) after
    saving on SIGTERM/SIGUSR1.
    """
    hp = merge_hp(hp)
    if model_selection not in MODEL_SELECTIONS:
        raise LangskewError(f"model_selection {model_selection!r} unknown; expected one of {', '.join(MODEL_SELECTIONS)}")
    mcfg = MitigationConfig.from_condition(mitigation)
    train_df, table, w_train, w_val = _prepare(train_df, val_df, test_sets, labels, hp, seed, weighting)
    device = torch.device(device) if device else pick_device()
    dtype = amp_dtype(device, hp["precision"])
    seed_everything(seed)
    tokenizer, model = load_classifier(model_path, len(labels), dict(enumerate(labels)),
                                       revision=revision, trust_remote_code=trust_remote_code)
    model.to(device).train()
    max_len = int(min(hp["max_length"], tokenizer.model_max_length))
    train_feats = encode(tokenizer, train_df, max_len, w_train)
    val_feats = encode(tokenizer, val_df, max_len, w_val)
    loss_fn, sampler = _mitigation_hooks(mcfg, train_df, val_df, train_feats, val_feats, model, tokenizer,
                                         len(labels), weighting, seed)
    ckpt = Checkpointer(ckpt_dir, every_steps=int(hp["checkpoint_every"] or 0), keep_after_finish=keep_checkpoints)
    logger.info("fine-tuning %s with %s class weights on %s", model_path, weighting, device)
    val_groups = (val_df["language"].astype(str).to_numpy(), val_df["label"].to_numpy())
    state, loop = train(model, tokenizer.pad_token_id, train_feats, val_feats, hp, seed, device, dtype, ckpt,
                        tensorboard_dir, loss_fn=loss_fn, sampler=sampler, model_selection=model_selection,
                        val_groups=val_groups, decoupled_decay=mcfg.group_dro_weight_decay)

    model.load_state_dict(state.best_state)
    pred_df, accuracy = _predict_tests(model, tokenizer, test_sets, max_len, hp, device, dtype)
    metrics = {
        "model_selection": model_selection, "best_step": state.best_step, "best_val_loss": state.best_val_loss,
        "best_val_worst_group_accuracy": state.best_worst_group_accuracy, "accuracy": accuracy,
        "steps_run": state.step - (loop.resumed_from or 0), "total_steps": loop.total_steps,
        "resumed_from": loop.resumed_from, "n_train": len(train_feats), "n_validation": len(val_feats),
        "weighting": weighting, "class_weights": {k: v.tolist() for k, v in table.items()},
        "mitigation": dict(vars(mcfg)),
        "group_dro_q": _final_q(loss_fn, labels),
        "seed": seed, "device": str(device), "mixed_precision": str(dtype).replace("torch.", "") if dtype else None,
    }
    columns = CURVE_COLUMNS + ([ADVERSARY_COLUMN] if getattr(loss_fn, "adversary", None) is not None else [])
    if ADVERSARY_COLUMN in columns:  # the adversary head's language accuracy: last curve row and kept weights' row
        metrics[ADVERSARY_COLUMN] = adversary_summary(state.curve, state.best_step)
    result = FinetuneResult(model, tokenizer, metrics, pred_df, pd.DataFrame(state.curve, columns=columns))
    if outputs:
        write_outputs(result, outputs)
    ckpt.finish()
    return result


def _mitigation_hooks(mcfg: MitigationConfig, train_df, val_df, train_feats, val_feats, model, tokenizer,
                      n_classes: int, weighting: str, seed: int):
    """(loss, sampler) of a condition's mitigations, None where it has none; rows get their language index."""
    if not mcfg.changes_loss and mcfg.sampling == "shuffle":
        return None, None
    order = list(dict.fromkeys(train_df["language"].astype(str)))
    for feats, df in ((train_feats, train_df), (val_feats, val_df)):
        for f, idx in zip(feats, language_indices(df["language"].astype(str).tolist(), order)):
            f[LANGUAGE_KEY] = int(idx)
    sampler = make_sampler(mcfg.sampling, train_df["language"].astype(str).tolist(), train_df["label"].tolist(),
                           seed=seed)
    if not mcfg.changes_loss:
        return None, sampler
    loss_fn = MitigationLoss(mcfg, labels=train_df["label"].to_numpy(), languages=train_df["language"].astype(str),
                             n_classes=n_classes, language_order=order, weighting=weighting,
                             hidden_size=getattr(model.config, "hidden_size", None),
                             mask_token_id=tokenizer.mask_token_id, pad_token_id=tokenizer.pad_token_id,
                             update_per_forward=False)
    return loss_fn.to(next(model.parameters()).device), sampler


def _final_q(loss_fn: MitigationLoss | None, labels: Sequence[str]) -> dict[str, float] | None:
    """Group DRO's final q by "language/label name" (None without group DRO)."""
    q = loss_fn.group_weights() if loss_fn is not None else None
    if q is None:
        return None
    return {f"{key.rsplit('/', 1)[0]}/{labels[int(key.rsplit('/', 1)[1])]}": value for key, value in q.items()}


def train(model, pad_id: int, train_feats: list[dict], val_feats: list[dict], hp: Mapping[str, Any], seed: int,
          device: torch.device, dtype: torch.dtype | None, ckpt: Checkpointer,
          tensorboard_dir: str | os.PathLike | None = None, loss_fn: MitigationLoss | None = None,
          sampler: torch.utils.data.Sampler | None = None, model_selection: str = "val_loss",
          val_groups: tuple[np.ndarray, np.ndarray] | None = None,
          decoupled_decay: float = 0.0) -> tuple[FinetuneState, TrainingLoop]:
    """Epochs of accumulation groups with validation every ``eval_every`` of an epoch (resuming if possible).

    ``loss_fn`` replaces the weighted cross-entropy (its parameters join the optimiser at the head's
    learning rate); ``sampler`` draws each epoch's rows; ``model_selection`` picks the kept
    weights (worst-group accuracy needs ``val_groups``, the validation rows' languages and labels);
    ``decoupled_decay``: see :func:`make_optimizer`."""
    bs, ga = int(hp["batch_size"]), int(hp["grad_accum"])
    steps_per_epoch = math.ceil(math.ceil((len(sampler) if sampler is not None else len(train_feats)) / bs) / ga)
    total_steps = steps_per_epoch * int(hp["epochs"])
    eval_interval = max(1, round(float(hp["eval_every"] or 1.0) * steps_per_epoch))
    optimizer = make_optimizer(model, hp, decoupled_decay)
    if loss_fn is not None and list(loss_fn.parameters()):
        optimizer.add_param_group({"params": list(loss_fn.parameters()), "lr": float(hp["lr_head"])})
    # learning rates: linear warm-up over warmup_fraction of the steps, then linear decay to final_lr_fraction
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        warmup_decay, total_steps=total_steps, warmup_steps=round(float(hp["warmup_fraction"] or 0) * total_steps),
        peak=1.0, final=float(hp["final_lr_fraction"]), decay="linear"))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    parts = _Parts(model, optimizer, scheduler, scaler, device, dtype, pad_id, loss_fn, model_selection, val_groups)
    state = FinetuneState(best_state=_cpu_state(model))
    lengths = [len(f["input_ids"]) for f in train_feats]
    with TrainingLoop(state, total_steps, ckpt, stateful=parts.stateful(), tensorboard_dir=tensorboard_dir,
                      desc="finetune") as loop:
        start = loop.resume()
        if loop.resumed_from is not None:
            logger.info("resumed: epoch %d, accumulation group %d, global step %d, best val loss %.4f",
                     state.epoch, state.group_pos, state.step, state.best_val_loss)
        logger.info("%d train rows, %d steps/epoch x %d epochs, eval every %d steps%s",
                 len(train_feats), steps_per_epoch, hp["epochs"], eval_interval,
                 f", resumed at step {start}" if loop.resumed_from is not None else "")
        for epoch in range(state.epoch, int(hp["epochs"])):
            batches = epoch_batches(lengths, bs, seed, epoch, bool(hp["length_grouped"]), sampler)
            _run_epoch(loop, parts, epoch, batches, train_feats, val_feats, hp, eval_interval)
    return state, loop


def _run_epoch(loop: TrainingLoop, parts: _Parts, epoch: int, batches: list[list[int]], train_feats, val_feats,
               hp: Mapping[str, Any], eval_interval: int) -> None:
    """The epoch's accumulation groups from where a resumed run left off; validation and checkpoints on the way."""
    state: FinetuneState = loop.state  # type: ignore[assignment]
    ga = int(hp["grad_accum"])
    groups = [batches[i:i + ga] for i in range(0, len(batches), ga)]
    start = state.group_pos if epoch == state.epoch else 0
    state.epoch = epoch
    loader = torch.utils.data.DataLoader(
        train_feats, batch_sampler=[b for g in groups[start:] for b in g],
        collate_fn=partial(collate, pad_token_id=parts.pad_id), num_workers=int(hp["num_workers"] or 0),
        pin_memory=parts.device.type == "cuda",
        generator=torch.Generator())  # its own seed draw must not touch the global RNG (resume)
    batch_iter = iter(loader)
    for gi in range(start, len(groups)):
        _step(parts, state, [next(batch_iter) for _ in groups[gi]])
        loop.advance(loss=f"{state.loss_sum / max(1, state.loss_n):.4f}")
        last = gi == len(groups) - 1
        state.epoch, state.group_pos = (epoch + 1, 0) if last else (epoch, gi + 1)
        if state.step % eval_interval == 0 or last:
            _validate(loop, parts, val_feats, int(hp["eval_batch_size"]), epoch + (gi + 1) / len(groups))
        loop.checkpoint_if_due()


def _step(parts: _Parts, state: FinetuneState, group: list[dict[str, torch.Tensor]]) -> None:
    """One optimiser step over an accumulation group of micro-batches."""
    for batch in group:
        _, loss = _forward(parts.model, batch, parts.device, parts.dtype, parts.loss_fn)
        parts.scaler.scale(loss / len(group)).backward()
        state.loss_sum += float(loss.detach())
        state.loss_n += 1
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scheduler.step()
    if parts.loss_fn is not None:
        parts.loss_fn.step()  # group DRO: q moves once per optimiser step
    state.step += 1


def _validate(loop: TrainingLoop, parts: _Parts, val_feats, batch_size: int, epoch: float) -> None:
    """A curve row with the validation loss; the weights are kept when it is the best so far."""
    state: FinetuneState = loop.state  # type: ignore[assignment]
    logits, val_loss = predict(parts.model, val_feats, batch_size, parts.pad_id, parts.device, parts.dtype,
                               parts.loss_fn)
    train_loss = state.loss_sum / max(1, state.loss_n)
    lr = parts.optimizer.param_groups[0]["lr"]
    row = {"step": state.step, "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr}
    if getattr(parts.loss_fn, "adversary", None) is not None:
        row[ADVERSARY_COLUMN] = parts.loss_fn.adversary.take_accuracy()
    loop.log(row)
    state.loss_sum, state.loss_n = 0.0, 0
    worst = (group_accuracies(logits.argmax(axis=1), parts.val_groups[1], parts.val_groups[0])["worst_group_accuracy"]
             if parts.val_groups is not None else math.nan)
    score = -val_loss if parts.model_selection == "val_loss" else worst
    if score > state.best_score:
        state.best_val_loss, state.best_step, state.best_score = val_loss, state.step, score
        state.best_worst_group_accuracy = worst
        state.best_state = _cpu_state(parts.model)
    logger.info("step %d (epoch %.2f): train loss %.4f, val loss %.4f%s", state.step, epoch,
             train_loss, val_loss, " (best)" if state.best_step == state.step else "")


def prediction_table(variant: str, df: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """The rows of ``predictions.parquet`` for one test variant: test_variant, id, language, label,
    prediction (the most probable class) and prob_<c> for every class."""
    out = pd.DataFrame({"test_variant": variant, "id": df["id"].astype(str).to_numpy(),
                        "language": df["language"].to_numpy(), "label": df["label"].astype("int64").to_numpy(),
                        "prediction": probs.argmax(axis=1).astype("int64")})
    for c in range(probs.shape[1]):
        out[f"prob_{c}"] = probs[:, c]
    return out


def _predict_tests(model, tokenizer, test_sets, max_len, hp, device, dtype):
    """Predictions table over all test variants and accuracy {variant: {"all"|language: acc}}."""
    frames, accuracy = [], {}
    for variant, df in test_sets.items():
        feats = encode(tokenizer, df, max_len)
        logits, _ = predict(model, feats, int(hp["eval_batch_size"]), tokenizer.pad_token_id, device, dtype)
        out = prediction_table(variant, df, torch.softmax(torch.from_numpy(logits), dim=-1).numpy())
        correct = out["label"] == out["prediction"]
        accuracy[variant] = {"all": float(correct.mean()),
                             **{str(k): float(v) for k, v in correct.groupby(out["language"]).mean().items()}}
        frames.append(out)
    return pd.concat(frames, ignore_index=True), accuracy


def write_outputs(result: FinetuneResult, outputs: Mapping[str, str | os.PathLike]) -> None:
    """Write whichever of model / metrics / predictions / curve ``outputs`` names."""
    writers: dict[str, Callable[[Any], None]] = {
        "model": partial(_save_model, result),
        "metrics": partial(write_json, result.metrics),
        "predictions": partial(write_parquet, result.predictions),
        "curve": partial(write_csv, result.curve),
    }
    for key, path in outputs.items():
        if key not in writers:
            raise LangskewError(f"finetune outputs: unknown key {key!r}; known: {', '.join(writers)}")
        writers[key](path)


def _save_model(result: FinetuneResult, path: str | os.PathLike) -> None:
    with atomic_dir(path) as tmp:
        result.model.save_pretrained(tmp)
        result.tokenizer.save_pretrained(tmp)


# -- Snakemake job -----------------------------------------------------------------------
def finetune_job(job: Job, *, model: dict[str, Any], labels: list[str], test_variants: list[str],
                 hp: dict[str, Any], weighting: str, mitigation: dict[str, Any], seed: int, ckpt_dir: str,
                 keep_checkpoints: bool, model_selection: str) -> None:
    """Snakemake job; see the module docstring and :func:`finetune`.

    input: train, validation, tests (list, same order as ``test_variants``), model (only for a
    model the workflow builds: its local directory). ``model``: {path, revision,
    trust_remote_code} of the pretrained model. ``mitigation``: the condition's mitigation keys
    (empty: none); ``model_selection``: the condition's rule (:data:`MODEL_SELECTIONS`). output:
    model, metrics, predictions, curve.
    """
    set_threads(job.threads)
    tests = [job.input.tests] if isinstance(job.input.tests, (str, os.PathLike)) else list(job.input.tests)
    variants = list(test_variants)
    if len(tests) != len(variants):
        raise LangskewError(f"input.tests has {len(tests)} files for test_variants {variants}")
    spec = dict(model or {})
    local = job.input.get("model")
    model_path = (local[0] if isinstance(local, list) else local) or spec.get("path")
    if not model_path:
        raise LangskewError("finetune: no model (input.model or the model param's 'path')")
    finetune(pd.read_parquet(job.input.train), pd.read_parquet(job.input.validation),
             {v: pd.read_parquet(p) for v, p in zip(variants, tests)},
             model_path, list(labels), hp=hp, seed=int(seed), weighting=str(weighting), ckpt_dir=ckpt_dir,
             keep_checkpoints=bool(keep_checkpoints), revision=spec.get("revision") if not local else None,
             trust_remote_code=bool(spec.get("trust_remote_code", False)),
             outputs={k: getattr(job.output, k) for k in ("model", "metrics", "predictions", "curve")},
             tensorboard_dir=job.tensorboard, mitigation=mitigation, model_selection=str(model_selection))
