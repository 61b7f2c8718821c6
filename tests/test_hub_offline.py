"""Study A's hub datasets and `langskew diagnose HUB_ID` read offline from the hub cache alone
(a real cache layout, HF_HUB_OFFLINE=1, an empty datasets cache), and name what is not cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from hub_fixtures import hub_cache_repo, per_language_parquet_repo

from conftest import ROOT


def _frame(lang: str, n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({"premise": [f"{lang} premise {i}" for i in range(n)],
                         "hypothesis": [f"{lang} hypothesis {i}" for i in range(n)], "label": [0, 1, 2] * (n // 3)})


@pytest.fixture
def offline_cache(tmp_path):
    """A hub cache holding org/xnli-like (configs en, fr; train/validation/test) and the offline environment."""
    repo = per_language_parquet_repo(tmp_path / "repo", {lang: {s: _frame(lang) for s in ("train", "validation", "test")}
                                                         for lang in ("en", "fr")})
    hub_cache_repo(tmp_path / "hub", "org/xnli", repo)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "datasets"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return env


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=ROOT)


STUDY_A = """
import json
from langskew.study_a.dataset import load_dataset_frames
spec = {"source": "hub", "task": "pair", "languages": ["en", "fr"], "labels": ["e", "n", "c"],
        "hub": {"path": "org/xnli", "name": "{language}"},
        "columns": {"text": "premise", "text_pair": "hypothesis", "label": "label", "language": None}}
frames, meta = load_dataset_frames("xnli", spec)
print(json.dumps({s: [len(f), sorted(set(f["language"])), f["text"].iloc[-1]] for s, f in frames.items()}))
"""


def test_study_a_hub_dataset_reads_offline_from_the_hub_cache(offline_cache):
    proc = _run(STUDY_A, offline_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {s: [12, ["en", "fr"], "fr premise 5"] for s in ("train", "validation", "test")}


def test_a_repo_not_in_the_cache_is_named_offline(offline_cache):
    proc = _run(STUDY_A.replace("org/xnli", "org/absent"), offline_cache)
    assert proc.returncode != 0
    assert "'org/absent' is not in the local cache" in proc.stderr
    assert "load it once with network access" in proc.stderr
