"""Resumable training: full checkpoints, saved atomically, resumed after a kill.

Both studies' loops use it through :class:`langskew.training.TrainingLoop`, which declares
what a checkpoint holds once. Underneath, a loop owns a :class:`Checkpointer` for a directory
that is *not* a Snakemake output (Snakemake deletes the outputs of a failed job, but leaves
other paths alone):

    ckpt = Checkpointer(directory, every_steps=200)
    ckpt.install_signal_handlers()            # SIGTERM / SIGUSR1 -> save and stop
    state = ckpt.load_latest()                # None on a fresh start
    ...
    for step in ...:
        ...
        if ckpt.due(step) or ckpt.stop_requested:
            ckpt.save(step, {"model": ..., "optimizer": ..., "rng": rng_state(), ...})
            ckpt.exit_if_requested()          # exits with 128 + signal number
    ...write final outputs...
    ckpt.finish()                             # removes the directory unless keep_after_finish

Checkpoints are written to a temporary file and renamed, so a kill during a save leaves the
previous checkpoint intact. They load with ``torch.load(weights_only=True)``: the state must
hold tensors, numbers, strings, lists, tuples and dicts only (:func:`rng_state` complies).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

_CKPT_PREFIX = "step-"
_CKPT_SUFFIX = ".pt"


def rng_state() -> dict[str, Any]:
    """Every RNG a training loop touches, in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


class Checkpointer:
    """Periodic and signal-triggered full checkpoints in one directory."""

    def __init__(self, directory: str | os.PathLike | None, every_steps: int = 0, keep: int = 1,
                 keep_after_finish: bool = False, enabled: bool = True):
        self.directory = Path(directory) if directory else None
        self.every_steps = int(every_steps or 0)
        self.keep = max(1, int(keep))
        self.keep_after_finish = keep_after_finish
        self.enabled = enabled and self.directory is not None
        self.loaded_path: Path | None = None  # the checkpoint load_latest restored
        self._previous_handlers: dict[int, Any] = {}  # signal -> handler before install_signal_handlers
        self.stop_signal: int | None = None
        self.resumed_from: int | None = None

    # -- signals ---------------------------------------------------------------------
    def install_signal_handlers(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)) -> None:
        """On SIGTERM / SIGUSR1 (SLURM's time-limit and preemption warnings) ask the loop to stop."""

        def _handler(signum, _frame):
            logger.warning("received signal %s: will save a checkpoint and stop", signal.Signals(signum).name)
            self.stop_signal = signum

        for s in signals:
            self._previous_handlers.setdefault(s, signal.signal(s, _handler))

    def restore_signal_handlers(self) -> None:
        """Give the signals back to the handlers they had before (training is over)."""
        while self._previous_handlers:
            s, handler = self._previous_handlers.popitem()
            signal.signal(s, handler)

    @property
    def stop_requested(self) -> bool:
        return self.stop_signal is not None

    def exit_if_requested(self) -> None:
        if self.stop_signal is not None:
            logger.warning("stopping after checkpoint (signal %s); rerun the target to resume", self.stop_signal)
            logging.shutdown()
            sys.exit(128 + int(self.stop_signal))

    # -- saving / loading ------------------------------------------------------------
    def due(self, step: int) -> bool:
        return self.enabled and self.every_steps > 0 and step > 0 and step % self.every_steps == 0

    def _paths(self) -> list[Path]:
        if not self.directory or not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.glob(f"{_CKPT_PREFIX}*{_CKPT_SUFFIX}"):
            stem = p.name[len(_CKPT_PREFIX):-len(_CKPT_SUFFIX)]
            if stem.isdigit():
                found.append((int(stem), p))
        return [p for _, p in sorted(found)]

    def save(self, step: int, state: dict[str, Any]) -> Path | None:
        if not self.enabled:
            return None
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{_CKPT_PREFIX}{step:09d}{_CKPT_SUFFIX}"
        tmp = self.directory / f".{final.name}.tmp"
        torch.save({"step": step, **state}, tmp)
        os.replace(tmp, final)
        for old in self._paths()[:-self.keep]:
            old.unlink(missing_ok=True)
        logger.info("checkpoint saved at step %d: %s", step, final)
        return final

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        if not self.enabled:
            return None
        for path in reversed(self._paths()):
            try:
                state = torch.load(path, map_location=map_location, weights_only=True)
            except Exception as err:  # a torn file from a crash outside our atomic rename
                logger.warning("skipping unreadable checkpoint %s: %s", path, err)
                continue
            self.resumed_from = int(state.get("step", -1))
            self.loaded_path = path
            logger.info("resuming from checkpoint %s (step %d)", path, self.resumed_from)
            return state
        return None

    def finish(self) -> None:
        """Final outputs are written: drop the checkpoints unless asked to keep them."""
        if self.enabled and not self.keep_after_finish and self.directory and self.directory.exists():
            shutil.rmtree(self.directory, ignore_errors=True)
