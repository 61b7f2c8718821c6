# Two commands for a newcomer on a fresh machine:
#   make demo   installs into .venv and runs the offline demo (both studies, CPU, minutes)
#   make test   installs into .venv and runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13, installed before the package so that the build is chosen here. By default pip's
# configured indexes decide: PyPI's Linux x86_64 wheel is the CUDA build (several GB of CUDA
# libraries, runs on a CPU too), macOS gets the CPU/MPS build. For the small CPU wheel on a
# Linux machine without a GPU: make TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (docs/cluster.md, "Software environments").
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
CORES ?= all
TEST_WORKERS ?= auto

.PHONY: install demo test test-fast dryrun report clean-demo

install: $(VENV)/.installed

# torch comes from pip (its index and pip's own settings choose the build, see above); the package
# and its other dependencies from uv (INSTALLER=uv, the default: resolves and installs in parallel,
# the same versions as pip; uv reads UV_* settings, not pip's) or pip (make INSTALLER=pip). Neither
# compiles: compileall then writes the bytecode of the environment and of the package (src/, which
# an editable install leaves uncompiled) on every core, leaving out libraries' own test folders.
# (With PYTHONDONTWRITEBYTECODE set, as on many CI machines, nothing else ever writes it: every
# process would compile what it imports.) A file that does not compile (a library's Python 2 test
# data) is left as it is.
INSTALLER ?= uv
EXTRAS := .[torch,workflow,test,tensorboard]
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
ifeq ($(INSTALLER),uv)
	$(PY) -m pip install -q --no-compile uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e "$(EXTRAS)"
else
	$(PY) -m pip install -q --no-compile -e "$(EXTRAS)"
endif
	-$(PY) -m compileall -qq -j 0 -x '/tests?/' $(VENV) src
	touch $@

# Snakemake re-examines a queue of waiting jobs once per timespan of its job rate limit, and every
# finished job starts one more such cycle: with the default (100/1s) the demo's scheduling process
# spent 137 s of CPU on it. Set for local runs of many jobs only, not in profiles/default: Snakemake
# also waits up to one timespan before it exits, which in a SLURM job counts against its time limit
# (docs/CONVENTIONS.md, "Snakemake's scheduling process"). tests/conftest.py runs the demo with it.
DEMO_SCHEDULING := --max-jobs-per-timespan 100/5s

demo: install
	$(VENV)/bin/snakemake --cores $(CORES) --configfile presets/demo.yaml $(DEMO_SCHEDULING)

dryrun: install
	$(VENV)/bin/snakemake -n --quiet rules

report: install
	$(VENV)/bin/snakemake --configfile presets/demo.yaml --report report.html

test: install
	$(VENV)/bin/pytest -q --durations=15 tests

# unit tests in parallel processes (pytest-xdist, one per core); no demo, no SLURM
test-fast: install
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) -m "not slow and not slurm" tests

# Every GPU benchmark in one run (at most 8 minutes on one H100): benchmarks/results/<date>_<device>.{json,md}
.PHONY: gpu-suite
gpu-suite: install
	PYTHON=$(PY) bash benchmarks/gpu_suite.sh
