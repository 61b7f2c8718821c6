"""Training curves: report figures of both studies and opt-in TensorBoard event files written by
the training loops themselves."""
import builtins
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers import job, make_tiny_classification_frames, write_fake_token_stream
from langskew import curves
from langskew.errors import LangskewError
from langskew.study_a.finetune import CURVE_COLUMNS, finetune
from langskew.study_a.modeling import build_tiny_model, texts_of
from langskew.study_b import pretrain as tr
from langskew.study_b.languages import build_mixture
from langskew.study_b.model import GPTConfig


def study_a_curve(shift=0.0):
    return pd.DataFrame({"step": [5, 10, 15], "epoch": [0.5, 1.0, 1.5], "train_loss": [1.1, 0.8, 0.6],
                         "val_loss": [1.0 + shift, 0.9 + shift, 0.85 + shift], "lr": [1e-3, 5e-4, 1e-4]})


def study_b_curve():
    return pd.DataFrame({"step": [20, 40, 60, 80], "tokens": [1, 2, 3, 4], "lr": [1e-3] * 4,
                         "train_loss": [5.0, 4.0, 3.5, 3.2], "val_loss_L1": [np.nan, 4.1, np.nan, 3.3],
                         "val_loss_L2": [np.nan, 4.3, np.nan, 3.6]})


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_one_panel_per_run_with_train_and_validation_losses():
    fig = curves.plot_curves({"a / seed 0": study_a_curve(), "a / seed 1": study_a_curve(0.1),
                              "clone 50/50": study_b_curve()}, "title", ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["a / seed 0", "a / seed 1", "clone 50/50"]
    assert len(fig.axes) == 4 and not fig.axes[3].get_visible()  # 2 x 2 grid, last panel hidden
    a = _lines(visible[1])
    assert set(a) == {"train", "validation"}
    assert list(a["validation"].get_ydata()) == pytest.approx([1.1, 1.0, 0.95])
    b = _lines(visible[2])
    assert set(b) == {"train", "validation L1", "validation L2"}
    # validation points only where they were measured
    assert list(b["validation L2"].get_xdata()) == [40, 80]
    assert list(b["train"].get_ydata()) == [5.0, 4.0, 3.5, 3.2]


def test_training_curves_job_writes_the_figure(tmp_path):
    paths = []
    for i, df in enumerate([study_a_curve(), study_b_curve()]):
        paths.append(str(tmp_path / f"curve{i}.csv"))
        df.to_csv(paths[-1], index=False)
    out = tmp_path / "report" / "training_curves.png"
    curves.training_curves_job(job({"curves": paths}, [str(out)]), labels=["run A", "run B"], title="curves")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > 300


@pytest.mark.parametrize("drop, message", [("train_loss", "train_loss"), ("val_loss", "val_loss"), ("step", "step")])
def test_curve_without_a_column_is_named(tmp_path, drop, message):
    path = tmp_path / "curve.csv"
    study_a_curve().drop(columns=drop).to_csv(path, index=False)
    with pytest.raises(LangskewError, match=message):
        curves.training_curves_job(job({"curves": [str(path)]}, [str(tmp_path / "x.png")]), labels=["r"], title="t")


def test_labels_must_match_the_curve_files(tmp_path):
    with pytest.raises(LangskewError, match="2 labels"):
        curves.training_curves_job(job({"curves": ["a.csv"]}, [str(tmp_path / "x.png")]), labels=["r", "s"], title="t")


# --- TensorBoard ---------------------------------------------------------------------------------
@pytest.fixture
def tensorboard_installed():
    """The opt-in extra (`pip install ".[tensorboard]"`, installed by `make test`)."""
    pytest.importorskip("tensorboard")


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_folder_mirrors_the_log_and_is_off_by_default(tmp_path):
    cfg = {"outdir": str(tmp_path / "results")}
    log = f"{tmp_path}/results/logs/study_b/pretrain/run1.log"
    assert curves.tensorboard_dir(cfg, log, "study_b_pretrain") is None
    assert curves.tensorboard_dir({**cfg, "tensorboard": True}, log, "study_b_pretrain") == \
        f"{tmp_path}/results/tensorboard/study_b/pretrain/run1"
    assert curves.tensorboard_dir({**cfg, "tensorboard": True}, "/elsewhere/x.log", "finetune") == \
        f"{tmp_path}/results/tensorboard/finetune/x"
    off = curves.TensorBoardLog(None)
    off.log(1, {"train_loss": 1.0})
    assert not off.enabled


def test_rows_become_scalars_and_nan_is_skipped(tmp_path, tensorboard_installed):
    tb = curves.TensorBoardLog(tmp_path / "tb")
    tb.log(20, study_b_curve().iloc[0].to_dict())
    tb.log(40, study_b_curve().iloc[1].to_dict())
    tb.log(50, [50, 0.5, 2.0, 1.5, 1e-3], CURVE_COLUMNS)
    tb.close()
    scalars = read_scalars(tmp_path / "tb")
    assert scalars["loss/train"] == [(20, 5.0), (40, 4.0), (50, 2.0)]
    assert scalars["loss/validation_L1"] == [(40, pytest.approx(4.1))]  # the NaN at step 20 is not logged
    assert scalars["loss/validation"] == [(50, 1.5)]
    assert "step" not in scalars


def test_missing_tensorboard_package_is_a_clear_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard.") or name == "torch.utils.tensorboard":
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m.startswith("torch.utils.tensorboard") or m.startswith("tensorboard")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(LangskewError, match=r"'tensorboard'.*pip install 'langskew\[tensorboard\]'"):
        curves.TensorBoardLog(tmp_path / "tb")
    assert curves.TensorBoardLog(None).enabled is False  # off: no import at all


def test_pretraining_logs_its_curve_to_tensorboard(tmp_path, tensorboard_installed):
    torch.set_num_threads(1)
    meta = write_fake_token_stream(tmp_path / "tokens" / "en", "en", vocab_size=24, n_train=6000, n_test=400)
    run = {"id": "t", "kind": "clone", "size": "tiny", "scale": 1.0, "steps": 20, "base_languages": ["en"],
           "n_languages": 2, "schedule": [[0.5, 0.5]], "clone_fraction": 1.0, "vocab_mode": None,
           "data_fraction": 1.0, "language": None, "label": "t"}
    mixture = build_mixture(run, [meta], 0)
    hp = tr.TrainHP.from_dict({"context": 16, "batch_size": 8, "micro_batch_size": 8, "lr": 3e-3, "min_lr": 3e-4,
                               "warmup_steps": 2, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.0,
                               "grad_clip": None, "precision": "fp32", "compile": False, "eval_every": 10,
                               "eval_batches": 1, "checkpoint_every": 0, "log_every": 5})
    cfg = GPTConfig(vocab_size=mixture.vocab_size, context=16, n_layer=1, d_model=16, n_head=2)
    result = tr.pretrain(mixture, cfg, hp, total_steps=20, progress=False, tensorboard_dir=str(tmp_path / "tb"))
    scalars = read_scalars(tmp_path / "tb")
    curve = pd.DataFrame(result.curve)
    assert [s for s, _ in scalars["loss/train"]] == list(curve["step"]) == [5, 10, 15, 20]
    assert [v for _, v in scalars["loss/train"]] == pytest.approx(list(curve["train_loss"]))
    assert [s for s, _ in scalars["loss/validation_L2"]] == [10, 20]


def test_finetuning_logs_its_curve_to_tensorboard(tmp_path, tensorboard_installed):
    frames = make_tiny_classification_frames(tmp_path / "data")
    build_tiny_model(texts_of(frames.values()), tmp_path / "tiny",
                     {"vocab_size": 200, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "intermediate_size": 64, "max_position_embeddings": 64}, seed=0)
    hp = {"epochs": 1, "batch_size": 16, "grad_accum": 1, "max_length": 32, "eval_every": 0.5,
          "checkpoint_every": 0, "num_workers": 0}
    result = finetune(frames["train"], frames["validation"], {"original": frames["test"]}, tmp_path / "tiny",
                      ["a", "b", "c"], hp, tensorboard_dir=tmp_path / "tb")
    scalars = read_scalars(tmp_path / "tb")
    assert [s for s, _ in scalars["loss/validation"]] == list(result.curve["step"])
    assert [v for _, v in scalars["loss/validation"]] == pytest.approx(list(result.curve["val_loss"]))
    assert set(scalars) == {"loss/train", "loss/validation", "epoch", "lr"}
