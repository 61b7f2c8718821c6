"""Where tensors go and in which precision: the GPU when there is one, else the CPU (both studies)."""

from __future__ import annotations

import contextlib

import torch


def pick_device(index: int | None = None) -> torch.device:
    """``cuda`` (GPU ``index`` when given, e.g. a DDP rank's local rank) if available, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    return torch.device("cpu")


def set_threads(threads: int | None, processes: int = 1) -> None:
    """Let torch use the job's CPU threads, shared by ``processes`` processes (at least one each)."""
    torch.set_num_threads(max(1, int(threads or 1) // max(1, int(processes))))


# The device decisions, each one small function: tests set them to their CUDA answer to run
# the mixed-precision and fused-optimizer paths on the CPU (tests/test_cuda_paths_on_cpu.py).
def mixed_precision_device(device: torch.device) -> bool:
    """Whether precision settings apply on ``device``: CUDA only (CPU runs stay in fp32)."""
    return device.type == "cuda"


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16: a question for CUDA only (CPU autocast has bf16)."""
    return device.type != "cuda" or torch.cuda.is_bf16_supported()


def fused_optimizer(device: torch.device) -> bool:
    """Whether AdamW runs its fused kernel on ``device``: CUDA only."""
    return device.type == "cuda"


def dist_backend() -> str:
    """The torch.distributed backend: NCCL where there is a GPU (CUDA only by nature), else gloo."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def amp_dtype(device: torch.device, precision: str | bool | None) -> torch.dtype | None:
    """The autocast dtype for a precision setting on a device; None means full precision.

    On CUDA, ``"bf16"`` (or ``True``) gives bfloat16 (float16 where the GPU lacks bf16) and
    ``"fp16"`` gives float16; ``"fp32"``, ``False`` or None give None. On the CPU always None.
    """
    if not mixed_precision_device(device) or not precision or precision == "fp32":
        return None
    if precision == "fp16" or not bf16_supported(device):
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` in ``dtype`` on ``device``, or a no-op context for full precision."""
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
