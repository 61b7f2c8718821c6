"""The workflow is deployable: it runs as a Snakemake `module` from another folder and finds the
package through the installed distribution (no `sys.path` edits). The rule environments:
tests/test_envs.py."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from conftest import ROOT

DEMO = ROOT / "presets" / "demo.yaml"


def snakemake(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, f"snakemake {' '.join(args)} failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


def job_counts(output: str) -> dict[str, int]:
    block = output.split("Job stats:")[1] if "Job stats:" in output else ""
    return {m.group(1): int(m.group(2)) for m in (re.match(r"^(\w+)\s+(\d+)$", l.strip()) for l in block.splitlines())
            if m and m.group(1) != "total"}


def host_workflow(folder: Path) -> Path:
    """A project folder of its own that uses langskew as a module (as snakedeploy would set up)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Snakefile").write_text(f'''
configfile: "{ROOT / 'config.yaml'}"


module langskew:
    snakefile: "{ROOT / 'Snakefile'}"
    config: config


use rule * from langskew
''')
    return folder


def demo_args(out: Path) -> list[str]:
    return ["--configfile", str(DEMO), "--config", f"outdir={out}/results", f"checkpoint_dir={out}/checkpoints"]


def test_demo_dry_run_through_a_module(tmp_path):
    host = host_workflow(tmp_path / "project")
    via_module = job_counts(snakemake("-n", "--quiet", "rules", *demo_args(tmp_path / "m"), cwd=host))
    direct = job_counts(snakemake("-n", "--quiet", "rules", *demo_args(tmp_path / "d"), cwd=ROOT))
    assert via_module, "no jobs listed"
    assert via_module == direct
    assert via_module["study_a_finetune"] > 0 and via_module["study_b_pretrain"] > 0
    assert not (host / "results").exists()  # a dry run writes nothing


def test_a_job_runs_through_a_module(tmp_path):
    """A real job (its script, log and outputs) from the module's own folder."""
    host = host_workflow(tmp_path / "project")
    dataset = yaml.safe_load(DEMO.read_text())["study_a"]["datasets"][0]
    target = tmp_path / "m" / "results" / "study_a" / "data" / dataset / "train.parquet"
    snakemake("--cores", "1", *demo_args(tmp_path / "m"), "--", str(target), cwd=host)
    df = pd.read_parquet(target)
    assert {"id", "language", "text", "label"} <= set(df.columns) and len(df) > 0
    assert list((tmp_path / "m" / "results" / "logs").rglob(f"{dataset}.log"))


def test_no_sys_path_edits_in_rules_or_scripts():
    files = [ROOT / "Snakefile", *(ROOT / "rules").glob("*.smk"), *(ROOT / "scripts").glob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in files if "sys.path" in p.read_text()]
    assert not offenders
