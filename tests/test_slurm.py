"""The SLURM profile (profiles/slurm) against a real, one-node SLURM cluster.

Every job of a small workflow must go through `sbatch` (SLURM job ids in Snakemake's log, one
SLURM log file per job in the profile's log folder, the jobs known to `squeue`), failed jobs
must be retried with more runtime, and the outputs must equal those of a local run.

Needs `sbatch` and a cluster that answers. Locally (root, Debian):
    tests/slurm/cluster.sh start && .venv/bin/pytest -m slurm tests/test_slurm.py; tests/slurm/cluster.sh stop
or let the session fixture start and stop it:
    LANGSKEW_START_SLURM=1 .venv/bin/pytest -m slurm tests/test_slurm.py
The demo-preset test runs by default; LANGSKEW_SLURM_DEMO=0 turns it off.
No GPU: the test cluster has no GRES, so no job here requests `gpu`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import PRETRAIN_RUN, copy_data_steps, pretrain_args

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SH = ROOT / "tests" / "slurm" / "cluster.sh"
PROFILE = ROOT / "profiles" / "slurm"
NO_ACCOUNTING = PROFILE / "no-accounting"
# Where the demo-preset test runs the workflow (a patched copy can be pointed to for debugging).
WORKFLOW_DIR = Path(os.environ.get("LANGSKEW_WORKFLOW_DIR", ROOT))
RUN_DEMO_TARGETS = os.environ.get("LANGSKEW_SLURM_DEMO", "1") == "1"
# Early, cheap targets of presets/demo.yaml (relative to outdir; {dataset}: first Study A dataset).
DEMO_TARGETS = [
    "study_a/subsets/{dataset}/counts.csv",  # two jobs: study_a_dataset, study_a_subsets
]
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")
TIMEOUT_S = 600

pytestmark = pytest.mark.slurm


# --- cluster --------------------------------------------------------------------------------
def _cluster_up() -> bool:
    """True when the SLURM controller answers and at least one node can take jobs."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = out.stdout.split()
    return out.returncode == 0 and any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states)


