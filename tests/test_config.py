"""Config validation: defaults, and errors that name the key before any job runs."""
import copy
import subprocess
import sys

import pytest

from langskew.config import ConfigError, finetune_hp, load_config, merge, validate_config
from langskew.study_a.subsets import parse_ratio
from fractions import Fraction

from conftest import ROOT

PAPER = ROOT / "config.yaml"
DEMO = ROOT / "presets" / "demo.yaml"


@pytest.fixture()
def raw():
    return load_config(PAPER, validate=False)


def test_paper_config_validates_and_fills_defaults(raw):
    cfg = validate_config(copy.deepcopy(raw))
    assert cfg["study_a"]["finetune"]["lr_head"] == 5e-4
    assert cfg["datasets"]["xnli"]["hub"]["splits"]["test"] == "test"
    assert cfg["models"]["mbert"]["resources"]["gpu"] == 1
    assert finetune_hp(cfg, "amazon")["epochs"] == 1 and finetune_hp(cfg, "xnli")["epochs"] == 3


def test_demo_overlay_validates():
    cfg = load_config(PAPER, DEMO)
    assert cfg["study_a"]["datasets"] == ["synth_nli", "synth_reviews"]  # lists replace
    assert cfg["models"]["tiny_bert"]["source"] == "tiny"


def test_merge_semantics():
    assert merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}


def test_parse_ratio_exact():
    assert parse_ratio("1:2:3", 3) == [Fraction(1, 3), Fraction(2, 3), Fraction(1)]


def _err(raw, mutate):
    cfg = copy.deepcopy(raw)
    mutate(cfg)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    return str(e.value)


def test_unknown_key_is_named(raw):
    msg = _err(raw, lambda c: c["study_a"]["finetune"].update(lr_haed=1e-4))
    assert "study_a.finetune" in msg and "lr_haed" in msg


def test_wrong_type_is_named(raw):
    msg = _err(raw, lambda c: c["study_a"]["finetune"].update(lr_head="fast"))
    assert "study_a.finetune.lr_head" in msg


def test_bad_study_a_choices_are_named_at_parse_time(raw):
    msg = _err(raw, lambda c: c["study_a"]["finetune"].update(precision="half"))
    assert "study_a.finetune.precision" in msg and "half" in msg
    msg = _err(raw, lambda c: c["study_a"]["shap"].update(pair_input="joined"))
    assert "study_a.shap.pair_input" in msg
    msg = _err(raw, lambda c: c["study_a"]["probe"].update(precision="fp8"))
    assert "study_a.probe.precision" in msg
    msg = _err(raw, lambda c: c["datasets"]["amazon"].update(strip_title=""))
    assert "datasets.amazon.strip_title" in msg
    msg = _err(raw, lambda c: c["study_a"]["finetune"].update(mixed_precision=True))  # the former key
    assert "mixed_precision" in msg


def test_unknown_source_is_named(raw):
    msg = _err(raw, lambda c: c["datasets"]["xnli"].update(source="ftp"))
    assert "datasets.xnli.source" in msg


def test_unknown_hub_language_is_named(raw):
    def mutate(c):
        c["datasets"]["xnli"]["languages"] = ["en", "xx"]
        c["datasets"]["xnli"]["ratios"]["xx"] = "1:1:1"
    msg = _err(raw, mutate)
    assert "'xx'" in msg and "datasets.xnli.languages" in msg


def test_ratio_parts_must_match_labels(raw):
    msg = _err(raw, lambda c: c["datasets"]["xnli"]["ratios"].update(en="1:2"))
    assert "datasets.xnli.ratios.en" in msg and "3 labels" in msg


def test_ratio_parts_must_be_positive(raw):
    msg = _err(raw, lambda c: c["datasets"]["xnli"]["ratios"].update(fr="3:0:1"))
    assert "datasets.xnli.ratios.fr" in msg and "<= 0" in msg


def test_missing_ratio_and_stray_ratio(raw):
    def mutate(c):
        del c["datasets"]["amazon"]["ratios"]["ja"]
        c["datasets"]["amazon"]["ratios"]["it"] = "1:1:1:1:1"
    msg = _err(raw, mutate)
    assert "no ratio for language 'ja'" in msg and "datasets.amazon.ratios.it" in msg


def test_unknown_dataset_model_and_condition(raw):
    def mutate(c):
        c["study_a"]["datasets"] = ["xnli", "sst2"]
        c["study_a"]["models"] = ["mbert", "gpt9"]
        c["study_a"]["shap"]["compare"] = ["imbalanced", "oversampled"]
    msg = _err(raw, mutate)
    assert "'sst2'" in msg and "'gpt9'" in msg and "'oversampled'" in msg


def test_unknown_per_dataset_override(raw):
    msg = _err(raw, lambda c: c["datasets"]["xnli"]["finetune"].update(epoch=2))
    assert "datasets.xnli.finetune.epoch" in msg


def test_snakemake_stops_before_any_job(tmp_path):
    """A bad value on the command line stops `snakemake -n` with the key in the message."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config",
         "study_a={'datasets': ['xnli'], 'models': ['mbert'], 'conditions': {'b': {'train': 'skewed', 'weighting': 'none'}}}",
         f"outdir={tmp_path}/out"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "study_a.conditions.b.train" in out
    assert not (tmp_path / "out").exists()
