#!/usr/bin/env bash
# Every GPU benchmark in one run, at most 8 minutes on one H100 (budget: benchmarks/gpu_suite.py).
# Writes benchmarks/results/<date>_<device>.{json,md}; extra arguments go to gpu_suite.py
# (--cpu: the tiny CPU smoke run of the same code).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
exec timeout -k 15 480 "$PY" benchmarks/gpu_suite.py "$@"