def _accounting_works() -> bool:
    return subprocess.run(["sacct", "-n", "-X", "-o", "JobID"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running SLURM cluster; started (and stopped again) here when LANGSKEW_START_SLURM=1. Only
    this module uses it: it stops after the module's last test, not at the end of the session."""
    started = False
    if not _cluster_up() and os.environ.get("LANGSKEW_START_SLURM") == "1":
        subprocess.run(["bash", str(CLUSTER_SH), "start"], check=True, timeout=900)
        started = True
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch not found: no SLURM here (LANGSKEW_START_SLURM=1 starts tests/slurm/cluster.sh)")
    if not _cluster_up():
        pytest.skip("SLURM cluster is not up (run tests/slurm/cluster.sh start or set LANGSKEW_START_SLURM=1)")
    yield
    if started:
        subprocess.run(["bash", str(CLUSTER_SH), "stop"], check=False, timeout=120)


# --- running snakemake -----------------------------------------------------------------------
def _snakemake(args: list[str], cwd: Path, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


def _slurm_args(logdir: Path) -> list[str]:
    """The real profile, plus only what a throwaway cluster needs: fast status polling, and the
    test's own Python environment instead of the profile's conda environments, built from the
    network (`--sdm env-modules` replaces the profile's `conda`; no rule names modules)."""
    args = ["--profile", str(PROFILE)]
    if not _accounting_works():
        args += ["--profile", str(NO_ACCOUNTING)]
    return args + [
        "--sdm", "env-modules",
        "--slurm-logdir", str(logdir),
        "--slurm-init-seconds-before-status-checks", "2",
        "--seconds-between-status-checks", "2",
        "--latency-wait", "10",
    ]


def _submissions(log_text: str) -> list[tuple[str, Path]]:
    return [(jobid, Path(path)) for jobid, path in SUBMITTED.findall(log_text)]


def _squeue(jobids: list[str]) -> dict[str, dict[str, str]]:
    """State, partition, name and time limit of jobs (finished ones stay for MinJobAge)."""
    out = subprocess.run(
        ["squeue", "--states=all", "-h", "-j", ",".join(jobids), "-o", "%i|%T|%P|%j|%l"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return {r[0]: dict(state=r[1], partition=r[2], name=r[3], time_limit=r[4]) for r in rows}


def _non_default_partition() -> str:
    """A partition the job only lands in when asked for (cluster.sh makes "second"), else the default."""
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout
    names = out.split()
    return next((p for p in names if not p.endswith("*")), names[0].rstrip("*"))


def _same_file(a: Path, b: Path) -> bool:
    if a.suffix == ".parquet":
        return pd.read_parquet(a).equals(pd.read_parquet(b))
    return a.read_bytes() == b.read_bytes()


# --- a throwaway workflow that proves the profile ---------------------------------------------
TINY_SNAKEFILE = '''
rule all:
    input: "out/summary.json"

rule make:
    output: "out/numbers_{n}.txt"
    shell: "seq 1 {wildcards.n} > {output}"

rule flaky:
    """Fails on its first attempt; the retry (attempt 2) gets twice the runtime and succeeds."""
    input: expand("out/numbers_{n}.txt", n=[3, 5])
    output: "out/total.txt"
    resources: runtime=lambda wildcards, attempt: 10 * attempt
    shell: "test {resources.runtime} -ge 20 || {{ echo 'first attempt fails' >&2; exit 3; }}; cat {input} | awk '{{s += $1}} END {{print s}}' > {output}"

rule summary:
    input: "out/total.txt"
    output: "out/summary.json"
    run:
        import json
        total = int(open(input[0]).read())
        json.dump({"total": total}, open(output[0], "w"))
'''


def _tiny_workflow(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "Snakefile").write_text(TINY_SNAKEFILE)
    return path


def test_profile_submits_every_job_through_sbatch(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.delenv("SBATCH_ACCOUNT", raising=False)  # no accounting here: account must stay unset
    partition = _non_default_partition()
    monkeypatch.setenv("SBATCH_PARTITION", partition)  # the profile reads it from the environment
    cluster_dir, local_dir = _tiny_workflow(tmp_path / "cluster"), _tiny_workflow(tmp_path / "local")
    logdir = tmp_path / "slurm_logs"

    proc = _snakemake(_slurm_args(logdir), cluster_dir)
    _snakemake(["--cores", "1", "--retries", "2"], local_dir)

    log = proc.stdout + proc.stderr
    assert f"slurm_partition={partition}" in log  # the profile's expression, not only sbatch's env
    assert "slurm_account=" not in log  # unset variable -> None -> resource dropped
    subs = _submissions(log)
    # make x2, flaky x2 (first attempt fails), summary x1; rule all runs locally
    assert len(subs) == 5, log[-4000:]
    for jobid, logfile in subs:
        assert logfile.is_file() and logfile.parent.is_relative_to(logdir), logfile
        assert logfile.name == f"{jobid}.log"
    by_rule = {}
    for jobid, logfile in subs:
        rule = next(p for p in logfile.relative_to(logdir).parts if p.startswith("rule_"))
        by_rule.setdefault(rule, []).append(jobid)
    assert {r: len(j) for r, j in by_rule.items()} == {"rule_make": 2, "rule_flaky": 2, "rule_summary": 1}

    jobs = _squeue([j for j, _ in subs])
    assert set(jobs) == {j for j, _ in subs}
    first, retry = by_rule["rule_flaky"]
    assert jobs[first]["state"] == "FAILED" and jobs[first]["time_limit"] == "10:00"
    assert jobs[retry]["state"] == "COMPLETED" and jobs[retry]["time_limit"] == "20:00"
    others = [j for j, _ in subs if j != first]
    assert all(jobs[j]["state"] == "COMPLETED" for j in others)
    assert all(jobs[j]["partition"] == partition for j in jobs)
    assert all(jobs[j]["name"].startswith("langskew_") for j in jobs)
    assert "first attempt fails" in Path(dict(subs)[first]).read_text()

    for rel in ["out/numbers_3.txt", "out/numbers_5.txt", "out/total.txt", "out/summary.json"]:
        assert _same_file(cluster_dir / rel, local_dir / rel), rel
    assert json.loads((cluster_dir / "out/summary.json").read_text()) == {"total": 21}


# --- the real workflow: early targets of the demo preset --------------------------------------
def _demo_dataset() -> str:
    import yaml

    demo = yaml.safe_load((WORKFLOW_DIR / "presets" / "demo.yaml").read_text())
    return demo["study_a"]["datasets"][0]


@pytest.mark.skipif(not RUN_DEMO_TARGETS, reason="demo-preset SLURM test turned off (LANGSKEW_SLURM_DEMO=0)")
@pytest.mark.parametrize("target", DEMO_TARGETS)
def test_demo_target_on_slurm_matches_local_run(slurm_cluster, tmp_path, monkeypatch, target):
    if not (WORKFLOW_DIR / "Snakefile").is_file() or not (WORKFLOW_DIR / "presets" / "demo.yaml").is_file():
        pytest.skip(f"no Snakefile / presets/demo.yaml in {WORKFLOW_DIR}")
    monkeypatch.delenv("SBATCH_ACCOUNT", raising=False)
    target = target.format(dataset=_demo_dataset())

    def run(name: str, extra: list[str]) -> tuple[Path, str]:
        out = tmp_path / name
        config = ["--configfile", "presets/demo.yaml", "--config", f"outdir={out}", f"checkpoint_dir={tmp_path / name}_ckpt"]
        proc = _snakemake([*extra, *config, "--", str(out / target)], WORKFLOW_DIR)
        return out, proc.stdout + proc.stderr

    cluster_out, log = run("cluster", _slurm_args(tmp_path / "slurm_logs"))
    local_out, _ = run("local", ["--cores", "1"])

    subs = _submissions(log)
    assert subs, log[-4000:]
    assert all(logfile.is_file() for _, logfile in subs)
    assert all(s["state"] == "COMPLETED" for s in _squeue([j for j, _ in subs]).values())
    # logs and benchmark files (timings) differ from run to run
    produced = sorted(p.relative_to(cluster_out) for p in cluster_out.rglob("*")
                      if p.is_file() and not {"logs", "benchmarks"} & set(p.parts))
    assert Path(target) in produced
    for rel in produced:
        assert _same_file(cluster_out / rel, local_out / rel), rel


# --- training at a time limit and after a requeue ---------------------------------------------
# The time-limit test: a Study B pretraining run of the demo under SLURM's smallest time limit, 1
# minute (runtime: 1 gives attempt k a limit of k minutes, rules/study_b_common.smk; checkpoints
# every 100 steps). slurmctld enforces limits on a 30 s cycle, so attempt 1 ends between 60 and 90 s
# after it started, and training must still be running then. A sleep before the first attempt's
# Snakemake (--precommand, run inside the SLURM job, so it counts against the limit) takes the first
# LIMIT_SLEEP_S seconds: training starts at about 40-50 s (start-up included, on an idle or a busy
# 2-core machine), and 2,200 steps (about 60 s on an idle 2-core CPU) are still running at 90 s.
# The retry does not sleep (a marker file left by the first attempt), so its 2 minutes hold the
# rest of the steps even on a busy machine, where the first attempt got through fewer of them.
# The behaviour tested is that of a longer run: SIGTERM at the limit, a checkpoint, TIMEOUT, the
# retry with twice the runtime resuming from the checkpoint; the sleep costs no CPU, the steps do.
# The requeue test has no time limit in its way: it requeues the shorter run that the resume
# tests share (conftest.SHORT_TRAINING) after its first checkpoint.
LIMIT_SLEEP_S = 35
LONG_TRAINING = """\
study_b:
  sizes:
    tiny:
      resources: {runtime: 1}
  train: {base_steps: 2200, checkpoint_every: 100, eval_every: 500}
"""


@pytest.fixture(scope="module")
def uninterrupted(slurm_cluster, short_training, tmp_path_factory):
    """The long run, locally and without interruption: the reference for the metrics. Its data
    steps are copies of the short reference's (the same demo data; only the training differs)."""
    base = tmp_path_factory.mktemp("uninterrupted")
    override = base / "override.yaml"
    override.write_text(LONG_TRAINING)
    copy_data_steps(short_training[0], base)
    args, target = pretrain_args(base, override)
    _snakemake(["--cores", "1", *args], ROOT, timeout=3 * TIMEOUT_S)  # about 1 min on an idle 2-core machine
    return base, override


def _run_folder(tmp_path: Path, reference: tuple[Path, Path]) -> tuple[list[str], Path, Path]:
    """A fresh output folder holding a copy of the reference's data steps (timestamps kept),
    so that only the pretraining job goes to SLURM."""
    ref_base, override = reference
    copy_data_steps(ref_base, tmp_path)
    args, target = pretrain_args(tmp_path, override)
    return args, target, tmp_path / "checkpoints" / "study_b" / PRETRAIN_RUN


def _assert_same_training(base: Path, reference: tuple[Path, Path]) -> dict:
    """Final metrics, loss curve and weights equal those of the uninterrupted run."""
    run = Path("results") / "study_b" / "runs" / PRETRAIN_RUN
    ref_dir, got_dir = reference[0] / run, base / run
    ref, got = (json.loads((d / "metrics.json").read_text()) for d in (ref_dir, got_dir))
    for key in ["final_train_loss", "final_val_loss", "tokens_seen", "steps", "n_params"]:
        assert got[key] == ref[key], key
    assert pd.read_csv(got_dir / "curve.csv").equals(pd.read_csv(ref_dir / "curve.csv"))
    assert (got_dir / "model" / "model.safetensors").read_bytes() == (ref_dir / "model" / "model.safetensors").read_bytes()
    return got


def _rule_log_path(base: Path) -> Path:
    return base / "results" / "logs" / "study_b" / "pretrain" / f"{PRETRAIN_RUN}.log"


def _rule_log(base: Path) -> str:
    return _rule_log_path(base).read_text()


def test_time_limit_resumes_on_the_retry_with_more_runtime(slurm_cluster, uninterrupted, tmp_path, monkeypatch):
    """Attempt 1 (1 minute) ends TIMEOUT after a SIGTERM checkpoint; the profile's retry gets
    2 minutes, resumes from the checkpoint and ends with the uninterrupted run's results."""
    monkeypatch.delenv("SBATCH_ACCOUNT", raising=False)
    args, target, ckpt = _run_folder(tmp_path, uninterrupted)
    marker = tmp_path / "first_attempt_started"  # the first attempt's SLURM job sleeps, the retry does not
    sleep_first = ["--precommand", f"test -e {marker} || {{ touch {marker}; sleep {LIMIT_SLEEP_S}; }}"]
    proc = _snakemake([*_slurm_args(tmp_path / "slurm_logs"), *sleep_first, *args], ROOT, timeout=3 * TIMEOUT_S)

    subs = _submissions(proc.stdout + proc.stderr)
    assert len(subs) >= 2, (proc.stdout + proc.stderr)[-4000:]  # only the pretraining job went to SLURM
    jobs = _squeue([j for j, _ in subs])
    states = [jobs[j]["state"] for j, _ in subs]
    limits = [jobs[j]["time_limit"] for j, _ in subs]
    assert states[0] == "TIMEOUT" and states[-1] == "COMPLETED", states
    assert limits[:2] == ["1:00", "2:00"], limits  # attempt 2 got twice the runtime
    first_log = subs[0][1].read_text()
    assert marker.exists() and "received signal SIGTERM" in first_log and "checkpoint saved at step" in first_log
    log = _rule_log(tmp_path)
    assert "resuming from checkpoint at step" in log
    got = _assert_same_training(tmp_path, uninterrupted)
    assert got["resumed_from_step"] > 0
    assert not ckpt.exists()  # removed once the final outputs were written


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.5):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"snakemake ended while waiting for {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def test_requeued_job_resumes_from_its_checkpoint(slurm_cluster, short_training, tmp_path, monkeypatch):
    """`scontrol requeue` of the running training job: SLURM signals it (checkpoint), puts the
    same job id back in the queue, and the restarted job resumes and finishes as uninterrupted."""
    monkeypatch.delenv("SBATCH_ACCOUNT", raising=False)
    args, target, ckpt = _run_folder(tmp_path, short_training)
    # runtime 10: no time limit in the way here
    override = tmp_path / "no_limit.yaml"
    override.write_text("study_b:\n  sizes:\n    tiny:\n      resources: {runtime: 10}\n")
    args.insert(args.index("--config"), str(override))
    out_file = tmp_path / "snakemake.out"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    with out_file.open("w") as out:
        smk = subprocess.Popen([sys.executable, "-m", "snakemake", *_slurm_args(tmp_path / "slurm_logs"), *args],
                               cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        jobid = _wait_for(lambda: next(iter(_submissions(out_file.read_text())), (None,))[0], 120, "the sbatch submission", smk)
        _wait_for(lambda: list(ckpt.glob("step-*.pt")), 300, "the first periodic checkpoint", smk)
        subprocess.run(["scontrol", "requeue", jobid], check=True)
        # SLURM holds a requeued job back for a while (BeginTime); let it start again at once
        _wait_for(lambda: _squeue([jobid])[jobid]["state"] == "PENDING", 60, "the requeued job to be pending", smk)
        # what the first run left, before the restart overwrites the SLURM log
        slurm_log = _submissions(out_file.read_text())[0][1]
        first_run = slurm_log.read_text() + (_rule_log(tmp_path) if _rule_log_path(tmp_path).exists() else "")
        subprocess.run(["scontrol", "update", f"JobId={jobid}", "StartTime=now"], check=True)
        smk.wait(timeout=3 * TIMEOUT_S)
    finally:
        if smk.poll() is None:
            smk.terminate()
            smk.wait(timeout=60)
    output = out_file.read_text()
    assert smk.returncode == 0, output[-6000:]
    assert [j for j, _ in _submissions(output)] == [jobid]  # the same SLURM job ran twice; no resubmission
    assert _squeue([jobid])[jobid]["state"] == "COMPLETED"
    assert "received signal SIGTERM" in first_run and "checkpoint saved at step" in first_run
    assert "resuming from checkpoint at step" in _rule_log(tmp_path)
    got = _assert_same_training(tmp_path, short_training)
    assert got["resumed_from_step"] > 0
