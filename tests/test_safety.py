"""Safe loading: no remote code unless configured per model, checkpoints without pickle
execution, no secrets in config files."""
import copy
import json

import pytest
import torch

from conftest import ROOT
from helpers import build_tiny_encoder
from langskew.checkpointing import Checkpointer
from langskew.config import ConfigError, load_config, model_spec, validate_config
from langskew.study_a.modeling import load_classifier


def _with_remote_code(model_dir, marker):
    """Make a saved model advertise custom code that leaves a marker file when imported."""
    (model_dir / "evil_modeling.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertForSequenceClassification\n"
        # a subclass, so that registering it for the auto class leaves the real BERT class alone
        "class EvilModel(BertForSequenceClassification):\n    pass\n")
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "evil_modeling.EvilModel"}
    (model_dir / "config.json").write_text(json.dumps(cfg))


def test_remote_code_runs_only_when_enabled(tmp_path):
    model_dir = tmp_path / "model"
    build_tiny_encoder(model_dir, kind="bert", num_labels=3, seed=0)
    marker = tmp_path / "marker"
    _with_remote_code(model_dir, marker)
    load_classifier(model_dir, num_labels=3)                 # default: trust_remote_code=False
    assert not marker.exists()
    load_classifier(model_dir, num_labels=3, trust_remote_code=True)
    assert marker.exists()                                   # the switch really controls it


def test_trust_remote_code_is_per_model_and_off_by_default():
    cfg = load_config(ROOT / "config.yaml")
    assert model_spec(cfg, "mbert")["trust_remote_code"] is False
    cfg2 = copy.deepcopy(cfg)
    cfg2["models"]["xlmr"]["trust_remote_code"] = True
    validate_config(cfg2)
    assert model_spec(cfg2, "xlmr")["trust_remote_code"] is True
    assert model_spec(cfg2, "mbert")["trust_remote_code"] is False


@pytest.mark.parametrize("where", ["model", "dataset_hub"])
def test_tokens_are_not_accepted_in_config(where):
    cfg = load_config(ROOT / "config.yaml", validate=False)
    if where == "model":
        cfg["models"]["mbert"]["token"] = "hf_secret"
    else:
        cfg["datasets"]["xnli"]["hub"]["token"] = "hf_secret"
    with pytest.raises(ConfigError, match="token"):
        validate_config(cfg)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_checkpoints_refuse_pickled_code(tmp_path):
    ck = Checkpointer(tmp_path, every_steps=1)
    torch.save({"step": 5, "payload": _Payload()}, tmp_path / "step-000000005.pt")
    assert ck.load_latest() is None                          # weights_only=True refuses it
    (tmp_path / "step-000000005.pt").unlink()
    ck.save(3, {"weights": torch.ones(2)})
    state = ck.load_latest()
    assert state["step"] == 3 and torch.equal(state["weights"], torch.ones(2))
