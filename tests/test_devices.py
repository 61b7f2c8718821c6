"""Fail fast: a job whose rule asks for a GPU and finds no usable CUDA device stops before any
work, naming the torch build; `gpu: 0` runs on the CPU; every job's log starts with one line
naming the package, torch and the device. CUDA's absence and presence are simulated."""
import importlib.metadata
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from snakemake.iocontainers import Namedlist

import langskew
from langskew import devices
from langskew.errors import LangskewError
from langskew.workflow import run


@pytest.fixture(autouse=True)
def _reset(monkeypatch):
    monkeypatch.setattr(devices, "_WANTED_GPUS", None)
    yield
    logging.getLogger().handlers.clear()


def simulate(monkeypatch, *, cuda_build, devices_visible, version):
    """torch as a CPU build (cuda_build None) or a CUDA build seeing `devices_visible` GPUs."""
    monkeypatch.setattr(torch, "__version__", version)
    monkeypatch.setattr(torch.version, "cuda", cuda_build)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: devices_visible > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices_visible)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Simulated GPU")


def fake_smk(tmp_path, resources):
    log = tmp_path / "job.log"
    return SimpleNamespace(log=Namedlist([str(log)]), rule="study_x_stage", params=Namedlist(fromdict={"n": 3}),
                           input=Namedlist(), output=Namedlist(), threads=1, wildcards=Namedlist(),
                           resources=Namedlist(fromdict=resources), config={}), log


def recording_job():
    calls = []

    def stage_job(job, *, n):
        calls.append((n, devices.pick_device()))

    return stage_job, calls


def test_gpu_job_with_a_cpu_build_stops_before_any_work(tmp_path, monkeypatch):
    simulate(monkeypatch, cuda_build=None, devices_visible=0, version="2.13.0+cpu")
    smk, log = fake_smk(tmp_path, {"gpu": 1, "mem_mb": 1000})
    func, calls = recording_job()
    with pytest.raises(LangskewError) as err:
        run(smk, func)
    msg = str(err.value)
    assert "torch 2.13.0+cpu is a CPU build" in msg and "torch.version.cuda is None" in msg
    assert "CONDA_OVERRIDE_CUDA" in msg and "pytorch=*=cuda*" in msg and "gpu: 0" in msg
    assert calls == []  # the job function never ran
    first = log.read_text().splitlines()[0]
    assert "torch 2.13.0+cpu (CPU build)" in first and "1 GPU(s) wanted, no usable CUDA device" in first


def test_gpu_job_with_a_cuda_build_but_no_device_stops(tmp_path, monkeypatch):
    simulate(monkeypatch, cuda_build="12.6", devices_visible=0, version="2.13.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    smk, _ = fake_smk(tmp_path, {"gpu": 1})
    func, calls = recording_job()
    with pytest.raises(LangskewError, match=r"CUDA 12\.6 build\) sees 0 usable CUDA device.*CUDA_VISIBLE_DEVICES=''"):
        run(smk, func)
    assert calls == []


def test_two_gpus_wanted_one_visible_stops(tmp_path, monkeypatch):
    simulate(monkeypatch, cuda_build="12.6", devices_visible=1, version="2.13.0")
    smk, _ = fake_smk(tmp_path, {"gpu": 2})
    func, calls = recording_job()
    with pytest.raises(LangskewError, match=r"asks for 2 GPU\(s\).*sees 1 usable"):
        run(smk, func)
    assert calls == []


def test_gpu_job_with_cuda_runs_on_the_gpu(tmp_path, monkeypatch):
    simulate(monkeypatch, cuda_build="12.6", devices_visible=1, version="2.13.0")
    smk, log = fake_smk(tmp_path, {"gpu": 1})
    func, calls = recording_job()
    run(smk, func)
    assert calls == [(3, torch.device("cuda"))]
    first = log.read_text().splitlines()[0]
    where = Path(langskew.__file__).resolve().parent
    assert f"langskew {importlib.metadata.version('langskew')} at {where};" in first
    assert "torch 2.13.0 (CUDA 12.6 build)" in first and "device cuda (1 visible: Simulated GPU)" in first


def test_gpu_0_asks_for_the_cpu_even_where_cuda_is_available(tmp_path, monkeypatch):
    simulate(monkeypatch, cuda_build="12.6", devices_visible=1, version="2.13.0")
    smk, log = fake_smk(tmp_path, {"gpu": 0})
    func, calls = recording_job()
    run(smk, func)
    assert calls == [(3, torch.device("cpu"))]
    assert "device cpu (gpu: 0 in the config)" in log.read_text().splitlines()[0]


def test_cpu_rule_without_gpu_resource_is_not_checked(tmp_path, monkeypatch):
    simulate(monkeypatch, cuda_build=None, devices_visible=0, version="2.13.0+cpu")
    smk, log = fake_smk(tmp_path, {"mem_mb": 1000, "runtime": 10})
    func, calls = recording_job()
    run(smk, func)
    assert calls == [(3, torch.device("cpu"))]
    first = log.read_text().splitlines()[0]
    assert first.split(" INFO langskew: ")[1].startswith("langskew ") and "; torch " in first


def test_environment_line_without_torch(monkeypatch):
    """The data environment has no torch: the line says so instead of importing it."""
    import sys

    monkeypatch.delitem(sys.modules, "torch")
    real = importlib.metadata.version

    def version(name):
        if name == "torch":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    line = devices.environment_line(None)
    assert "torch not installed" in line and line.endswith("device cpu")
    assert "torch" not in sys.modules


def test_package_from_another_checkout_stops(tmp_path, monkeypatch):
    """A conda prefix shared by two checkouts gives the second one the first one's editable
    install: the job stops, naming both, instead of running the other checkout's code."""
    other = tmp_path / "other_checkout"
    (other / "scripts").mkdir(parents=True)
    (other / "src" / "langskew").mkdir(parents=True)
    (other / "src" / "langskew" / "__init__.py").write_text("")
    smk, _ = fake_smk(tmp_path, {"mem_mb": 100})
    smk.scriptdir = str(other / "scripts")
    func, calls = recording_job()
    with pytest.raises(LangskewError, match="another checkout") as err:
        run(smk, func)
    assert str(Path(langskew.__file__).resolve().parent) in str(err.value) and str(other / "src") in str(err.value)
    assert calls == []
    smk.scriptdir = str(Path(langskew.__file__).resolve().parents[2] / "scripts")  # this checkout
    run(smk, func)
    assert len(calls) == 1
