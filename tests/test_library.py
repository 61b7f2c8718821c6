"""langskew's library (diagnosis, weights, mitigation) sits at the package's top: it imports
nothing from the studies, and importing it imports no torch until a torch object is used."""

from __future__ import annotations

import subprocess
import sys

import pytest

from langskew.digest import closure

LIBRARY = ("langskew", "langskew.diagnosis", "langskew.weights", "langskew.mitigation", "langskew.langid")


@pytest.mark.parametrize("module", LIBRARY)
def test_library_imports_nothing_from_the_studies(module):
    reached = closure(module)  # every package module it imports, directly or not
    assert module in reached
    upward = [m for m in reached if m.startswith(("langskew.study_a", "langskew.study_b"))]
    assert upward == [], f"{module} imports {upward}"


def test_study_a_jobs_import_the_library():
    assert "langskew.diagnosis" in closure("langskew.study_a.diagnose")
    assert "langskew.weights" in closure("langskew.study_a.subsets")
    assert {"langskew.weights", "langskew.mitigation"} <= set(closure("langskew.study_a.finetune"))


def _modules_after(code: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(proc.stdout.split())


def test_importing_the_library_imports_no_torch():
    modules = _modules_after("import langskew, langskew.diagnosis, langskew.weights, pandas\n"
                             "from langskew import class_weights, diagnose\n"
                             "class_weights([0, 1], ['en', 'en'], 2, 'per_language')\n"
                             "frame = pandas.DataFrame({'text': ['The parcel came late.', 'Le colis est arrivé.'] * 20,"
                             " 'label': ['a', 'b'] * 20})\n"
                             "assert diagnose(frame).verdict == 'strong'")
    assert "langskew.diagnosis" in modules and "langskew.weights" in modules
    assert "torch" not in modules and "transformers" not in modules


def test_a_torch_object_imports_torch_on_first_use():
    modules = _modules_after("import langskew\nlangskew.MitigationLoss")
    assert "torch" in modules and "langskew.mitigation" in modules


def test_unknown_name_is_an_attribute_error():
    import langskew

    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        langskew.nothing_here
