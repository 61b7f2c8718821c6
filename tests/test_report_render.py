"""`snakemake --report` renders the demo's report with what the `workflow` extra installs."""
import re
import tomllib
from importlib import metadata

import pytest

from conftest import ROOT


def _requirement_names(reqs: list[str]) -> list[str]:
    return [re.split(r"[<>=~!; ]", r, maxsplit=1)[0].lower() for r in reqs]


def test_workflow_extra_brings_what_the_report_needs():
    """The workflow extra asks for snakemake[reports]; that extra is where pygments comes from."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    workflow = _requirement_names(extras["workflow"])
    assert "snakemake[reports]" in workflow
    reports_extra = [r for r in metadata.requires("snakemake") or [] if 'extra == "reports"' in r]
    assert "pygments" in _requirement_names(reports_extra)
    core = [r for r in metadata.requires("snakemake") or [] if "extra ==" not in r]
    assert "pygments" not in _requirement_names(core)  # not a core dependency: the extra is needed


def test_python_and_plugin_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    plugin = next(r for r in project["optional-dependencies"]["workflow"] if r.startswith("snakemake-executor-plugin-slurm"))
    assert plugin == "snakemake-executor-plugin-slurm>=2.8,<3"
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")


@pytest.mark.slow
def test_demo_report_renders(demo, demo_report):
    base, _ = demo  # the demo's outputs and its `snakemake --report` (one run shared with tests/test_workflow.py)
    html = demo_report.read_text()
    assert len(html) > 100_000
    # every file marked for the report is in it, the training curves of both studies included
    for name in ["training_curves.png", "accuracy.png", "perplexity_vs_p.png", "subset_counts.csv",
                 "differences.png"]:
        assert name in html, name
    for png in (base / "results" / "report").rglob("training_curves.png"):
        assert png.stat().st_size > 10_000
    assert sorted(p.parent.name for p in (base / "results" / "report").rglob("training_curves.png")) == \
        ["study_a", "study_b"]
