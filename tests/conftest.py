import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Never reach for the network: hub code paths run against local folders only.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """Run the whole offline demo once (both studies) into a temporary output folder; every
    test that needs the demo's outputs shares this one run. Returns (folder, config args)."""
    base = tmp_path_factory.mktemp("demo")
    conf = ["--configfile", "presets/demo.yaml", "--config", f"outdir={base}/results",
            f"checkpoint_dir={base}/checkpoints"]
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *conf], cwd=ROOT,
                          capture_output=True, text=True, timeout=3000)
    if proc.returncode != 0:
        raise AssertionError(f"the demo failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return base, conf


@pytest.fixture
def one_thread():
    """Tiny models run fastest (and least disturbed by other processes) on one thread; torch's
    thread count is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo_raw():
    """The demo configuration (config.yaml + presets/demo.yaml) before validation; copy it before
    changing it (tests.helpers.rejected does)."""
    from langskew.config import load_config

    return load_config(ROOT / "config.yaml", ROOT / "presets" / "demo.yaml", validate=False)
