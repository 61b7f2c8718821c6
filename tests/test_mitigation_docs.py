"""docs/mitigation.md: its Python blocks run as they are (the data/model block, group DRO in a plain loop,
the language adversary in a Trainer)."""

import importlib.util
import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "mitigation.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def run_block(i: int, namespace: dict) -> None:
    exec(compile(blocks()[i], f"{DOC}:block{i + 1}", "exec"), namespace)


def test_the_doc_has_the_three_examples_one_remedy_each():
    code = blocks()
    assert len(code) == 3
    assert "MitigationLoss" in code[0] and "dro_loss(model, batch)" in code[1] and "MitigationTrainer(" in code[2]
    # one remedy per example: each MitigationConfig names one (a sampler belongs to group DRO)
    configs = re.findall(r"MitigationConfig\((.*?)\)", "".join(code))
    assert configs == ['group_dro=0.01, sampling="group_balanced"', 'adversary="reversal", adversary_coef=0.1']
    assert "weighting=" not in "".join(code)


def test_plain_loop_example_runs(capsys):
    namespace: dict = {}
    run_block(0, namespace)
    before = {k: v.detach().clone() for k, v in namespace["model"].state_dict().items()}
    run_block(1, namespace)
    out = capsys.readouterr().out
    assert "'en': array([0.66666667, 2.        ])" in out and "eval loss" in out
    assert "{'en/0': " in out
    model = namespace["model"]
    assert any(not v.equal(before[k]) for k, v in model.state_dict().items())  # the encoder trained
    q = namespace["dro_loss"].group_weights()
    assert sum(q.values()) == pytest.approx(1.0) and len(set(q.values())) == 4  # q moved, one weight per group


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None,
                    reason="transformers' Trainer needs accelerate, which this environment lacks")
def test_trainer_example_runs(capsys):
    namespace: dict = {}
    run_block(0, namespace)
    run_block(2, namespace)
    out = capsys.readouterr().out
    assert "eval_worst_group_accuracy" in out and "eval_worst_language_accuracy" in out and "zero_shot_loss" in out
    loss_fn, trainer = namespace["adversary_loss"], namespace["trainer"]
    assert trainer.mitigation is loss_fn
    assert all(p.grad is None for p in loss_fn.parameters())  # zeroed after the last step
    assert any(g["params"][0] is loss_fn.adversary.head.weight for g in trainer.optimizer.param_groups)
