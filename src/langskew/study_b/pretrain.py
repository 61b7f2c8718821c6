"""Pretraining loop for the Study B language models (resumable, optionally multi-GPU).

One optimizer step consumes ``batch_size`` sequences (all ranks together) of ``context``
inputs and targets drawn by ``Mixture.batch(step, ...)``, which is a pure function of (seed, step, rank): resuming
needs the step only, so a checkpoint holds the model, optimizer, RNG states, the curve so
far and the running counters. CPU runs resumed after a kill end with exactly the same
weights and curve as an uninterrupted run.

Schedule: linear warm-up over ``warmup_steps`` then cosine from ``lr`` to ``min_lr`` over the
remaining steps of the run. Adam(W) with betas (0.9, 0.95), eps 1e-8, no weight decay,
fused on CUDA; bf16 autocast on CUDA (fp32 on CPU); optional ``torch.compile``; gradient
accumulation over micro-batches of ``micro_batch_size`` sequences per process.

Multi-GPU: ``pretrain_job`` with ``params.num_gpus > 1`` re-launches itself under
``torchrun --standalone --nproc_per_node N`` (see :func:`launch_torchrun`); each rank then
trains a DistributedDataParallel replica on its slice of the global batch
(``Mixture.batch(step, batch_size // world_size, context, rank, world_size)``: the rank's
rows of one global batch, so the data do not depend on the number of processes) and rank 0 writes the
checkpoints and outputs. SIGTERM/SIGUSR1 on the launching process are forwarded, so every
rank stops after the same step and rank 0 saves a checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm import tqdm

from langskew.checkpointing import Checkpointer, rng_state, seed_everything, set_rng_state
from langskew.errors import LangskewError
from langskew.curves import TensorBoardLog
from langskew.io import atomic_dir, write_csv, write_json
from langskew.devices import pick_device
from langskew.study_b.model import GPT, GPTConfig, save_model

log = logging.getLogger(__name__)

MODEL_KEYS = ("n_layer", "d_model", "n_head")


@dataclass
class TrainHP:
    """Training hyper-parameters (``params.train``); defaults are the paper's small model."""

    context: int = 512
    batch_size: int = 128
    micro_batch_size: int = 32
    lr: float = 6e-4
    min_lr: float = 6e-6
    warmup_steps: int = 200
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
        if hp.precision not in ("bf16", "fp32"):
            raise LangskewError(f"train: precision must be 'bf16' or 'fp32', got {hp.precision!r}")
        for key in ("context", "batch_size", "micro_batch_size", "eval_batches", "log_every"):
            if int(getattr(hp, key)) <= 0:
                raise LangskewError(f"train: {key} must be positive, got {getattr(hp, key)}")
        return hp

    def micro_steps(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each process."""
        per_rank, rest = divmod(self.batch_size, world_size)
        if rest or per_rank % self.micro_batch_size:
            raise LangskewError(f"train: batch_size={self.batch_size} must be a multiple of micro_batch_size="
                                f"{self.micro_batch_size} x world size {world_size}")
        return per_rank // self.micro_batch_size


def lr_at(step: int, total_steps: int, hp: TrainHP) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine to min_lr."""
    if step < hp.warmup_steps:
        return hp.lr * (step + 1) / hp.warmup_steps
    span = max(1, total_steps - hp.warmup_steps)
    progress = min(1.0, (step - hp.warmup_steps) / span)
    return hp.min_lr + 0.5 * (hp.lr - hp.min_lr) * (1.0 + math.cos(math.pi * progress))


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
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
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
class PretrainResult:
    model: GPT
    curve: list[dict[str, float]]
    metrics: dict[str, Any]


def make_optimizer(model: torch.nn.Module, hp: TrainHP, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=hp.lr, betas=hp.betas, eps=hp.eps,
                             weight_decay=hp.weight_decay, fused=device.type == "cuda")


def _autocast(device: torch.device, hp: TrainHP):
    if device.type == "cuda" and hp.precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               n_micro: int, hp: TrainHP, device: torch.device) -> torch.Tensor:
    """One optimizer step with gradient accumulation; returns the (detached) mean loss."""
    xs, ys = batch["x"].chunk(n_micro), batch["y"].chunk(n_micro)
    total = torch.zeros((), device=device)
    for i, (x, y) in enumerate(zip(xs, ys)):
        last = i == n_micro - 1
        sync = module.no_sync() if hasattr(module, "no_sync") and not last else contextlib.nullcontext()
        with sync, _autocast(device, hp):
            _, loss = module(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        (loss / n_micro).backward()
        total += loss.detach()
    if hp.grad_clip:
        torch.nn.utils.clip_grad_norm_(module.parameters(), hp.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / n_micro


@torch.no_grad()
def validation_losses(model: GPT, windows: Sequence[torch.Tensor], micro_batch_size: int, hp: TrainHP,
                      device: torch.device) -> list[float]:
    """Mean next-token loss of the model on each language's held-out windows."""
    was_training = model.training
    model.eval()
    out = []
    for w in windows:
        losses = []
        for chunk in w.split(micro_batch_size):
            chunk = chunk.to(device)
            with _autocast(device, hp):
                _, loss = model(chunk[:, :-1], chunk[:, 1:])
            losses.append(loss.float() * len(chunk))
        out.append(float(torch.stack(losses).sum()) / len(w))
    model.train(was_training)
    return out


def pretrain(mixture: Any, model_cfg: GPTConfig, hp: TrainHP, total_steps: int, seed: int = 0,
             checkpointer: Checkpointer | None = None, device: torch.device | str | None = None,
             progress: bool = True, tensorboard_dir: str | None = None) -> PretrainResult:
    """Train a :class:`GPT` on ``mixture`` for ``total_steps`` optimizer steps (resuming if possible).

    Runs data-parallel when a process group is initialised (one call per rank).
    """
    info = DistInfo.current()
    device = torch.device(device) if device is not None else (
        torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu"))
    n_micro = hp.micro_steps(info.world_size)
    names = list(mixture.language_names)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    seed_everything(seed)
    model = GPT(model_cfg).to(device)
    optimizer = make_optimizer(model, hp, device)
    pending: list[torch.Tensor] = []  # losses of the steps since the last curve row
    seen = np.zeros(len(names), dtype=np.float64)  # sequences drawn per language (all ranks)
    curve: list[dict[str, float]] = []
    start, wall_before = 0, 0.0
    state = checkpointer.load_latest(map_location=device) if checkpointer else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start, curve, wall_before = int(state["step"]), list(state["curve"]), float(state["wall_seconds"])
        pending, seen = list(state["pending"].to(device)), state["seen"].numpy().copy()
        log.info("resuming from checkpoint at step %d of %d", start, total_steps)
    tb = TensorBoardLog(tensorboard_dir if info.is_main else None, purge_step=start)  # opt-in

    module: torch.nn.Module = torch.compile(model) if hp.compile else model
    if info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        module = DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
    val_windows = [heldout_windows(mixture.heldout(i), hp.context, hp.eval_batches * hp.micro_batch_size)
                   for i in range(len(names))] if info.is_main else []

    tokens_per_step = hp.batch_size * hp.context
    bar = tqdm(total=total_steps, initial=start, disable=not (progress and info.is_main), unit="step",
               dynamic_ncols=True, file=sys.stderr)
    t0 = last_t = time.perf_counter()
    last_step = start
    loader = BatchPrefetcher(mixture, range(start, total_steps), hp.batch_size // info.world_size, hp.context,
                             info.rank, info.world_size)
    model.train()
    try:
        for step, batch in loader:
            lr = lr_at(step, total_steps, hp)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = train_step(module, optimizer, batch, n_micro, hp, device)
            counts = np.bincount(batch["lang"].numpy(), minlength=len(names))[:len(names)]
            stop = checkpointer is not None and checkpointer.stop_requested
            if info.world_size > 1:  # one collective: mean loss, any rank stopping, counts of all ranks
                shared = torch.cat([loss.double().view(1), torch.tensor([float(stop), *counts],
                                                                        dtype=torch.float64, device=device)])
                shared = _all_sum(shared, info)
                loss = (shared[0] / info.world_size).float()
                stop, counts = bool(shared[1] > 0), shared[2:].cpu().numpy()
            pending.append(loss)
            seen += counts
            done = step + 1

            evaluate_now = done % max(1, hp.eval_every) == 0 or done == total_steps
            if done % hp.log_every == 0 or evaluate_now:
                vals = validation_losses(model, val_windows, hp.micro_batch_size, hp, device) \
                    if evaluate_now and info.is_main else [float("nan")] * len(names)
                row = {"step": done, "tokens": done * tokens_per_step, "lr": lr,
                       "train_loss": float(torch.stack(pending).mean())}
                row.update({f"val_loss_{n}": v for n, v in zip(names, vals)})
                curve.append(row)
                tb.log(done, row)
                pending = []
                now = time.perf_counter()
                bar.set_postfix(loss=f"{row['train_loss']:.3f}",
                                tok_s=f"{(done - last_step) * tokens_per_step / (now - last_t):.0f}")
                last_t, last_step = now, done
            bar.update(1)

            if checkpointer is not None and (checkpointer.due(done) or stop) and done < total_steps:
                if info.is_main:
                    checkpointer.save(done, {
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng_state(),
                        "curve": curve, "seen": torch.from_numpy(seen.copy()),
                        "pending": torch.stack(pending).cpu() if pending else torch.zeros(0),
                        "wall_seconds": wall_before + time.perf_counter() - t0})
                _barrier(info)
                if stop:
                    loader.close()
                    bar.close()
                    checkpointer.exit_if_requested()
    finally:
        loader.close()
        bar.close()
        tb.close()

    elapsed = time.perf_counter() - t0
    final = curve[-1] if curve else {}
    tokens_seen = {n: int(c) * hp.context for n, c in zip(names, seen)}
    metrics = {
        "steps": total_steps, "tokens": total_steps * tokens_per_step, "batch_size": hp.batch_size,
        "context": hp.context, "n_params": model.num_params(), "world_size": info.world_size,
        "device": str(device.type), "final_train_loss": final.get("train_loss"),
        "final_val_loss": {n: final.get(f"val_loss_{n}") for n in names},
        "tokens_seen": tokens_seen, "resumed_from_step": start if state is not None else None,
        "steps_run": total_steps - start,
        "tokens_per_second": (total_steps - start) * tokens_per_step / max(elapsed, 1e-9),
        "wall_seconds": wall_before + elapsed,
    }
    return PretrainResult(model=model, curve=curve, metrics=metrics)


# -- Snakemake job ----------------------------------------------------------------------
def _model_config(model_params: dict[str, Any], vocab_size: int, context: int) -> GPTConfig:
    missing = [k for k in MODEL_KEYS if k not in model_params]
    unknown = sorted(set(model_params) - set(MODEL_KEYS))
    if missing or unknown:
        raise LangskewError(f"model: params need exactly {list(MODEL_KEYS)}; missing {missing}, unknown {unknown}")
    return GPTConfig(vocab_size=vocab_size, context=context, **{k: int(model_params[k]) for k in MODEL_KEYS})


def pretrain_job(input, output, params, threads, log, tensorboard=None, **_):
    """Snakemake job: train one run of the grid and write model/, curve.csv, metrics.json."""
    run = dict(params.run)
    hp = TrainHP.from_dict(dict(params.train))
    num_gpus = int(getattr(params, "num_gpus", 1) or 1)
    _model_config(dict(params.model), 1, hp.context)  # validate before any expensive work
    hp.micro_steps(num_gpus)
    if torch.cuda.is_available() and torch.cuda.device_count() < num_gpus:
        raise LangskewError(f"train: num_gpus={num_gpus} but only {torch.cuda.device_count()} GPU(s) are visible")
    if num_gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return launch_torchrun(num_gpus, input, output, params, threads, log, tensorboard)

    from langskew.study_b.languages import build_mixture

    info = init_distributed_from_env()
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, int(threads or 1) // info.world_size))
    mixture = build_mixture(run, list(input.tokens), int(params.seed))
    cfg = _model_config(dict(params.model), int(mixture.vocab_size), hp.context)
    ckpt = Checkpointer(getattr(params, "ckpt_dir", None), every_steps=hp.checkpoint_every,
                        keep_after_finish=bool(getattr(params, "keep_checkpoints", False)))
    ckpt.install_signal_handlers()
    log_ = logging.getLogger(__name__)
    log_.info("pretraining %s: %s, %d steps, world size %d", run.get("id"), cfg, int(run["steps"]), info.world_size)
    result = pretrain(mixture, cfg, hp, int(run["steps"]), seed=int(params.seed), checkpointer=ckpt,
                      tensorboard_dir=tensorboard)
    if info.is_main:
        write_outputs(result, output, run)
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
    """Snakemake namedlists / namespaces -> JSON-able dicts and lists."""
    if hasattr(obj, "_names") and hasattr(obj, "keys"):  # snakemake Namedlist
        return {k: _plain(getattr(obj, k)) for k in obj.keys()}
    if isinstance(obj, SimpleNamespace):
        return {k: _plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def launch_torchrun(nproc: int, input, output, params, threads, log, tensorboard: str | None = None) -> None:
    """Re-run this job under ``torchrun --standalone --nproc_per_node nproc`` and wait for it.

    The job's arguments travel in a temporary JSON file; SIGTERM and SIGUSR1 received
    here are forwarded to torchrun as SIGTERM (torchrun passes it on to every rank, which
    checkpoints and stops). A failure of the ranks is re-raised as our exit status.
    """
    spec = {"input": _plain(input), "output": _plain(output), "params": _plain(params),
            "threads": int(threads or 1), "log": log, "tensorboard": tensorboard}
    fd, spec_path = tempfile.mkstemp(prefix="langskew-pretrain-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    src = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": str(max(1, int(threads or 1) // nproc))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "langskew.study_b.pretrain", spec_path]
    logging.getLogger(__name__).info("launching %d processes: %s", nproc, " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env)
    previous = {s: signal.signal(s, lambda *_: proc.send_signal(signal.SIGTERM)) for s in (signal.SIGTERM, signal.SIGUSR1)}
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
    from langskew.workflow import setup_logging

    spec = json.loads(Path(argv[0]).read_text())
    rank = int(os.environ.get("RANK", "0"))
    if spec["log"]:
        Path(spec["log"]).parent.mkdir(parents=True, exist_ok=True)
    setup_logging(spec["log"] if rank == 0 else None, logging.INFO if rank == 0 else logging.WARNING)
    ns = {k: SimpleNamespace(**spec[k]) for k in ("input", "output", "params")}
    pretrain_job(ns["input"], ns["output"], ns["params"], spec["threads"], spec["log"], spec.get("tensorboard"))


if __name__ == "__main__":
    main(sys.argv[1:])
