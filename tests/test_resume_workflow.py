"""A training job killed mid-run (SIGTERM as SLURM sends at a time limit, or SIGKILL) loses
no finished steps: Snakemake deletes the failed job's outputs but not its checkpoint folder
(a param, not an output), and rerunning the target resumes and ends with the metrics of an
uninterrupted run."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT

RUN = "tiny-1x-clone2-p0.50"
# longer than the demo's 200 steps so that a kill lands mid-run; frequent checkpoints
OVERRIDE = "study_b:\n  train: {base_steps: 600, checkpoint_every: 60, eval_every: 200}\n"


def _args(base: Path, override: Path):
    target = base / "results" / "study_b" / "runs" / RUN / "metrics.json"
    return [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "presets/demo.yaml", str(override),
            "--config", f"outdir={base}/results", f"checkpoint_dir={base}/checkpoints", "--", str(target)], target


UPSTREAM = ["study_b/corpus", "study_b/tokenizer", "study_b/tokens"]  # data steps the runs share


def _reuse_data_steps(base: Path, reference_base: Path) -> None:
    """Copy the reference's data steps (timestamps kept) so that only the pretraining job runs."""
    for rel in UPSTREAM:
        shutil.copytree(reference_base / "results" / rel, base / "results" / rel)


def _run(base: Path, override: Path):
    args, target = _args(base, override)
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(target.read_text())


def _job_process(parent: psutil.Process):
    """The Python process running the training script (not a wrapping shell)."""
    for child in parent.children(recursive=True):
        try:
            if "python" in child.name() and any("study_b_pretrain" in part for part in child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("uninterrupted")
    override = base / "override.yaml"
    override.write_text(OVERRIDE)
    return base, _run(base, override)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_pretraining_resumes_with_identical_metrics(tmp_path, reference, sig):
    reference_base, reference = reference
    _reuse_data_steps(tmp_path, reference_base)
    override = tmp_path / "override.yaml"
    override.write_text(OVERRIDE)
    args, target = _args(tmp_path, override)
    ckpt = tmp_path / "checkpoints" / "study_b" / RUN
    smk = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not list(ckpt.glob("step-*.pt")):
            assert smk.poll() is None, "the run ended before the first checkpoint"
            time.sleep(0.2)
        job = _job_process(psutil.Process(smk.pid))
        assert job is not None, "training job process not found"
        job.send_signal(sig)
        out, _ = smk.communicate(timeout=300)
    finally:
        if smk.poll() is None:
            smk.kill()
    assert smk.returncode != 0, out[-3000:]
    assert not target.exists()                      # Snakemake removed the failed job's outputs
    assert list(ckpt.glob("step-*.pt")), "checkpoint folder must survive the failed job"

    resumed = _run(tmp_path, override)
    log = (tmp_path / "results" / "logs").rglob(f"{RUN}*.log")
    assert any("resuming from checkpoint" in p.read_text() for p in log)
    assert resumed["resumed_from_step"] > 0
    assert resumed["steps_run"] < reference["steps_run"]
    for key in ["final_val_loss", "tokens_seen"]:
        assert resumed[key] == reference[key], key
    assert not ckpt.exists()                        # removed once the final outputs are written
