"""Where tensors go and in which precision (both studies), and what a job runs with.

A job's rule says how many GPUs it wants (the ``gpu`` resource, from the config's
``models.<name>.resources`` / ``study_b.sizes.<size>.resources``). :func:`require_gpus`
stops a job that wants a GPU and finds no usable CUDA device, before any work, naming the
torch build it found; ``gpu: 0`` asks for the CPU explicitly (:func:`use_gpus`), and
:func:`pick_device` then returns the CPU even where CUDA is available.
torch is imported inside the functions: the data environment has no torch, and its jobs
only describe the environment (:func:`environment_line`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from langskew.errors import LangskewError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# GPUs the running job's rule asked for: None (the rule names no `gpu` resource: the GPU when
# there is one), 0 (the config asks for the CPU), or n >= 1 (checked by require_gpus).
_WANTED_GPUS: int | None = None

CUDA_HELP = (
    "the CUDA build of torch: with conda, create envs/torch.yaml where conda-forge selects "
    "pytorch=*=cuda* (on a GPU node, or on a login node with CONDA_OVERRIDE_CUDA=<CUDA version "
    "of the nodes' driver>, e.g. 12.6); with pip, `pip install torch==<version>` from PyPI on "
    "Linux x86_64 or `--index-url https://download.pytorch.org/whl/cu126`. To run on the CPU "
    "instead, set gpu: 0 in the model's or size's resources (docs/cluster.md)"
)


def use_gpus(gpus: int | None) -> None:
    """Record the GPUs the job's rule asked for (None: the rule does not say)."""
    global _WANTED_GPUS
    _WANTED_GPUS = None if gpus is None else int(gpus)


def pick_device(index: int | None = None) -> torch.device:
    """``cuda`` (GPU ``index`` when given, e.g. a DDP rank's local rank) if available and the
    job's rule does not ask for the CPU (``gpu: 0``), else ``cpu``."""
    import torch

    if _WANTED_GPUS != 0 and torch.cuda.is_available():
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    return torch.device("cpu")


def torch_build(torch_module=None) -> str:
    """``"CUDA 12.6 build"``, ``"ROCm 6.2 build"`` or ``"CPU build"`` (torch.version.cuda None)."""
    if torch_module is None:
        import torch as torch_module
    version = torch_module.version
    if getattr(version, "cuda", None):
        return f"CUDA {version.cuda} build"
    if getattr(version, "hip", None):
        return f"ROCm {version.hip} build"
    return "CPU build"


def require_gpus(gpus: int | None) -> None:
    """A LangskewError, before any work, when the rule asks for ``gpus`` >= 1 GPUs and torch
    sees fewer usable CUDA devices; it names the torch build found and how to get a CUDA one."""
    if not gpus or int(gpus) <= 0:
        return
    if importlib.util.find_spec("torch") is None:
        raise LangskewError(f"this job asks for {gpus} GPU(s) but torch is not installed in "
                            f"{sys.prefix}; install {CUDA_HELP}")
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found >= int(gpus):
        return
    build = torch_build(torch)
    if torch.version.cuda is None:
        why = f"torch {torch.__version__} is a {build} (torch.version.cuda is None)"
        fix = f"install {CUDA_HELP}"
    else:
        why = (f"torch {torch.__version__} ({build}) sees {found} usable CUDA device(s) "
               f"(CUDA_VISIBLE_DEVICES={_env('CUDA_VISIBLE_DEVICES')}; no GPU allocated, or "
               f"a driver older than CUDA {torch.version.cuda})")
        fix = ("request the GPU from the scheduler (the rule's gpu resource) or use a torch "
               "build that matches the driver; to run on the CPU instead set gpu: 0 in the "
               "model's or size's resources (docs/cluster.md)")
    raise LangskewError(f"this job asks for {gpus} GPU(s), but {why}: {fix}. "
                        f"Stopped before any work.")


def _env(name: str) -> str:
    import os

    value = os.environ.get(name)
    return "unset" if value is None else repr(value)


def _package_line() -> str:
    import langskew

    try:
        version = importlib.metadata.version("langskew")
    except importlib.metadata.PackageNotFoundError:
        version = "(not installed)"
    return f"langskew {version} at {Path(langskew.__file__).resolve().parent}"


def _torch_line(load: bool) -> tuple[str, object | None]:
    if load and "torch" not in sys.modules and importlib.util.find_spec("torch") is not None:
        import torch  # noqa: F401  (a GPU rule's job: the build matters)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        return f"torch {torch.__version__} ({torch_build(torch)})", torch
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "torch not installed", None
    return f"torch {version} (installed; build not checked: the rule asks for no GPU)", None


def _device_line(gpus: int | None, torch) -> str:
    if gpus == 0:
        return "cpu (gpu: 0 in the config)"
    if torch is None:
        return "cpu" if not gpus else "none (torch not installed)"
    if not torch.cuda.is_available():
        return "cpu" if not gpus else f"none: {gpus} GPU(s) wanted, no usable CUDA device"
    n = torch.cuda.device_count()
    return f"cuda ({n} visible: {torch.cuda.get_device_name(0)})"


def environment_line(gpus: int | None = None) -> str:
    """One line for the top of a job's log: package version and location, torch version and
    build, the device the job will use (``gpus``: the rule's gpu resource, None if unset)."""
    torch_text, torch = _torch_line(load=gpus is not None)
    return f"{_package_line()}; {torch_text}; device {_device_line(gpus, torch)}"


def set_threads(threads: int | None, processes: int = 1) -> None:
    """Let torch use the job's CPU threads, shared by ``processes`` processes (at least one each)."""
    import torch

    torch.set_num_threads(max(1, int(threads or 1) // max(1, int(processes))))


# The device decisions, each one small function: tests set them to their CUDA answer to run
# the mixed-precision and fused-optimizer paths on the CPU (tests/test_cuda_paths_on_cpu.py).
def mixed_precision_device(device: torch.device) -> bool:
    """Whether precision settings apply on ``device``: CUDA only (CPU runs stay in fp32)."""
    return device.type == "cuda"


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16: a question for CUDA only (CPU autocast has bf16)."""
    import torch

    return device.type != "cuda" or torch.cuda.is_bf16_supported()


def fused_optimizer(device: torch.device) -> bool:
    """Whether AdamW runs its fused kernel on ``device``: CUDA only."""
    return device.type == "cuda"


def dist_backend() -> str:
    """The torch.distributed backend: NCCL where there is a GPU (CUDA only by nature), else gloo."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def amp_dtype(device: torch.device, precision: str | bool | None) -> torch.dtype | None:
    """The autocast dtype for a precision setting on a device; None means full precision.

    On CUDA, ``"bf16"`` (or ``True``) gives bfloat16 (float16 where the GPU lacks bf16) and
    ``"fp16"`` gives float16; ``"fp32"``, ``False`` or None give None. On the CPU always None.
    """
    import torch

    if not mixed_precision_device(device) or not precision or precision == "fp32":
        return None
    if precision == "fp16" or not bf16_supported(device):
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` in ``dtype`` on ``device``, or a no-op context for full precision."""
    import torch

    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
