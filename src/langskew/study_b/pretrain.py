"""Pretraining loop for the Study B language models (resumable, optionally multi-GPU).

One optimizer step consumes ``batch_size`` sequences (all ranks together) of ``context``
inputs and targets drawn by ``Mixture.batch(step, ...)``, a pure function of (seed, step,
rank): resuming needs the step only, so a checkpoint holds the model, optimizer, RNG states
and :class:`PretrainState` (step, curve so far, running counters), saved and restored by
:class:`langskew.training.TrainingLoop`. CPU runs resumed after a kill end with exactly the
same weights and curve as an uninterrupted run.

Schedule (``lr_schedule``, :func:`langskew.training.warmup_decay`): by default the authors'
shape, a linear warm-up ramp over ``warmup_steps`` multiplied into a cosine from ``lr`` to
``min_lr`` that runs over all steps of the run from step 0 (``warmup_times_cosine``);
``warmup_then_cosine`` warms up first and runs the cosine over the remaining steps. Adam(W) with betas
(0.9, 0.95), eps 1e-8, no weight decay, fused on CUDA; bf16 autocast on CUDA (fp32 on CPU);
optional ``torch.compile``; gradient accumulation over micro-batches of ``micro_batch_size``
sequences per process.

Multi-GPU: ``pretrain_job`` with ``num_gpus > 1`` re-launches itself under
``torchrun --standalone --nproc_per_node N`` (see :func:`launch_torchrun`); each rank then
trains a DistributedDataParallel replica on its slice of the global batch
(``Mixture.batch(step, batch_size // world_size, context, rank, world_size)``: the rank's
rows of one global batch, so the data do not depend on the number of processes) and rank 0
writes the checkpoints and outputs. SIGTERM/SIGUSR1 on the launching process are forwarded,
so every rank stops after the same step and rank 0 saves a checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from langskew.checkpointing import Checkpointer, seed_everything
from langskew.devices import amp_dtype, autocast, dist_backend, fused_optimizer, pick_device, set_threads
from langskew.errors import LangskewError, require_positive
from langskew.io import atomic_dir, write_csv, write_json
from langskew.study_b.model import GPT, GPTConfig, save_model
from langskew.training import TrainingLoop, TrainState, warmup_decay
from langskew.workflow import Job, setup_logging

logger = logging.getLogger(__name__)

MODEL_KEYS = ("n_layer", "d_model", "n_head")
#: ``train.lr_schedule`` -> the ``decay`` of :func:`langskew.training.warmup_decay`.
LR_SCHEDULES = {"warmup_times_cosine": "warmup_times_cosine", "warmup_then_cosine": "cosine"}


@dataclass
class TrainHP:
    """Training hyper-parameters (``params.train``); defaults are the paper's small model."""

    context: int = 512
    batch_size: int = 128
    micro_batch_size: int = 32
    lr: float = 6e-4
    min_lr: float = 6e-6
    warmup_steps: int = 200
    lr_schedule: str = "warmup_times_cosine"  # the authors' (Languini's CosineLR); or "warmup_then_cosine"
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = None
    precision: str = "bf16"  # "bf16" (autocast, CUDA only) or "fp32"
    compile: bool = False
    eval_every: int = 500
    eval_batches: int = 8
    checkpoint_every: int = 500
    log_every: int = 50

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainHP":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LangskewError(f"train: unknown key(s) {unknown}; expected some of {sorted(known)}")
        hp = cls(**d)
        hp.betas = tuple(float(b) for b in hp.betas)  # type: ignore[assignment]
        if hp.lr_schedule is None:  # a size's train slice built without the key: the default
            hp.lr_schedule = cls.lr_schedule
        if hp.lr_schedule not in LR_SCHEDULES:
            raise LangskewError(f"train: lr_schedule must be one of {sorted(LR_SCHEDULES)}, got {hp.lr_schedule!r}")
        if hp.precision not in ("bf16", "fp32"):
            raise LangskewError(f"train: precision must be 'bf16' or 'fp32', got {hp.precision!r}")
        require_positive("train", {key: getattr(hp, key) for key in
                                   ("context", "batch_size", "micro_batch_size", "eval_batches", "log_every")})
        return hp

    def micro_steps(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each process."""
        per_rank, rest = divmod(self.batch_size, world_size)
        if rest or per_rank % self.micro_batch_size:
            raise LangskewError(f"train: batch_size={self.batch_size} must be a multiple of micro_batch_size="
                                f"{self.micro_batch_size} x world size {world_size}")
        return per_rank // self.micro_batch_size


# -- data -------------------------------------------------------------------------------
class BatchPrefetcher:
    """Produce ``mixture.batch(step, ...)`` for the coming steps in a background thread.

    Batch construction (memmap reads, id mapping) overlaps with the GPU work; ``depth``
    batches wait in the queue. An exception in the thread is re-raised by the consumer.
    """

    def __init__(self, mixture: Any, steps: range, rank_batch_size: int, context: int, rank: int = 0,
                 world_size: int = 1, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._args = (mixture, steps, rank_batch_size, context, rank, world_size)
        self._thread = threading.Thread(target=self._produce, name="batch-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        mixture, steps, batch_size, context, rank, world_size = self._args
        try:
            for step in steps:
                item = (step, mixture.batch(step, batch_size, context, rank, world_size))
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as err:  # handed to the consumer
            self._queue.put((None, err))

    def __iter__(self) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        for _ in range(len(self._args[1])):
            step, item = self._queue.get()
            if step is None:
                raise item
            yield step, item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def heldout_windows(stream: np.ndarray, context: int, n_windows: int) -> torch.Tensor:
    """Up to ``n_windows`` evenly spaced, non-overlapping windows of ``context + 1`` tokens."""
    stream = np.asarray(stream)
    fit = (len(stream) - 1) // context
    n = min(n_windows, fit)
    if n <= 0:
        raise LangskewError(f"train: held-out stream of {len(stream)} tokens is shorter than context+1={context + 1}")
    starts = np.linspace(0, len(stream) - context - 1, n).astype(np.int64)
    return torch.from_numpy(np.stack([stream[s:s + context + 1] for s in starts]).astype(np.int64))


# -- distributed ------------------------------------------------------------------------
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> "DistInfo":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
        return cls()


def init_distributed_from_env() -> DistInfo:
    """Join the process group torchrun describes in the environment (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        dist.init_process_group(backend=dist_backend())
    return DistInfo.current()


def _all_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


# -- training ---------------------------------------------------------------------------
@dataclass
class PretrainState(TrainState):
    """What a checkpoint holds besides the model and optimizer (step and curve: see TrainState)."""

    seen: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))  # sequences/language
    pending: list[torch.Tensor] = field(default_factory=list)  # mean losses of the steps since the last curve row


