import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Never reach for the network: hub code paths run against local folders only.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The demo runs with the environment a user's `make demo` has; the tests themselves (and the
# processes they start) use one OpenMP / BLAS thread: their models are tiny, and beside the demo's
# two jobs a second thread per process only spins.
DEMO_ENV = dict(os.environ)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


class BackgroundDemo:
    """The whole offline demo (both studies), started in the background as soon as the session
    knows that a selected test needs it, so that the other tests (the SLURM ones, whose jobs
    spend much of their time waiting on the scheduler, among them) run while it trains. The
    tests that read its outputs run last and wait for it (`demo` fixture)."""

    TIMEOUT_S = 3000
    SCHEDULING = ["--max-jobs-per-timespan", "100/5s"]  # as `make demo` runs it (Makefile, DEMO_SCHEDULING)

    def __init__(self, base: Path):
        self.base = base
        self.conf = ["--configfile", "presets/demo.yaml", "--config", f"outdir={base}/results",
                     f"checkpoint_dir={base}/checkpoints"]
        self.log = base / "snakemake.log"
        self.html, self.report_log = base / "report.html", base / "report.log"
        self.report_proc: subprocess.Popen | None = None
        self.started = time.monotonic()
        with self.log.open("w") as out:
            command = [sys.executable, "-m", "snakemake", "--cores", "2", *self.SCHEDULING, *self.conf]
            self.proc = subprocess.Popen(command, cwd=ROOT, env=DEMO_ENV, stdout=out, stderr=subprocess.STDOUT,
                                         text=True, start_new_session=True)

    def wait(self) -> tuple[Path, list[str]]:
        left = self.TIMEOUT_S - (time.monotonic() - self.started)
        try:
            code = self.proc.wait(timeout=max(left, 1))
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the demo did not finish within {self.TIMEOUT_S} s:\n{self._tail()}")
        if code != 0:
            raise AssertionError(f"the demo failed (exit {code}):\n{self._tail()}")
        self._start_report()
        return self.base, self.conf

    def _start_report(self) -> None:
        """Render `snakemake --report` in the background as soon as the demo has finished, while
        the dry-run tests read the same outputs (neither takes Snakemake's lock)."""
        if self.report_proc is None:
            with self.report_log.open("w") as out:
                self.report_proc = subprocess.Popen(
                    [sys.executable, "-m", "snakemake", "--report", str(self.html), *self.conf], cwd=ROOT,
                    env=DEMO_ENV, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def report(self) -> Path:
        """The demo's HTML report (`snakemake --report`), rendered once."""
        self.wait()
        code = self.report_proc.wait(timeout=900)
        if code != 0:
            raise AssertionError(f"snakemake --report failed (exit {code}):\n"
                                 f"{self.report_log.read_text(errors='replace')[-8000:]}")
        return self.html

    def stop(self) -> None:
        """Stop the demo, its report and their jobs: pytest ended before the tests that read them
        ran (for instance under -x)."""
        for proc in (self.proc, self.report_proc):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-8000:]


_BACKGROUND: dict[str, BackgroundDemo] = {}


def _whole_suite(config) -> bool:
    """Whether the run selects every test (`make test`, CI): the tests folder, no -m / -k, one process."""
    opt = config.option
    if opt.markexpr or opt.keyword or opt.collectonly or getattr(opt, "numprocesses", None) \
            or os.environ.get("PYTEST_XDIST_WORKER"):
        return False
    here = Path(__file__).resolve().parent
    return all(Path(arg).resolve() == here for arg in config.args)


def pytest_sessionstart(session):
    """The whole suite needs the demo: start it before collection (about ten seconds on two cores)."""
    if _whole_suite(session.config):
        _BACKGROUND["demo"] = BackgroundDemo(session.config._tmp_path_factory.mktemp("demo"))


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected: `make test-fast` starts no demo
def pytest_collection_modifyitems(session, config, items):
    """Tests that read the demo's outputs go last; the demo itself starts now, in the background
    (unless the session started it already)."""
    needs_demo = [item for item in items if "demo" in getattr(item, "fixturenames", ())]
    if not needs_demo or config.option.collectonly:
        if "demo" in _BACKGROUND:  # started for the whole suite, but nothing selected needs it
            _BACKGROUND.pop("demo").stop()
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every xdist worker collects every test: the fixture starts
        return                                 # the demo in the worker that first needs it
    items[:] = [item for item in items if "demo" not in getattr(item, "fixturenames", ())] + needs_demo
    if "demo" not in _BACKGROUND:
        _BACKGROUND["demo"] = BackgroundDemo(config._tmp_path_factory.mktemp("demo"))


def pytest_sessionfinish(session, exitstatus):
    if "demo" in _BACKGROUND:
        _BACKGROUND.pop("demo").stop()


@pytest.fixture(scope="session")
def demo(request):
    """The whole offline demo, run once into a temporary output folder; every test that needs the
    demo's outputs shares this one run. Returns (folder, config args)."""
    run = _BACKGROUND.get("demo")
    if run is None:  # under pytest-xdist the collection hook starts none: start it here
        run = _BACKGROUND["demo"] = BackgroundDemo(request.config._tmp_path_factory.mktemp("demo"))
    return run.wait()


@pytest.fixture(scope="session")
def demo_report(demo) -> Path:
    """The demo's HTML report, rendered once in the background when the demo ends."""
    return _BACKGROUND["demo"].report()


# A demo pretraining run made longer than the demo's 200 steps so that a kill or a requeue lands
# mid-run, with frequent checkpoints: shared by the resume tests (tests/test_resume_workflow.py)
# and the SLURM requeue test (tests/test_slurm.py).
PRETRAIN_RUN = "tiny-1x-clone2-p0.50"
# 300 steps, a checkpoint every 60: the resume and requeue tests stop the run at its first checkpoint
# (step 60), which leaves 240 steps (about 7 s on an idle 2-core CPU) for the signal to land mid-run.
SHORT_TRAINING = "study_b:\n  train: {base_steps: 300, checkpoint_every: 60, eval_every: 200}\n"
PRETRAIN_DATA_STEPS = ["study_b/corpus", "study_b/tokenizer", "study_b/tokens"]  # shared by the runs


def pretrain_args(base: Path, *overrides: Path) -> tuple[list[str], Path]:
    """Snakemake arguments (after `snakemake`) that build PRETRAIN_RUN's metrics under ``base``."""
    target = base / "results" / "study_b" / "runs" / PRETRAIN_RUN / "metrics.json"
    return ["--configfile", "presets/demo.yaml", *map(str, overrides), "--config", f"outdir={base}/results",
            f"checkpoint_dir={base}/checkpoints", "--", str(target)], target


def copy_data_steps(reference_base: Path, base: Path) -> None:
    """Copy a finished run's data steps (timestamps kept) so that only the pretraining job runs."""
    for rel in PRETRAIN_DATA_STEPS:
        shutil.copytree(reference_base / "results" / rel, base / "results" / rel)


@pytest.fixture(scope="session")
def short_training(tmp_path_factory) -> tuple[Path, Path]:
    """SHORT_TRAINING run locally, uninterrupted: the reference of the resume and requeue tests.
    Returns (folder, the overlay file)."""
    base = tmp_path_factory.mktemp("short_training")
    override = base / "override.yaml"
    override.write_text(SHORT_TRAINING)
    run_pretrain(base, override)
    return base, override


def run_pretrain(base: Path, *overrides: Path) -> dict:
    """Build PRETRAIN_RUN under ``base`` locally (one core); returns its metrics."""
    args, target = pretrain_args(base, *overrides)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(target.read_text())


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
