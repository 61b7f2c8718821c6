"""Fine-tuning runs with a condition's extras: the language adversary's own language accuracy (counted by the head,
recorded in the run's curve and metrics) and training on the per-language SUBG subset."""

import math

import pandas as pd
import pytest
import torch
from helpers import make_tiny_classification_frames

from langskew.io import read_json
from langskew.mitigation import LanguageAdversary
from langskew.study_a.finetune import finetune
from langskew.study_a.modeling import build_tiny_model, texts_of

LABELS = ["a", "b", "c"]
ARCH = {"vocab_size": 200, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 64}
HP = {"epochs": 2, "batch_size": 8, "grad_accum": 1, "max_length": 32, "lr_encoder": 3e-3, "lr_head": 1e-2,
      "eval_every": 0.5, "eval_batch_size": 64, "checkpoint_every": 0, "num_workers": 0, "precision": "fp32"}


@pytest.mark.parametrize("kind", ["reversal", "entropy"])
def test_the_head_counts_the_rows_whose_language_it_identifies(kind):
    adversary = LanguageAdversary(2, 2, kind, 0.1)
    with torch.no_grad():
        adversary.head.weight.copy_(torch.eye(2))
        adversary.head.bias.zero_()
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    adversary(features, torch.tensor([0, 1, 1]))  # predicted 0, 1, 0: two of three right
    adversary(features[:1], torch.tensor([1]))  # predicted 0: wrong
    assert adversary.state_dict()["language_hits"].tolist() == [2.0, 4.0]  # saved with the checkpoint
    restored = LanguageAdversary(2, 2, kind, 0.1)
    restored.load_state_dict(adversary.state_dict())
    assert adversary.take_accuracy() == pytest.approx(2 / 4)
    assert math.isnan(adversary.take_accuracy())  # the count starts again after each read
    assert restored.take_accuracy() == pytest.approx(2 / 4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("adv")
    frames = make_tiny_classification_frames(root / "data")
    build_tiny_model(texts_of(frames.values()), root / "tiny", ARCH, seed=0)
    return root, frames


def _run(tiny, out, mitigation):
    root, frames = tiny
    outputs = {"metrics": out / "metrics.json", "curve": out / "curve.csv"}
    finetune(frames["train"], frames["validation"], {"balanced": frames["test"]}, root / "tiny", LABELS, HP,
             seed=0, ckpt_dir=out / "ckpt", outputs=outputs, device="cpu", mitigation=mitigation)
    return read_json(outputs["metrics"]), pd.read_csv(outputs["curve"])


def test_a_run_with_an_adversary_records_its_language_accuracy(tiny, tmp_path):
    metrics, curve = _run(tiny, tmp_path / "adv", {"adversary": {"kind": "reversal", "coef": 0.1}})
    acc = curve["adversary_accuracy"]
    assert len(acc) == len(curve) > 1 and acc.between(0, 1).all()
    assert metrics["adversary_accuracy"]["final"] == pytest.approx(acc.iloc[-1])
    best = curve.set_index("step").loc[metrics["best_step"], "adversary_accuracy"]
    assert metrics["adversary_accuracy"]["at_best_step"] == pytest.approx(best)
    plain_metrics, plain_curve = _run(tiny, tmp_path / "plain", {})
    assert "adversary_accuracy" not in plain_curve.columns and "adversary_accuracy" not in plain_metrics


def test_a_subsampled_run_trains_on_the_per_language_subset(tiny, tmp_path):
    import math as _math

    from langskew.baselines import per_language_subsample

    root, frames = tiny
    outputs = {"metrics": tmp_path / "metrics.json"}
    finetune(frames["train"], frames["validation"], {"balanced": frames["test"]}, root / "tiny", LABELS, HP,
             seed=0, ckpt_dir=tmp_path / "ckpt", outputs=outputs, device="cpu",
             mitigation={"sampling": "per_language_subsample"})
    metrics = read_json(outputs["metrics"])
    n_subset = len(per_language_subsample(frames["train"].reset_index(drop=True), seed=0))
    assert n_subset < len(frames["train"])
    assert metrics["total_steps"] == _math.ceil(n_subset / HP["batch_size"]) * HP["epochs"]
    assert metrics["mitigation"]["sampling"] == "per_language_subsample"
