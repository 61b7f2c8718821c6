"""Every value a job checks at run time is checked when the workflow is parsed: one test per
check, each showing the config validation naming the key and the job-side check failing on the
same value (so the parse-time check mirrors a real run-time failure, not an invented rule)."""
import copy

import pytest

from conftest import ROOT
from helpers import rejected
from langskew.config import load_config, validate_config
from langskew.errors import LangskewError

PAPER, DEMO = ROOT / "config.yaml", ROOT / "presets" / "demo.yaml"


@pytest.fixture(scope="module")
def paper_raw():
    return load_config(PAPER, validate=False)


def test_the_shipped_configs_pass(demo_raw, paper_raw):
    validate_config(copy.deepcopy(demo_raw))
    validate_config(copy.deepcopy(paper_raw))


# --- Study A ---------------------------------------------------------------------------------
def test_per_dataset_finetune_override_values(demo_raw):
    from langskew.study_a.finetune import merge_hp

    msg = rejected(demo_raw, lambda c: c["datasets"]["synth_nli"]["finetune"].update(epochs=0))
    assert "config key 'datasets.synth_nli.finetune.epochs'" in msg
    with pytest.raises(LangskewError, match="epochs"):
        merge_hp({"epochs": 0})


def test_per_dataset_shap_override_values(demo_raw):
    msg = rejected(demo_raw, lambda c: c["datasets"]["synth_nli"].update(shap={"precision": "fp8"}))
    assert "config key 'datasets.synth_nli.shap.precision'" in msg
    from langskew.study_a.shap_fast import autocast_dtype

    with pytest.raises(LangskewError, match="fp8"):
        autocast_dtype("cpu", "fp8")


def test_probe_needs_two_languages(demo_raw):
    from langskew.study_a.probe import lid_probe
    import numpy as np

    def mutate(c):
        ds = c["datasets"]["synth_nli"]
        ds["languages"], ds["ratios"] = ["en"], {"en": "1:2:3"}
    msg = rejected(demo_raw, mutate)
    assert "config key 'datasets.synth_nli.languages'" in msg and "two languages" in msg
    with pytest.raises(LangskewError, match="two languages"):
        lid_probe(np.zeros((10, 2)), ["en"] * 10)


def test_hub_dataset_without_config_names_its_language_column(paper_raw):
    from langskew.study_a.dataset import _check_spec

    def mutate(c):
        c["datasets"]["xnli"]["hub"]["name"] = None
        c["datasets"]["xnli"]["columns"]["language"] = None
    msg = rejected(paper_raw, mutate)
    assert "config key 'datasets.xnli.columns.language'" in msg
    spec = copy.deepcopy(paper_raw["datasets"]["xnli"])
    spec["hub"]["name"], spec.setdefault("columns", {})["language"] = None, None
    with pytest.raises(LangskewError, match="columns.language"):
        _check_spec("xnli", spec)


@pytest.mark.parametrize("knob, value", [("label_noise", 1.0), ("cue_strength", 1.5), ("shared_rate", -0.1)])
def test_synthetic_generator_knobs(demo_raw, knob, value):
    from langskew.study_a.synthetic import generate_synthetic

    msg = rejected(demo_raw, lambda c: c["datasets"]["synth_nli"]["synthetic"].update({knob: value}))
    assert "config key 'datasets.synth_nli.synthetic'" in msg and knob in msg
    with pytest.raises(LangskewError, match=knob):
        generate_synthetic("pair", ["en"], ["a", "b"], {"train": 1, "validation": 1, "test": 1}, 0, **{knob: value})


def test_split_size_too_small_for_a_ratio(demo_raw):
    from langskew.study_a.subsets import subset_sizes

    msg = rejected(demo_raw, lambda c: c["datasets"]["synth_nli"].setdefault("split_sizes", {}).update(test=9))
    assert "config key 'datasets.synth_nli.split_sizes.test'" in msg and "too small" in msg
    # by hand: ratio 1:2:3 -> r = 1/3, 2/3, 1; class 0 keeps int(1/3 * 9 / 3) - 1 = 0 rows
    with pytest.raises(LangskewError, match="too small"):
        subset_sizes("1:2:3", 9, 3)
    assert subset_sizes("1:2:3", 18, 3)[0] == [1, 3, 5]  # 18 is enough: int(2) - 1, int(4) - 1, int(6) - 1


def test_tiny_model_heads_split_the_hidden_size(demo_raw):
    from langskew.study_a.modeling import _arch

    msg = rejected(demo_raw, lambda c: c["models"]["tiny_bert"]["tiny"].update(num_attention_heads=3))
    assert "config key 'models.tiny_bert.tiny'" in msg and "divisible" in msg
    with pytest.raises(LangskewError, match="divisible"):
        _arch({"hidden_size": 64, "num_attention_heads": 3})


def test_probe_layer_beyond_a_tiny_model(demo_raw):
    from langskew.study_a.probe import _layer_names

    # the demo's tiny model has 2 layers: hidden states 0 (embeddings), 1, 2
    validate_config(copy.deepcopy(demo_raw) | {"study_a": {**demo_raw["study_a"], "probe": {"layers": [2]}}})
    msg = rejected(demo_raw, lambda c: c["study_a"].update(probe={"layers": [3]}))
    assert "config key 'study_a.probe.layers'" in msg and "0..2" in msg
    with pytest.raises(LangskewError, match="0..2"):
        _layer_names([3], 3)


