"""Parsing the workflow (every dry run, every Snakemake invocation) imports no deep-learning
or data-science library: the rule files need only the config checks and the grid expansion."""
import subprocess
import sys

import pytest

# (pandas is not listed: Snakemake itself imports it.)
HEAVY = ("torch", "transformers", "datasets", "sklearn", "shap", "matplotlib", "scipy", "sentencepiece")


@pytest.mark.parametrize("preset", [[], ["--configfile", "presets/demo.yaml"]], ids=["paper", "demo"])
def test_dry_run_imports_no_heavy_library(root, tmp_path, preset):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--quiet", "--cores", "1",
                           *preset, "--config", f"outdir={tmp_path}/r"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "langskew.config" in imported and "langskew.study_b.grid" in imported
    assert not imported & set(HEAVY), f"parsing imported {sorted(imported & set(HEAVY))}"
