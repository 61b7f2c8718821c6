"""Tiny offline BERT: built from texts, saved, and loaded like a hub checkpoint."""

from pathlib import Path

import pytest
import torch
from helpers import job, make_tiny_classification_frames
from safetensors.torch import load_file

from langskew.errors import LangskewError
from langskew.study_a.modeling import build_tiny_model, load_classifier, texts_of, tiny_model_job

ARCH = {"vocab_size": 150, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 48}


@pytest.fixture(scope="module")
def frames():
    return make_tiny_classification_frames(sizes={"train": 80, "validation": 10, "test": 10})


def test_tiny_model_loads_like_a_hub_checkpoint(tmp_path, frames):
    out = build_tiny_model(texts_of(frames.values()), tmp_path / "tiny", ARCH, seed=0)
    files = {p.name for p in Path(out).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left behind

    tok, model = load_classifier(out, 3, {0: "a", 1: "b", 2: "c"})
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert model.config.hidden_size == 32 and model.config.max_position_embeddings == 48
    assert tok.model_max_length == 48
    enc = tok("en_c1 enw3 enw7", "frw2 frw9")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[SEP]") == 2
    second = tokens.index("[SEP]") + 1
    assert enc["token_type_ids"][:second] == [0] * second and set(enc["token_type_ids"][second:]) == {1}
    assert "[UNK]" not in tokens  # the vocabulary was trained on these words
    # the saved encoder weights are the ones the classifier loaded
    saved = load_file(str(Path(out) / "model.safetensors"))
    key = next(k for k in saved if k.endswith("word_embeddings.weight"))
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, saved[key])
    out_logits = model(**tok(["en_c1 enw3"], return_tensors="pt")).logits
    assert out_logits.shape == (1, 3)


def test_tiny_model_is_deterministic_by_seed(tmp_path, frames):
    texts = texts_of(frames.values())
    weights = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        weights[name] = load_file(str(build_tiny_model(texts, tmp_path / name, ARCH, seed) / "model.safetensors"))
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


def test_tiny_model_job_reads_parquet(tmp_path):
    make_tiny_classification_frames(tmp_path / "data", sizes={"train": 40, "validation": 10})
    data = [str(tmp_path / "data" / f"{s}.parquet") for s in ("train", "validation")]
    out = tmp_path / "model"
    # the config passes the tiny-model block, seed included, as arch
    tiny_model_job(job({"data": data}, {"model": str(out)}), arch={**ARCH, "seed": 0}, seed=0)
    tok, _ = load_classifier(out, 2)
    assert "[UNK]" not in tok.convert_ids_to_tokens(tok("frw3 en_c0")["input_ids"])


def test_bad_arch_names_the_key(tmp_path):
    with pytest.raises(LangskewError, match="hidden_sise"):
        build_tiny_model(["a b c"], tmp_path / "m", {"hidden_sise": 8}, 0)
    with pytest.raises(LangskewError, match="num_attention_heads"):
        build_tiny_model(["a b c"], tmp_path / "m", {"hidden_size": 30, "num_attention_heads": 4}, 0)


_VOCAB_OF_A_FRESH_PROCESS = """
import json, sys
sys.path.insert(0, {tests!r})
from helpers import make_tiny_classification_frames
from langskew.study_a.modeling import texts_of, train_wordpiece
frames = make_tiny_classification_frames(sizes={{"train": 80, "validation": 10, "test": 10}})
print(json.dumps(sorted(train_wordpiece(texts_of(frames.values()), 300, 48).get_vocab().items())))
"""


def test_tiny_tokenizer_is_the_same_in_every_process():
    # the tokenizers WordPiece trainer breaks ties in hash-map order, which changes per process
    import json
    import subprocess
    import sys

    code = _VOCAB_OF_A_FRESH_PROCESS.format(tests=str(Path(__file__).parent))
    vocabs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
              for _ in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2]
    vocab = dict(json.loads(vocabs[0]))
    assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])][:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                                              "[MASK]"]
    # subwords inside a word carry the ## prefix; every character exists in both forms
    assert any(t.startswith("##") and len(t) > 3 for t in vocab) and any(len(t) > 2 and "#" not in t for t in vocab)
    assert all(f"##{t}" in vocab for t in vocab if len(t) == 1)
