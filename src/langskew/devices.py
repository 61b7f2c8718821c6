"""Where tensors go: the GPU when there is one, else the CPU (both studies)."""

import torch


def pick_device() -> torch.device:
    """``cuda`` if available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
