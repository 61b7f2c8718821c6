"""One name per stage: rule `study_x_<stage>` -> scripts/study_x_<stage>.py -> the function
`<stage>_job` of langskew.study_x.<stage> (or of the stage family's module listed in FAMILY),
whose keyword arguments are exactly the rule's params."""
import ast
import importlib
from functools import lru_cache
from pathlib import Path

import pytest

from conftest import ROOT
from langskew.workflow import check_params

CONFIGS = {"paper": ROOT / "config.yaml", "demo": ROOT / "presets" / "demo.yaml"}
STUDIES = ("study_a_", "study_b_")
# Stages whose function lives in their family's module rather than in a module of their own name.
FAMILY = {
    "study_a_diagnose_report": "langskew.study_a.diagnose",
    "study_a_probe_base": "langskew.study_a.probe",
    "study_a_tiny_model": "langskew.study_a.modeling",
    "study_a_training_curves": "langskew.curves",
    "study_b_parallel_corpus": "langskew.study_b.corpus",
    "study_b_tokens": "langskew.study_b.tokenizer",
    "study_b_parallel_tokens": "langskew.study_b.tokenizer",
    "study_b_training_curves": "langskew.curves",
}


@lru_cache(maxsize=None)
def script_rules(config: str, outdir: str) -> tuple:
    """(rule name, script path, param names) of every rule with a `script:` directive."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=1),
                                config_settings=ConfigSettings(configfiles=[CONFIGS[config]],
                                                               config={"outdir": outdir}),
                                storage_settings=StorageSettings(), snakefile=ROOT / "Snakefile", workdir=ROOT)
        return tuple((r.name, (ROOT / "rules" / r.script).resolve(), tuple(r.params._names))
                     for r in workflow._workflow.rules if r.script)


@pytest.fixture(params=sorted(CONFIGS))
def rules(request, tmp_path_factory):
    found = script_rules(request.param, str(tmp_path_factory.getbasetemp() / "unused_outdir"))
    assert found, "no rule with a script"
    return found


def stage(rule: str) -> str:
    return rule[len("study_a_"):] if rule.startswith(STUDIES) else rule


def expected_module(rule: str) -> str:
    if rule in FAMILY:
        return FAMILY[rule]
    study = rule[:len("study_a")] if rule.startswith(STUDIES) else None
    return f"langskew.{study}.{stage(rule)}" if study else f"langskew.{rule}"


def script_call(path: Path) -> tuple[str, str]:
    """(module, function) of a three-line script: import run and the job, run(snakemake, job)."""
    body = ast.parse(path.read_text()).body
    assert len(body) == 3, f"{path.name}: {len(body)} statements, not three"
    first, second, call = body
    assert isinstance(first, ast.ImportFrom) and first.module == "langskew.workflow"
    assert [a.name for a in first.names] == ["run"], path.name
    assert isinstance(second, ast.ImportFrom) and len(second.names) == 1, path.name
    func = second.names[0].name
    assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call), path.name
    args = [a.id for a in call.value.args if isinstance(a, ast.Name)]
    assert call.value.func.id == "run" and args == ["snakemake", func], f"{path.name}: not run(snakemake, {func})"
    return second.module, func


def test_every_study_rule_is_prefixed(rules):
    for rule, _, _ in rules:
        assert rule.startswith(STUDIES) or rule == "prefetch", rule


def test_script_is_named_after_its_rule(rules):
    for rule, script, _ in rules:
        assert script.name == f"{rule}.py", f"rule {rule} runs {script.name}"
        assert script.parent == ROOT / "scripts" and script.is_file(), script


def test_script_calls_the_stage_job_of_the_stage_module(rules):
    for rule, script, _ in rules:
        module, func = script_call(script)
        assert func == f"{stage(rule)}_job", f"{script.name} calls {func}"
        assert module == expected_module(rule), f"{script.name} imports {module}"


def test_job_function_takes_exactly_the_rule_params(rules):
    for rule, script, params in rules:
        module, func = script_call(script)
        job = getattr(importlib.import_module(module), func, None)
        assert callable(job), f"{module}.{func} does not exist"
        check_params(job, dict.fromkeys(params), rule)


def test_every_script_belongs_to_a_rule(rules):
    used = {script.name for _, script, _ in rules}
    assert {p.name for p in (ROOT / "scripts").glob("*.py")} <= used
