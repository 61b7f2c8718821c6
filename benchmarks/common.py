"""What the GPU benchmarks share: the --device, --threads and --json options, the device they
pick, the machine line every figure is printed with, and the JSON file of the results."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import torch

from langskew.devices import pick_device


def add_machine_options(ap: argparse.ArgumentParser) -> None:
    """--device (auto: the GPU when there is one), --threads (CPU threads) and --json (results file)."""
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")


def machine_device(args: argparse.Namespace) -> torch.device:
    """Apply --threads and return the device --device names."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return pick_device() if args.device == "auto" else torch.device(args.device)


def machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU and its thread count: every printed figure names its hardware."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def write_results(args: argparse.Namespace, results: Any) -> None:
    """Write ``results`` as JSON to --json when given."""
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