# --- Study B ---------------------------------------------------------------------------------
def test_d_model_divisible_by_heads(demo_raw):
    from langskew.study_b.model import GPTConfig

    msg = rejected(demo_raw, lambda c: c["study_b"]["sizes"]["tiny"].update(n_head=3))
    assert "config key 'study_b.sizes.tiny.d_model'" in msg and "n_head=3" in msg
    with pytest.raises(LangskewError, match="divisible"):
        GPTConfig(vocab_size=10, n_layer=1, d_model=64, n_head=3, context=8)


@pytest.mark.parametrize("where", ["train", "size"])
def test_batch_is_whole_micro_batches(demo_raw, where):
    from langskew.study_b.pretrain import TrainHP

    def mutate(c):
        target = c["study_b"]["train"] if where == "train" else c["study_b"]["sizes"]["tiny"].setdefault("train", {})
        target.update(batch_size=16, micro_batch_size=6)
    msg = rejected(demo_raw, mutate)
    assert "config key 'study_b.sizes.tiny.train.batch_size'" in msg and "micro_batch_size=6" in msg
    with pytest.raises(LangskewError, match="multiple of micro_batch_size"):
        TrainHP.from_dict({"batch_size": 16, "micro_batch_size": 6}).micro_steps(1)


def test_batch_split_over_the_gpus_of_a_size(demo_raw):
    def mutate(c):
        c["study_b"]["train"].update(batch_size=16, micro_batch_size=4)
        c["study_b"]["sizes"]["tiny"]["resources"] = {"gpu": 3}
    msg = rejected(demo_raw, mutate)
    assert "config key 'study_b.sizes.tiny.train.batch_size'" in msg and "3 GPU(s)" in msg


def test_stride_within_window(demo_raw):
    from langskew.study_b.perplexity import window_plan

    msg = rejected(demo_raw, lambda c: c["study_b"]["eval"].update(window=32, stride=48))
    assert "config key 'study_b.eval.stride'" in msg
    with pytest.raises(LangskewError, match="stride <= window"):
        window_plan(1000, 32, 48)


def test_window_within_every_context(demo_raw):
    context = demo_raw["study_b"]["train"]["context"]
    msg = rejected(demo_raw, lambda c: c["study_b"]["eval"].update(window=context + 1, stride=1))
    assert "config key 'study_b.eval.window'" in msg and f"context {context}" in msg


def test_parallel_lengths(demo_raw):
    msg = rejected(demo_raw, lambda c: c["study_b"]["eval"].update(parallel_min_len=40, parallel_max_len=30))
    assert "config key 'study_b.eval.parallel_min_len'" in msg
    context = demo_raw["study_b"]["train"]["context"]
    msg = rejected(demo_raw, lambda c: c["study_b"]["eval"].update(parallel_min_len=4, parallel_max_len=context + 1))
    assert "config key 'study_b.eval.parallel_max_len'" in msg


@pytest.mark.parametrize("source", ["hub", "local", "synthetic"])
def test_language_source_needs_its_section(demo_raw, source):
    def mutate(c):
        c["study_b"]["languages"]["en"] = {"source": source}
    msg = rejected(demo_raw, mutate)
    assert f"config key 'study_b.languages.en.{source}': required" in msg


def test_synthetic_language_needs_a_grammar(demo_raw):
    from langskew.study_b.synthetic_lang import render

    def mutate(c):
        c["study_b"]["languages"]["de"] = {"source": "synthetic", "synthetic": {"n_documents": {"train": 5, "test": 5}}}
    msg = rejected(demo_raw, mutate)
    assert "config key 'study_b.languages.de.synthetic.grammar'" in msg
    with pytest.raises(LangskewError, match="grammar 'de'"):
        render(None, "de")


def test_synthetic_parallel_needs_grammars(demo_raw):
    msg = rejected(demo_raw, lambda c: c["study_b"]["parallel"].update(languages=["en", "de"]))
    assert "config key 'study_b.parallel.synthetic.grammars'" in msg and "'de'" in msg


def test_hub_config_name_with_shards_needs_data_files(demo_raw):
    def mutate(c):
        c["study_b"]["languages"]["en"] = {"source": "hub", "hub": {"path": "org/corpus", "name": "en", "shards": 2}}
    msg = rejected(demo_raw, mutate)
    assert "config key 'study_b.languages.en.hub.data_files'" in msg


def test_local_parallel_needs_files_or_a_known_table(demo_raw, tmp_path):
    msg = rejected(demo_raw, lambda c: c["study_b"].update(parallel={"source": "local", "local": {}}))
    assert "config key 'study_b.parallel.local'" in msg and "'files'" in msg
    table = tmp_path / "pairs.xlsx"
    table.write_text("en,fr\nHello.,Bonjour.\n")
    msg = rejected(demo_raw, lambda c: c["study_b"].update(parallel={"source": "local", "local": {"path": str(table)}}))
    assert "config key 'study_b.parallel.local.path'" in msg


def test_grid_errors_name_the_grid(demo_raw):
    msg = rejected(demo_raw, lambda c: c["study_b"]["grid"][0].update(sizes=["huge"]))
    assert "config key 'study_b.grid'" in msg and "huge" in msg


# --- through Snakemake -------------------------------------------------------------------------
@pytest.mark.parametrize("overlay, key", [
    ("study_b:\n  eval: {window: 32, stride: 48}\n", "study_b.eval.stride"),
    ("models:\n  tiny_bert:\n    tiny: {num_attention_heads: 3}\n", "models.tiny_bert.tiny"),
])
def test_the_dry_run_stops_naming_the_key(tmp_path, overlay, key):
    import subprocess
    import sys

    extra = tmp_path / "bad.yaml"
    extra.write_text(overlay)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(DEMO),
                           str(extra), "--config", f"outdir={tmp_path}/out"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"config key '{key}'" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-2000:]
    assert not (tmp_path / "out").exists()
