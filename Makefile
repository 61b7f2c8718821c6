# Two commands for a newcomer on a fresh machine:
#   make demo   installs into .venv and runs the offline demo (both studies, CPU, minutes)
#   make test   installs into .venv and runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13, installed before the package so that the build is chosen here: PyPI's Linux
# x86_64 wheel is the CUDA build (several GB of CUDA libraries), the CPU wheel (2.13.0+cpu)
# comes from the PyTorch CPU index. On Linux without an NVIDIA driver (no nvidia-smi) make
# takes the CPU wheel; with one, PyPI's CUDA build; elsewhere (macOS) PyPI's wheel, which is
# the CPU/MPS build. Override: make TORCH_INDEX=https://download.pytorch.org/whl/cu126, or
# TORCH_INDEX= for PyPI. docs/cluster.md, "Software environments".
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_INDEX ?= $(if $(filter Linux,$(shell uname -s)),$(if $(shell command -v nvidia-smi 2>/dev/null),,$(TORCH_CPU_INDEX)))
CORES ?= all

.PHONY: install demo test test-fast dryrun report clean-demo

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[torch,workflow,test,tensorboard]"
	touch $@

demo: install
	$(VENV)/bin/snakemake --cores $(CORES) --configfile presets/demo.yaml

dryrun: install
	$(VENV)/bin/snakemake -n --quiet rules

report: install
	$(VENV)/bin/snakemake --configfile presets/demo.yaml --report report.html

test: install
	$(VENV)/bin/pytest -q tests

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow and not slurm" tests
