"""docs/mitigation.md: its Python blocks run as they are (the data/model block, the plain loop, the Trainer)."""

import importlib.util
import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "mitigation.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_doc_has_the_three_examples():
    code = blocks()
    assert len(code) == 3
    assert "MitigationLoss(" in code[0] and "loss_fn(model, batch)" in code[1] and "MitigationTrainer(" in code[2]


def test_plain_loop_example_runs(capsys):
    namespace: dict = {}
    code = blocks()
    exec(compile(code[0], f"{DOC}:block1", "exec"), namespace)
    before = {k: v.detach().clone() for k, v in namespace["model"].state_dict().items()}
    head_before = namespace["loss_fn"].adversary.head.weight.detach().clone()
    exec(compile(code[1], f"{DOC}:block2", "exec"), namespace)
    out = capsys.readouterr().out
    assert "'en': array([0.66666667, 2.        ])" in out and "eval loss" in out
    model = namespace["model"]
    assert any(not v.equal(before[k]) for k, v in model.state_dict().items())  # the encoder trained
    assert not namespace["loss_fn"].adversary.head.weight.equal(head_before)  # and the adversary's head


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None,
                    reason="transformers' Trainer needs accelerate, which this environment lacks")
def test_trainer_example_runs(capsys):
    namespace: dict = {}
    code = blocks()
    exec(compile(code[0], f"{DOC}:block1", "exec"), namespace)
    head_before = namespace["loss_fn"].adversary.head.weight.detach().clone()
    namespace["collate"] = __import__("transformers").DataCollatorWithPadding(namespace["tokenizer"])
    exec(compile(code[2], f"{DOC}:block3", "exec"), namespace)
    assert "eval_loss" in capsys.readouterr().out
    assert not namespace["loss_fn"].adversary.head.weight.equal(head_before)  # the head was in the optimiser
