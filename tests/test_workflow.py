"""The workflow as a user drives it: dry runs of the paper grid, the demo end to end,
no-op reruns, and precise reruns after a config change."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT


def snakemake(*args, cwd=ROOT, timeout=1800, check=True):
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run."""
    counts = {}
    block = output.split("Job stats:")[1] if "Job stats:" in output else ""
    for line in block.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_paper_dry_run_lists_the_grid(tmp_path):
    out = snakemake("-n", "--cores", "1", "--config", f"outdir={tmp_path}/r").stdout
    c = job_counts(out)
    # 2 datasets x 2 models x 3 conditions x 2 seeds
    assert c["finetune"] == 24 and c["evaluate"] == 24 and c["probe"] == 24
    assert c["shap_values"] == 24 and c["shap_compare"] == 8 and c["probe_base"] == 4
    assert c["prepare_dataset"] == 2 and c["build_subsets"] == 2 and c["report_study_a"] == 1
    assert "build_tiny_model" not in c  # hub models are not built
    assert not (tmp_path / "r").exists()  # a dry run touches nothing


def test_paper_dry_run_has_gpu_resources(tmp_path):
    """Training jobs ask for GPUs through the SLURM plugin's `gpu` resource, never slurm_extra."""
    out = snakemake("-n", "--cores", "1", "-p", "--config", f"outdir={tmp_path}/r", "--forcerun", "finetune",
                    "--until", "finetune").stdout
    block = out.split("rule finetune:")[1].split("\n\n")[0]
    assert re.search(r"resources:.*gpu=1", block) and "runtime=720" in block
    assert "slurm_extra" not in out
