"""The training skeleton both studies share: state, resume, signals, progress bar, curve, schedule.

A training loop declares what a checkpoint holds once: a :class:`TrainState` dataclass of plain
values (the step, the curve rows, its own counters) and a mapping of stateful objects (model,
optimizer, scheduler, grad scaler: anything with ``state_dict`` / ``load_state_dict``). A
:class:`TrainingLoop` then does the rest:

    state = MyState()                                       # a TrainState subclass
    with TrainingLoop(state, total_steps, checkpointer, stateful={"model": model, ...}) as loop:
        start = loop.resume()                               # 0, or the step of the latest checkpoint
        for step in range(start, total_steps):
            ...                                             # one optimizer step
            state.step = step + 1
            loop.log({"step": state.step, "train_loss": ...})  # a curve row (+ TensorBoard)
            loop.advance()                                  # progress bar
            loop.checkpoint_if_due()                        # every N steps, or on SIGTERM / SIGUSR1 (then exit)

A checkpoint is ``{"rng": ..., <each stateful object's state_dict>, <each TrainState field>}``
written by :class:`langskew.checkpointing.Checkpointer`; the fields must be values that
``torch.load(weights_only=True)`` reads back (tensors, numbers, strings, lists, dicts).

:func:`warmup_decay` is the learning-rate schedule of both studies.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from tqdm import tqdm

from langskew.checkpointing import Checkpointer, rng_state, set_rng_state
from langskew.curves import TensorBoardLog
from langskew.errors import LangskewError
from langskew.progress import progress

logger = logging.getLogger(__name__)

DECAYS = ("linear", "cosine", "warmup_times_cosine")


def warmup_decay(step: int, total_steps: int, warmup_steps: int, peak: float, final: float,
                 decay: str = "linear") -> float:
    """Value at optimizer step ``step`` (0-based): linear warm-up to ``peak``, then decay to ``final``.

    ``"linear"`` and ``"cosine"``: warm-up ``peak * (step + 1) / warmup_steps`` for the first
    ``warmup_steps`` steps, then the decay runs from ``peak`` at the end of the warm-up to
    ``final`` at ``total_steps`` (and stays there). ``"linear"`` is Study A's (as a factor of
    its learning rates: peak 1, final ``final_lr_fraction``); ``"cosine"`` is Study B's former
    shape.

    ``"warmup_times_cosine"`` (Study B, the shape of Languini's ``CosineLR`` that the authors
    trained with): the warm-up ramp multiplies a cosine that runs over all steps from step 0,
    ``min(n, W) / W * (final + (peak - final) * (1 + cos(pi * min(n, T) / T)) / 2)`` with
    ``n = step + 1`` (the scheduler has stepped once before the first optimizer step),
    ``W = warmup_steps`` (no ramp when 0) and ``T = total_steps``.
    """
    if decay == "warmup_times_cosine":
        n, total = step + 1, max(1, total_steps)
        ramp = min(n, warmup_steps) / warmup_steps if warmup_steps > 0 else 1.0
        return ramp * (final + 0.5 * (peak - final) * (1.0 + math.cos(math.pi * min(n, total) / total)))
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if decay == "cosine":
        return final + 0.5 * (peak - final) * (1.0 + math.cos(math.pi * progress))
    if decay == "linear":
        return peak - (peak - final) * progress
    raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")


@dataclass
class TrainState:
    """The plain values a checkpoint holds: the optimizer steps done and the curve rows so far.

    A training loop subclasses it with its own counters (running loss sums, best weights, ...).
    """

    step: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def load_state_dict(self, values: Mapping[str, Any]) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, values[f.name])


class TrainingLoop:
    """Resume, checkpoints, stop signals, progress bar and curve of one training run.

    ``checkpointer``: None trains without checkpoints (and without signal handling).
    ``stateful``: named objects saved with ``state_dict()`` and restored with ``load_state_dict()``.
    ``is_main`` / ``barrier``: under DDP only the main process saves checkpoints, shows the bar and
    writes TensorBoard events; ``barrier`` then holds every process until the checkpoint is saved.
    """

    def __init__(self, state: TrainState, total_steps: int, checkpointer: Checkpointer | None = None, *,
                 stateful: Mapping[str, Any] | None = None, tensorboard_dir: Any = None, progress: bool = True,
                 desc: str | None = None, is_main: bool = True, barrier: Callable[[], None] | None = None):
        self.state, self.total_steps, self.checkpointer = state, int(total_steps), checkpointer
        self.stateful = dict(stateful or {})
        self.tensorboard_dir, self.progress, self.desc = tensorboard_dir, progress, desc
        self.is_main, self.barrier = is_main, barrier
        self.resumed_from: int | None = None
        self.tb = TensorBoardLog(None)
        self.bar: tqdm | None = None
        self.wall_before = 0.0  # seconds spent by the attempts before the resumed checkpoint
        self._t0 = self._rate_t = time.perf_counter()
        self._rate_step = 0
        if checkpointer is not None:
            checkpointer.install_signal_handlers()  # SIGTERM / SIGUSR1 -> checkpoint, then exit

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds: RNG states, every stateful object, every state field, the wall time."""
        return {"rng": rng_state(), **{name: obj.state_dict() for name, obj in self.stateful.items()},
                **self.state.state_dict(), "wall_seconds": self.wall_seconds}

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        expected = ["rng", *self.stateful, *self.state.state_dict(), "wall_seconds"]
        missing = [key for key in expected if key not in saved]
        if missing:
            where = self.checkpointer.loaded_path if self.checkpointer else "the checkpoint"
            raise LangskewError(f"checkpoint {where} lacks {', '.join(missing)}: it was written by another version "
                                "of this training loop; delete its folder to restart the run from step 0")
        for name, obj in self.stateful.items():
            if saved[name]:  # a disabled grad scaler saves {} and has nothing to restore
                obj.load_state_dict(saved[name])
        self.state.load_state_dict(saved)
        self.wall_before = float(saved["wall_seconds"])
        set_rng_state(saved["rng"])

    def resume(self, map_location: Any = "cpu") -> int:
        """Restore the latest checkpoint if there is one; open the progress bar and TensorBoard; return the step."""
        saved = self.checkpointer.load_latest(map_location=map_location) if self.checkpointer else None
        if saved is not None:
            self.load_state_dict(saved)
            self.resumed_from = self.state.step
            logger.info("resuming from checkpoint at step %d of %d", self.state.step, self.total_steps)
        start = self.state.step
        # a resumed run hides the events an interrupted attempt wrote after its last checkpoint
        self.tb = TensorBoardLog(self.tensorboard_dir if self.is_main else None, purge_step=start)
        self.bar = progress(total=self.total_steps, initial=start, desc=self.desc, unit="step", dynamic_ncols=True,
                        file=sys.stderr, disable=not (self.progress and self.is_main))
        self._t0 = self._rate_t = time.perf_counter()
        self._rate_step = start
        return start

    @property
    def stop_requested(self) -> bool:
        return self.checkpointer is not None and self.checkpointer.stop_requested

    def checkpoint_if_due(self, stop: bool | None = None) -> None:
        """Save every ``every_steps`` steps, or at once when a stop was requested; then exit if so.

        ``stop``: whether any process must stop (under DDP all ranks agree on it); defaults to this
        process's own stop request.
        """
        stop = self.stop_requested if stop is None else stop
        if self.checkpointer is None or not (self.checkpointer.due(self.state.step) or stop):
            return
        if self.is_main:
            self.checkpointer.save(self.state.step, self.state_dict())
        if self.barrier is not None:
            self.barrier()
        if stop and self.checkpointer.stop_requested:
            self.close()
            self.checkpointer.exit_if_requested()  # exit status 128 + signal: the scheduler requeues the job

    # -- curve, progress bar, time -------------------------------------------------------
    def log(self, row: dict[str, Any], **postfix: Any) -> None:
        """Append a curve row (sent to TensorBoard as well); ``postfix`` goes to the progress bar."""
        self.state.curve.append(row)
        self.tb.log(self.state.step, row)
        if postfix and self.bar is not None:
            self.bar.set_postfix(postfix)

    def advance(self, **postfix: Any) -> None:
        """One optimizer step done: move the progress bar (with ``postfix`` shown beside it)."""
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def steps_per_second(self) -> float:
        """Steps per second since the previous call (or since the start)."""
        now = time.perf_counter()
        rate = (self.state.step - self._rate_step) / max(now - self._rate_t, 1e-9)
        self._rate_t, self._rate_step = now, self.state.step
        return rate

    @property
    def elapsed(self) -> float:
        """Seconds since this attempt started training."""
        return time.perf_counter() - self._t0

    @property
    def wall_seconds(self) -> float:
        """Training seconds over every attempt of the run."""
        return self.wall_before + self.elapsed

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.tb.close()
        if self.checkpointer is not None:
            self.checkpointer.restore_signal_handlers()  # a later SIGTERM ends the process again

    def __enter__(self) -> "TrainingLoop":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
