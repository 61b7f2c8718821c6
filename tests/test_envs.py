"""The rule environments are what they say: every conda and pip entry pinned exactly, the pins
satisfy the package's dependencies (so pip, installing the package last, adds nothing), and
the data environment holds no deep-learning framework: its package line installs the base
dependencies only, which name none, and every job of a rule using it imports without one."""
import re
import subprocess
import sys
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

DL_FRAMEWORKS = {"torch", "pytorch", "pytorch-gpu", "transformers", "shap", "safetensors", "accelerate",
                 "tensorflow", "jax"}
CONDA_TO_PIP = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
PACKAGE_LINE = re.compile(r"-e \$\{LANGSKEW_SOURCE\}(\[(?P<extras>[a-z,]+)\])?")


def read_env(name):
    """({pip name: pinned version} of the conda entries and of the pinned pip entries, [pip entries])."""
    deps = yaml.safe_load((ROOT / "envs" / name).read_text())["dependencies"]
    conda, pip = {}, []
    for d in deps:
        if isinstance(d, dict):
            pip += d["pip"]
            for entry in d["pip"]:  # a package only PyPI has, pinned with == (package_extras checks)
                if "==" in entry:
                    name, version = entry.split("==")
                    conda[canonicalize_name(name)] = version
            continue
        m = re.fullmatch(r"([a-z0-9_.-]+)=(\d+(?:\.\d+)+)", d)  # name=x.y[.z]: exact, no wildcard
        assert m, f"envs/{name}: {d!r} is not pinned to an exact version"
        conda[CONDA_TO_PIP.get(m[1], m[1])] = m[2]
    return conda, pip


def pyproject():
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]


def package_extras(pip, env):
    """The extras of the env's package line; every other pip entry must be pinned with ==."""
    lines = [p for p in pip if PACKAGE_LINE.fullmatch(p)]
    assert len(lines) == 1, f"envs/{env}: one package line expected, got {pip}"
    for p in pip:
        if p not in lines:
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.+]*", p), f"envs/{env}: pip entry {p!r} not pinned"
    extras = PACKAGE_LINE.fullmatch(lines[0])["extras"]
    return extras.split(",") if extras else []


def requirements(extras):
    project = pyproject()
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def assert_pins_satisfy(conda, reqs, env):
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in conda, f"envs/{env} lacks {req.name} (pyproject: {req}); pip would install it unpinned"
        assert req.specifier.contains(conda[name], prereleases=True), \
            f"envs/{env}: {name}={conda[name]} does not satisfy {req}; pip would replace it"


def test_every_entry_is_pinned_and_python_is_exact():
    for env in ["data.yaml", "torch.yaml"]:
        conda, pip = read_env(env)
        assert re.fullmatch(r"3\.\d+\.\d+", conda["python"]), env
        assert "pip" in conda, f"envs/{env}: pin pip itself"
        package_extras(pip, env)


def test_data_env_installs_no_deep_learning_framework():
    conda, pip = read_env("data.yaml")
    extras = package_extras(pip, "data.yaml")
    reqs = requirements(extras)
    assert not DL_FRAMEWORKS & set(conda), DL_FRAMEWORKS & set(conda)
    assert not DL_FRAMEWORKS & {canonicalize_name(r.name) for r in reqs}, \
        f"the data env's package line (extras {extras}) pulls a deep-learning framework"
    assert_pins_satisfy(conda, reqs, "data.yaml")


def test_torch_env_pins_satisfy_the_torch_extra():
    conda, pip = read_env("torch.yaml")
    extras = package_extras(pip, "torch.yaml")
    assert "torch" in extras
    assert_pins_satisfy(conda, requirements(extras), "torch.yaml")
    data, _ = read_env("data.yaml")
    assert {p: data[p] for p in data} == {p: conda[p] for p in data}  # one resolution for both


def test_torch_extra_holds_the_frameworks_and_the_base_does_not():
    project = pyproject()
    base = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    extra = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["torch"]}
    assert not base & DL_FRAMEWORKS
    assert {"torch", "transformers", "shap", "safetensors"} <= extra


def rule_modules(env):
    """The job modules of the rules whose conda env is `env` (rule -> script -> module)."""
    modules = set()
    for smk in (ROOT / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule \w+:)", smk.read_text()):
            if f'"../envs/{env}"' not in block:
                continue
            script = re.search(r'script_path\("(\w+)"\)', block)[1]
            text = (ROOT / "scripts" / f"{script}.py").read_text()
            modules.add(re.search(r"^from (langskew[\w.]*) import \w+_job", text, re.M)[1])
    return sorted(modules)


BLOCKER = """
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("no " + name + " in the data environment")
sys.meta_path.insert(0, Block())
for m in {modules!r}:
    importlib.import_module(m)
importlib.import_module("langskew.workflow")
"""


def test_data_rules_import_without_a_deep_learning_framework():
    modules = rule_modules("data.yaml")
    assert "langskew.study_b.fit" in modules and "langskew.study_a.diagnose" in modules
    code = BLOCKER.format(blocked={"torch", "transformers", "shap", "safetensors"}, modules=modules)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
