"""A training job killed mid-run (SIGTERM as SLURM sends at a time limit, or SIGKILL) loses
no finished steps: Snakemake deletes the failed job's outputs but not its checkpoint folder
(a param, not an output), and rerunning the target resumes and ends with the metrics of an
uninterrupted run."""
import json
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import PRETRAIN_RUN, ROOT, copy_data_steps, pretrain_args, run_pretrain


def _job_process(parent: psutil.Process):
    """The Python process running the training script (not a wrapping shell)."""
    for child in parent.children(recursive=True):
        try:
            if "python" in child.name() and any("study_b_pretrain" in part for part in child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_pretraining_resumes_with_identical_metrics(tmp_path, short_training, sig):
    reference_base, override = short_training
    reference = json.loads(pretrain_args(reference_base)[1].read_text())
    copy_data_steps(reference_base, tmp_path)
    args, target = pretrain_args(tmp_path, override)
    ckpt = tmp_path / "checkpoints" / "study_b" / PRETRAIN_RUN
    smk = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", *args], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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

    resumed = run_pretrain(tmp_path, override)
    log = (tmp_path / "results" / "logs").rglob(f"{PRETRAIN_RUN}*.log")
    assert any("resuming from checkpoint" in p.read_text() for p in log)
    assert resumed["resumed_from_step"] > 0
    assert resumed["steps_run"] < reference["steps_run"]
    for key in ["final_val_loss", "tokens_seen"]:
        assert resumed[key] == reference[key], key
    assert not ckpt.exists()                        # removed once the final outputs are written