@dataclass
class PretrainResult:
    model: GPT
    curve: list[dict[str, float]]
    metrics: dict[str, Any]


def make_optimizer(model: torch.nn.Module, hp: TrainHP, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=hp.lr, betas=hp.betas, eps=hp.eps,
                             weight_decay=hp.weight_decay, fused=fused_optimizer(device))


def train_step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               n_micro: int, hp: TrainHP, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    """One optimizer step with gradient accumulation; returns the (detached) mean loss."""
    xs, ys = batch["x"].chunk(n_micro), batch["y"].chunk(n_micro)  # n_micro x (micro_batch, context)
    total = torch.zeros((), device=device)
    for i, (x, y) in enumerate(zip(xs, ys)):
        last = i == n_micro - 1  # DDP all-reduces the gradients on the last micro-batch only
        sync = module.no_sync() if hasattr(module, "no_sync") and not last else contextlib.nullcontext()
        with sync, autocast(device, dtype):
            _, loss = module(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        (loss / n_micro).backward()
        total += loss.detach()
    if hp.grad_clip:
        torch.nn.utils.clip_grad_norm_(module.parameters(), hp.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / n_micro


def sum_over_ranks(loss: torch.Tensor, counts: np.ndarray, stop: bool,
                   info: DistInfo) -> tuple[torch.Tensor, np.ndarray, bool]:
    """Under DDP, one all-reduce: the ranks' mean loss, whether any rank must stop, the counts of all ranks."""
    if info.world_size == 1:
        return loss, counts, stop
    shared = torch.cat([loss.double().view(1),
                        torch.tensor([float(stop), *counts], dtype=torch.float64, device=loss.device)])
    shared = _all_sum(shared, info)
    return (shared[0] / info.world_size).float(), shared[2:].cpu().numpy(), bool(shared[1] > 0)


@torch.no_grad()
def validation_losses(model: GPT, windows: Sequence[torch.Tensor], micro_batch_size: int, device: torch.device,
                      dtype: torch.dtype | None) -> list[float]:
    """Mean next-token loss of the model on each language's held-out windows (n_windows, context + 1)."""
    was_training = model.training
    model.eval()
    out = []
    for w in windows:
        losses = []
        for chunk in w.split(micro_batch_size):
            chunk = chunk.to(device)
            with autocast(device, dtype):
                _, loss = model(chunk[:, :-1], chunk[:, 1:])
            losses.append(loss.float() * len(chunk))
        out.append(float(torch.stack(losses).sum()) / len(w))
    model.train(was_training)
    return out


def curve_row(state: PretrainState, lr: float, val_losses: Sequence[float], names: Sequence[str],
              hp: TrainHP) -> dict[str, float]:
    """step, tokens, lr, the mean training loss since the previous row, a validation loss per language."""
    row = {"step": state.step, "tokens": state.step * hp.batch_size * hp.context, "lr": lr,
           "train_loss": float(torch.stack(state.pending).mean())}
    row.update({f"val_loss_{n}": v for n, v in zip(names, val_losses)})
    return row


def pretrain(mixture: Any, model_cfg: GPTConfig, hp: TrainHP, total_steps: int, seed: int = 0,
             checkpointer: Checkpointer | None = None, device: torch.device | str | None = None,
             progress: bool = True, tensorboard_dir: str | None = None) -> PretrainResult:
    """Train a :class:`GPT` on ``mixture`` for ``total_steps`` optimizer steps (resuming if possible).

    Runs data-parallel when a process group is initialised (one call per rank).
    """
    info = DistInfo.current()
    device = torch.device(device) if device is not None else pick_device(info.local_rank)
    dtype, n_micro = amp_dtype(device, hp.precision), hp.micro_steps(info.world_size)
    names = list(mixture.language_names)
    seed_everything(seed)
    model = GPT(model_cfg).to(device)
    optimizer = make_optimizer(model, hp, device)
    state = PretrainState(seen=torch.zeros(len(names), dtype=torch.float64))
    with TrainingLoop(state, total_steps, checkpointer, stateful={"model": model, "optimizer": optimizer},
                      tensorboard_dir=tensorboard_dir, progress=progress, is_main=info.is_main,
                      barrier=partial(_barrier, info)) as loop:
        start = loop.resume(map_location=device)
        module = _wrap(model, hp, info, device)
        val_windows = [heldout_windows(mixture.heldout(i), hp.context, hp.eval_batches * hp.micro_batch_size)
                       for i in range(len(names))] if info.is_main else []
        loader = BatchPrefetcher(mixture, range(start, total_steps), hp.batch_size // info.world_size, hp.context,
                                 info.rank, info.world_size)
        model.train()
        with contextlib.closing(loader):
            for step, batch in loader:  # batch: x, y (batch_size / world_size, context); lang (batch_size / ...)
                # learning rate of this step: warm-up ramp and cosine down to min_lr (train.lr_schedule)
                lr = warmup_decay(step, total_steps, hp.warmup_steps, hp.lr, hp.min_lr, LR_SCHEDULES[hp.lr_schedule])
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # forward and backward over the micro-batches (gradients accumulate), clip, optimizer step
                loss = train_step(module, optimizer, batch, n_micro, hp, device, dtype)
                # sequences per language; under DDP summed over the ranks, with the loss and any stop request
                counts = np.bincount(batch["lang"].numpy(), minlength=len(names))[:len(names)]
                loss, counts, stop = sum_over_ranks(loss, counts, loop.stop_requested, info)
                state.pending.append(loss)
                state.seen += torch.from_numpy(counts)
                state.step = step + 1
                # a curve row every log_every steps; with the validation losses every eval_every steps and at the end
                evaluate = state.step % max(1, hp.eval_every) == 0 or state.step == total_steps
                if evaluate or state.step % hp.log_every == 0:
                    vals = validation_losses(model, val_windows, hp.micro_batch_size, device, dtype) \
                        if evaluate and info.is_main else [float("nan")] * len(names)
                    row = curve_row(state, lr, vals, names, hp)
                    state.pending = []
                    loop.log(row, loss=f"{row['train_loss']:.3f}",
                             tok_s=f"{loop.steps_per_second() * hp.batch_size * hp.context:.0f}")
                loop.advance()
                # a checkpoint every checkpoint_every steps, or now if a signal asks to stop (then exit)
                if state.step < total_steps:
                    loop.checkpoint_if_due(stop)
    metrics = run_metrics(loop, state, model, hp, names, info)
    metrics["data_passes"] = mixture.data_passes(state.seen.tolist(), hp.context)
    repeated = {n: round(v, 2) for n, v in metrics["data_passes"].items() if v > 1}
    if repeated and info.is_main:
        logger.warning("passes over the training stream above 1 (data seen more than once): %s", repeated)
    return PretrainResult(model=model, curve=state.curve, metrics=metrics)


def _wrap(model: GPT, hp: TrainHP, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """The module the steps run: the model, compiled if asked, inside DistributedDataParallel under DDP."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    module: torch.nn.Module = torch.compile(model) if hp.compile else model
    if info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        module = DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
    return module


def run_metrics(loop: TrainingLoop, state: PretrainState, model: GPT, hp: TrainHP, names: Sequence[str],
                info: DistInfo) -> dict[str, Any]:
    """metrics.json of a run (besides its id and label)."""
    elapsed, total = loop.elapsed, loop.total_steps
    steps_run = total - (loop.resumed_from or 0)
    tokens_per_step = hp.batch_size * hp.context
    final = state.curve[-1] if state.curve else {}
    return {
        "steps": total, "tokens": total * tokens_per_step, "batch_size": hp.batch_size,
        "context": hp.context, "n_params": model.num_params(), "world_size": info.world_size,
        "device": str(next(model.parameters()).device.type), "final_train_loss": final.get("train_loss"),
        "final_val_loss": {n: final.get(f"val_loss_{n}") for n in names},
        "tokens_seen": {n: int(c) * hp.context for n, c in zip(names, state.seen.tolist())},
        "resumed_from_step": loop.resumed_from, "steps_run": steps_run,
        "tokens_per_second": steps_run * tokens_per_step / max(elapsed, 1e-9),
        "wall_seconds": loop.wall_before + elapsed,
    }


# -- Snakemake job ----------------------------------------------------------------------
def model_config(model: dict[str, Any], vocab_size: int, context: int) -> GPTConfig:
    """The GPT of a run from the rule's ``model`` param (n_layer, d_model, n_head; optional head_dim)."""
    missing = [k for k in MODEL_KEYS if k not in model]
    unknown = sorted(set(model) - set(MODEL_KEYS) - {"head_dim"})
    if missing or unknown:
        raise LangskewError(f"model: params need exactly {list(MODEL_KEYS)} (and optionally head_dim); "
                            f"missing {missing}, unknown {unknown}")
    head_dim = model.get("head_dim")
    return GPTConfig(vocab_size=vocab_size, context=context, **{k: int(model[k]) for k in MODEL_KEYS},
                     head_dim=int(head_dim) if head_dim else None)


def pretrain_job(job: Job, *, run: dict[str, Any], model: dict[str, Any], train: dict[str, Any], seed: int,
                 ckpt_dir: str, keep_checkpoints: bool, num_gpus: int) -> dict[str, Any] | None:
    """Snakemake job: train one run of the grid and write model/, curve.csv, metrics.json.

    input: tokens (meta.json of each language's token streams). output: model, curve, metrics.
    With ``num_gpus > 1`` the job re-launches itself under torchrun (see :func:`launch_torchrun`).
    """
    hp = TrainHP.from_dict(dict(train))
    require_positive("train", {"num_gpus": num_gpus})
    model_config(dict(model), 1, hp.context)  # validate before any expensive work
    hp.micro_steps(num_gpus)
    if torch.cuda.is_available() and torch.cuda.device_count() < num_gpus:
        raise LangskewError(f"train: num_gpus={num_gpus} but only {torch.cuda.device_count()} GPU(s) are visible")
    if num_gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return launch_torchrun(job, {"run": run, "model": model, "train": train, "seed": seed, "ckpt_dir": ckpt_dir,
                                     "keep_checkpoints": keep_checkpoints, "num_gpus": num_gpus})

    from langskew.study_b.languages import build_mixture

    info = init_distributed_from_env()
    if not torch.cuda.is_available():
        set_threads(job.threads, info.world_size)
    mixture = build_mixture(dict(run), list(job.input.tokens), int(seed))
    cfg = model_config(dict(model), int(mixture.vocab_size), hp.context)
    ckpt = Checkpointer(ckpt_dir, every_steps=hp.checkpoint_every, keep_after_finish=bool(keep_checkpoints))
    logger.info("pretraining %s: %s, %d steps, world size %d", run.get("id"), cfg, int(run["steps"]), info.world_size)
    result = pretrain(mixture, cfg, hp, int(run["steps"]), seed=int(seed), checkpointer=ckpt,
                      tensorboard_dir=job.tensorboard)
    if info.is_main:
        write_outputs(result, job.output, run)
        ckpt.finish()
    _barrier(info)
    if info.world_size > 1:
        dist.destroy_process_group()
    return result.metrics


def write_outputs(result: PretrainResult, output: Any, run: dict[str, Any]) -> None:
    """model/ (safetensors + config.json), curve.csv and metrics.json, each written atomically."""
    with atomic_dir(output.model) as tmp:
        save_model(result.model, tmp)
    write_csv(pd.DataFrame(result.curve), output.curve)
    write_json({"run": run.get("id"), "label": run.get("label"), **result.metrics}, output.metrics)


# -- multi-process launcher -------------------------------------------------------------
def _plain(obj: Any) -> Any:
    """Snakemake named lists -> JSON-able dicts (named entries) or lists (unnamed ones)."""
    if hasattr(obj, "_names") and hasattr(obj, "keys") and list(obj.keys()):  # snakemake Namedlist with names
        return {k: _plain(getattr(obj, k)) for k in obj.keys()}
    if isinstance(obj, SimpleNamespace):
        return {k: _plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def launch_torchrun(job: Job, params: dict[str, Any]) -> None:
    """Re-run this job under ``torchrun --standalone --nproc_per_node num_gpus`` and wait for it.

    The job and its params travel in a temporary JSON file; the ranks inherit the environment
    (so they import the same ``langskew``). SIGTERM and SIGUSR1 received here are forwarded to
    torchrun as SIGTERM (torchrun passes it on to every rank, which checkpoints and stops). A
    failure of the ranks is re-raised as our exit status.
    """
    nproc, threads = int(params["num_gpus"]), int(job.threads or 1)
    spec = {"input": _plain(job.input), "output": _plain(job.output), "threads": threads,
            "log_file": job.log_file, "tensorboard": job.tensorboard, "rule": job.rule, "params": _plain(params)}
    fd, spec_path = tempfile.mkstemp(prefix="langskew-pretrain-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // nproc))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "langskew.study_b.pretrain", spec_path]
    logger.info("launching %d processes: %s", nproc, " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env)
    previous = {s: signal.signal(s, lambda *_: proc.send_signal(signal.SIGTERM))
                for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        rc = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        os.unlink(spec_path)
    if rc != 0:
        raise SystemExit(rc)


def main(argv: list[str]) -> None:
    """Entry point of each torchrun rank: ``python -m langskew.study_b.pretrain SPEC.json``."""
    spec = json.loads(Path(argv[0]).read_text())
    rank = int(os.environ.get("RANK", "0"))
    if spec["log_file"]:
        Path(spec["log_file"]).parent.mkdir(parents=True, exist_ok=True)
    setup_logging(spec["log_file"] if rank == 0 else None, logging.INFO if rank == 0 else logging.WARNING)
    job = Job(input=SimpleNamespace(**spec["input"]), output=SimpleNamespace(**spec["output"]),
              threads=spec["threads"], log_file=spec["log_file"], rule=spec["rule"], tensorboard=spec["tensorboard"])
    pretrain_job(job, **spec["params"])


if __name__ == "__main__":
    main(sys.argv[1:])
