"""Right-sized jobs: what `snakemake -n --profile profiles/slurm` asks of the cluster for each
rule of the paper configuration, memory and runtime growing with the attempt, jobs of seconds
kept local, a benchmark file per job, and the local GPU profile running one GPU job at a time."""
import math
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from langskew.config import load_config
from langskew.study_b import grid

EXPECTED = {  # rule: (gpu, mem_mb, runtime) on attempt 1 (config.yaml)
    "study_a_finetune": ("1", "32000", "720"),
    "study_a_probe": ("1", "16000", "60"),
    "study_a_probe_base": ("1", "16000", "60"),
    "study_a_shap_values": ("1", "16000", "240"),
    "study_b_perplexity": ("1", "16000", "120"),  # a small or medium run's (the whole held-out split)
    "study_b_alignment": ("1", "16000", "30"),
    "study_a_dataset": (None, "16000", "120"),
    "study_a_subsets": (None, "16000", "120"),
    "study_b_corpus": (None, "16000", "240"),
}
LOCAL = {"study_a_diagnose", "study_a_diagnose_report", "study_a_evaluate", "study_a_shap_compare", "study_a_report",
         "study_a_training_curves", "study_b_training_curves", "study_b_fit", "study_b_report",
         "study_b_parallel_tokens", "prefetch"}


@pytest.fixture(scope="module")
def slurm_dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dry") / "r"
    # --sdm env-modules: the profile's conda needs `conda` even for a dry run; no rule names modules
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--profile", "profiles/slurm",
                           "--sdm", "env-modules", "--config", f"outdir={out}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    blocks = {}  # rule: every job's block, in the dry run's order (which is not fixed)
    for block in re.split(r"\n\n+", proc.stdout):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if m:
            blocks.setdefault(m[1], []).append(block)
    return out, blocks


@pytest.fixture(scope="module")
def run_sizes():
    """Study B run id -> model size, for the paper configuration's grid."""
    runs = grid.expand_runs(load_config(ROOT / "config.yaml")["study_b"])
    return {rid: run["size"] for rid, run in runs.items()}


def run_id(block):
    """The run wildcard of a Study B job's dry-run block."""
    return re.search(r"wildcards:.*\brun=([^,\s]+)", block)[1]


def resource(block, key):
    m = re.search(rf"resources:.*\b{key}=([^,\n]*)", block)
    return m[1] if m else None


def test_profile_dry_run_shows_each_rules_own_resources(slurm_dry_run, run_sizes):
    _, blocks = slurm_dry_run
    for rule, (gpu, mem, runtime) in EXPECTED.items():
        jobs = blocks[rule]
        if rule == "study_b_perplexity":  # the one rule whose attempt-1 runtime differs by job: mini's is 60
            mini = [b for b in jobs if run_sizes[run_id(b)] == "mini"]
            jobs = [b for b in jobs if run_sizes[run_id(b)] != "mini"]
            assert mini, "the paper grid has mini runs"
            assert {resource(b, "runtime") for b in mini} == {"60"}
        assert jobs, rule
        for block in jobs:
            got = (resource(block, "gpu"), resource(block, "mem_mb"), resource(block, "runtime"))
            assert got == (gpu, mem, runtime), (rule, block.splitlines()[1:3])
    pretrain = blocks["study_b_pretrain"]
    assert pretrain and {resource(b, "gpu") for b in pretrain} == {"1"}


def test_every_job_writes_a_benchmark_file(slurm_dry_run):
    out, blocks = slurm_dry_run
    assert set(blocks) >= set(EXPECTED) | (LOCAL - {"prefetch"})
    for rule, jobs in blocks.items():
        if rule == "all":  # the target rule runs nothing
            continue
        for block in jobs:
            m = re.search(r"benchmark: (\S+)", block)
            assert m and m[1].startswith(f"{out}/benchmarks/{rule}/") and m[1].endswith(".tsv"), rule


def test_jobs_of_seconds_are_local_rules():
    declared = set()
    for smk in (ROOT / "rules").glob("*.smk"):
        for body in re.findall(r"^localrules:\n((?:    \w+,\n)+)", smk.read_text(), re.M):
            declared |= set(re.findall(r"(\w+),", body))
    assert declared == LOCAL


def _helpers():
    """The resource helpers of rules/common.smk, as Snakemake defines them."""
    text = (ROOT / "rules" / "common.smk").read_text()
    code = text[text.index("def gpu_resources"):text.index("def benchmark_file")]
    space = {"math": math}
    exec(compile(code, "rules/common.smk", "exec"), space)
    return space


def test_memory_and_runtime_grow_with_the_attempt():
    h = _helpers()
    model = {"gpu": 1, "mem_mb": 32000, "runtime": 720, "probe": {"mem_mb": 16000, "runtime": 60}}
    gpu = h["gpu_resources"](lambda w: model, mem_mb=8000, runtime=30, stage="probe")
    assert [gpu["mem_mb"](None, attempt=a) for a in (1, 2, 3)] == [16000, 32000, 48000]
    assert [gpu["runtime"](None, attempt=a) for a in (1, 2, 3)] == [60, 120, 180]
    train = h["gpu_resources"](lambda w: model, mem_mb=8000, runtime=30, scale=lambda w: 2.5)
    assert (train["mem_mb"](None, attempt=2), train["runtime"](None, attempt=2)) == (64000, 3600)  # 720 x 2.5 x 2
    bare = h["gpu_resources"](lambda w: {}, mem_mb=8000, runtime=30, stage="shap")  # defaults of the rule
    assert (bare["gpu"](None), bare["mem_mb"](None, attempt=3), bare["runtime"](None, attempt=1)) == (1, 24000, 30)
    cpu = h["cpu_resources"]({"mem_mb": 2000, "runtime": 20})
    assert (cpu["mem_mb"](None, attempt=3), cpu["runtime"](None, attempt=3)) == (6000, 60)


GPU_SNAKEFILE = """
rule all:
    input: expand("out/{i}.txt", i=[1, 2])

rule gpu_job:
    output: "out/{i}.txt"
    resources: gpu=1
    shell: "date +%s.%N > {output}; sleep 3; date +%s.%N >> {output}"
"""


def _intervals(folder):
    return sorted(tuple(float(x) for x in (folder / f"out/{i}.txt").read_text().split()) for i in (1, 2))


def test_local_gpu_profile_runs_one_gpu_job_at_a_time(tmp_path):
    runs = {}
    for name, args in [("profile", ["--profile", str(ROOT / "profiles" / "local-gpu")]), ("cores", ["--cores", "2"])]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "Snakefile").write_text(GPU_SNAKEFILE)
        proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=folder, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = _intervals(folder)
    (a0, a1), (b0, b1) = runs["profile"]
    assert b0 >= a1  # the second GPU job started after the first ended
    (c0, c1), (d0, d1) = runs["cores"]
    assert d0 < c1  # without the profile's limit the two share the card


def test_every_rule_declares_a_benchmark():
    for smk in (ROOT / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule \w+:)", smk.read_text())[1:]:
            rule = re.match(r"rule (\w+):", block)[1]
            assert re.search(rf'    benchmark:\n        benchmark_file\(\s*"{rule}",', block), rule
