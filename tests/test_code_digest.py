"""A change in the package reruns the jobs whose code it changes: every rule's params carry
`code_digest` (langskew.digest), a digest of the package modules its script runs.

The digests are computed in copies of the package or of the whole workflow (tmp folders), edited
there, never in this checkout."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from test_workflow import job_counts

from langskew import digest

WORKFLOW_FILES = ["Snakefile", "config.yaml", "rules", "scripts", "schemas", "presets", "envs", "report", "src"]


def copy_package(dest: Path) -> Path:
    shutil.copytree(ROOT / "src" / "langskew", dest / "langskew", ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "langskew"


def digests(src: Path, modules: list[str]) -> dict[str, str]:
    """The digest of each module, computed from the package below `src` in a fresh process."""
    code = ("import json, sys\nfrom langskew import digest\n"
            "print(json.dumps({m: digest.digest([m]) for m in sys.argv[1:]}))")
    proc = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(src)})
    return json.loads(proc.stdout)


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_closure_follows_imports_inside_functions_and_stops_at_the_package():
    perplexity = digest.closure("langskew.study_b.perplexity")
    # model.load_run imports languages inside the function; the packages' __init__ files run too
    assert {"langskew", "langskew.study_b", "langskew.study_b.model", "langskew.study_b.languages",
            "langskew.devices", "langskew.workflow"} <= set(perplexity)
    assert "langskew.study_b.alignment" not in perplexity and "langskew.study_b.pretrain" not in perplexity
    assert "langskew.study_b.perplexity" not in digest.closure("langskew.study_b.alignment")
    # `from langskew import hub as hubio` reaches the module hub, not only the package
    assert "langskew.hub" in digest.closure("langskew.study_a.dataset")
    # relative imports (config.py: `from .errors import LangskewError`)
    assert "langskew.errors" in digest.closure("langskew.config")
    assert all(m == "langskew" or m.startswith("langskew.") for m in perplexity)


def test_script_digest_is_that_of_the_job_module():
    script = ROOT / "scripts" / "study_b_perplexity.py"
    assert digest.script_module(script) == "langskew.study_b.perplexity"
    assert digest.script_digest(script) == digest.digest(["langskew.workflow", "langskew.study_b.perplexity"])
    assert re.fullmatch(r"[0-9a-f]{12}", digest.script_digest(script))


def test_parsing_the_digests_imports_nothing_heavy():
    code = ("import sys, glob\nfrom langskew import digest\n"
            f"[digest.script_digest(s) for s in glob.glob({str(ROOT / 'scripts' / '*.py')!r})]\n"
            "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_code_edits_change_the_digests_of_the_modules_that_import_them(tmp_path):
    pkg = copy_package(tmp_path)
    modules = ["langskew.study_b.perplexity", "langskew.study_b.alignment", "langskew.study_b.pretrain",
               "langskew.study_a.finetune", "langskew.study_a.probe"]
    before = digests(tmp_path, modules)
    assert len(set(before.values())) == len(modules)

    append(pkg / "study_b" / "perplexity.py", "\nDEFAULT_WINDOW = 512\n")
    after = digests(tmp_path, modules)
    assert after["langskew.study_b.perplexity"] != before["langskew.study_b.perplexity"]
    assert {m: after[m] for m in modules[1:]} == {m: before[m] for m in modules[1:]}

    # a module imported inside a function (study_b.languages, by model.load_run) counts
    before = after
    append(pkg / "study_b" / "languages.py", "\nLANGUAGE_SEPARATOR = '_'\n")
    after = digests(tmp_path, modules)
    assert all(after[m] != before[m] for m in modules[:3])
    assert {m: after[m] for m in modules[3:]} == {m: before[m] for m in modules[3:]}

    # ... and one named in a parenthesised import over several lines (probe: `from ...inference import (`)
    before = after
    append(pkg / "study_a" / "inference.py", "\n# any edit counts, a comment too\n")
    after = digests(tmp_path, modules)
    assert after["langskew.study_a.probe"] != before["langskew.study_a.probe"]
    assert {m: after[m] for m in modules[:4]} == {m: before[m] for m in modules[:4]}


def _ast_imports(name: str) -> set[str]:
    """The package modules a module imports, read with Python's own parser (the oracle)."""
    path = digest.module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            origin = ".".join(base + ([node.module] if node.module else []))
            found |= {origin} | {f"{origin}.{a.name}" for a in node.names}
    return {".".join(f.split(".")[:i]) for f in found for i in range(1, f.count(".") + 2)
            if digest.module_file(".".join(f.split(".")[:i]))}


def test_the_import_scan_finds_what_pythons_parser_finds():
    root = ROOT / "src"
    for path in sorted((root / "langskew").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        assert digest._parsed(name)[1] == _ast_imports(name), name


def test_every_rule_with_a_script_carries_its_code_digest():
    from test_stage_names import script_rules

    for rule, script, params in script_rules("demo", str(ROOT / "unused_outdir")):
        assert "code_digest" in params, rule


# --- through Snakemake: a dry run after an edit lists the jobs the edit affects --------------
def run_snakemake(cwd: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=1800, env={**os.environ, "PYTHONPATH": str(cwd / "src")})
    if proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout + proc.stderr


def jobs_and_reasons(out: str) -> list[tuple[str, str]]:
    """(rule, reason) of every job a dry run lists."""
    return re.findall(r"^rule (\w+):\n(?:    .*\n)*?    reason: (.*)$", out, re.M)


@pytest.fixture(scope="module")
def finished_demo(tmp_path_factory):
    """A copy of the workflow whose demo is marked as done: every output created empty, then
    `snakemake --touch --forceall`, which records each job's params as a real run would."""
    d = tmp_path_factory.mktemp("digest")
    for name in WORKFLOW_FILES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, d / name)
    conf = ["--configfile", "presets/demo.yaml", "--config", f"outdir={d}/results", f"checkpoint_dir={d}/ckpt"]
    for line in run_snakemake(d, "-n", *conf).splitlines():
        if line.strip().startswith("output:"):
            for path in map(Path, (p.strip() for p in line.split("output:", 1)[1].split(","))):
                if not path.suffix:  # directory() outputs: the saved models (every file has a suffix)
                    path.mkdir(parents=True, exist_ok=True)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
    run_snakemake(d, "--touch", "--forceall", *conf)
    return d, conf


def test_editing_a_stage_module_reruns_its_jobs_and_what_reads_them(finished_demo):
    d, conf = finished_demo
    out = run_snakemake(d, "-n", *conf)  # the default rerun triggers (params among them)
    assert job_counts(out) == {}, out[-3000:]

    append(d / "src" / "langskew" / "study_b" / "perplexity.py", "\nDEFAULT_STRIDE = 128\n")
    out = run_snakemake(d, "-n", *conf)
    counts, reasons = job_counts(out), jobs_and_reasons(out)
    assert counts["study_b_perplexity"] == len(list((d / "results" / "study_b" / "runs").iterdir())), out[-3000:]
    for rule, reason in reasons:
        if rule == "study_b_perplexity":
            # the one param that changed is the digest (the only exclusive values, before and now)
            assert re.fullmatch(r"Params have changed since last execution: .* before: '[0-9a-f]{12}' "
                                r"now: '[0-9a-f]{12}'\s*", reason), reason
        else:  # the fits and the report read the perplexities; nothing else reruns
            assert reason == "Input files updated by another job: " + reason.split(": ", 1)[1], (rule, reason)
    assert set(counts) == {"study_b_perplexity", "study_b_fit", "study_b_report", "all"}, counts
