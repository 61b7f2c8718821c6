"""SHAP analysis: token typing, cumulative differences, efficiency on a tiny model, the jobs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import build_tiny_encoder, job, tiny_frame  # noqa: E402

from langskew.errors import LangskewError  # noqa: E402
from langskew.study_a import shap_compare as sc  # noqa: E402
from langskew.study_a import shap_values as sv  # noqa: E402
from langskew.study_a.inference import load_for_inference  # noqa: E402


def _values(rows):
    """Long frame from (id, language, token_index, token, class_index, value) tuples."""
    df = pd.DataFrame(rows, columns=["id", "language", "token_index", "token", "class_index", "value"])
    return df.assign(label=0)[sv.VALUE_COLUMNS]


def test_token_types_thresholds():
    ref = _values([("a", "en", 0, "x", 0, 0.02), ("a", "en", 1, "y", 0, 0.01), ("a", "en", 2, "z", 0, -0.01),
                   ("a", "en", 3, "w", 0, -0.011), ("a", "en", 4, "v", 0, 0.0),
                   ("a", "en", -1, "<base>", 0, 0.5)])
    types = sc.token_types(ref, threshold=0.01)
    assert types["token_index"].tolist() == [0, 1, 2, 3, 4]  # base row excluded
    assert types["type"].tolist() == ["positive", "neutral", "neutral", "negative", "neutral"]
    assert sc.token_types(ref, threshold=0.001)["type"].tolist()[:3] == ["positive", "positive", "negative"]


def _pair_of_frames():
    # example a (en): tokens 0,1,2 ; example b (en): tokens 0,1 ; example c (fr): token 0. One class (0).
    ref = _values([
        ("a", "en", 0, "x", 0, 0.20), ("a", "en", 1, "y", 0, -0.10), ("a", "en", 2, "z", 0, 0.00),
        ("a", "en", -1, "<base>", 0, 0.30),
        ("b", "en", 0, "x", 0, 0.05), ("b", "en", 1, "q", 0, 0.005), ("b", "en", -1, "<base>", 0, 0.40),
        ("c", "fr", 0, "le", 0, -0.30), ("c", "fr", -1, "<base>", 0, 0.20)])
    other = ref.copy()
    other["value"] = [0.10, -0.05, 0.04, 0.35, 0.15, 0.0, 0.20, -0.10, 0.10]
    return ref, other


def test_cumulative_differences_match_hand_computation():
    ref, other = _pair_of_frames()
    full = sc.cumulative_differences(ref, other, threshold=0.01)
    out = full.set_index(["language", "type"])["mean_diff"]
    n = full.set_index(["language", "type"])["n_examples"]
    # en: a -> pos (0.10-0.20)=-0.10, neg (-0.05+0.10)=0.05, neutral 0.04, base 0.05
    #     b -> pos (0.15-0.05)=0.10, no negative token, neutral (0.0-0.005)=-0.005, base -0.20
    assert out[("en", "positive")] == pytest.approx((-0.10 + 0.10) / 2)
    assert out[("en", "neutral")] == pytest.approx((0.04 - 0.005) / 2)
    assert out[("en", "base")] == pytest.approx((0.05 - 0.20) / 2)
    # fr: c -> neg (-0.10+0.30)=0.20, base -0.10, no positive or neutral token
    assert out[("fr", "negative")] == pytest.approx(0.20)
    assert out[("fr", "base")] == pytest.approx(-0.10)
    assert set(full.columns) == {"language", "class_index", "type", "mean_diff", "n_examples"}
    assert n[("en", "positive")] == 2 and n[("en", "base")] == 2 and n[("fr", "base")] == 1


def test_cumulative_differences_leave_out_examples_without_the_type():
    """nan-mean: an example with no token of a type does not count as a 0 in that type's mean."""
    ref, other = _pair_of_frames()
    full = sc.cumulative_differences(ref, other, threshold=0.01).set_index(["language", "type"])
    # en negative: only example a has a negative token -> mean 0.05 over 1 example (not (0.05 + 0) / 2)
    assert full.loc[("en", "negative"), "mean_diff"] == pytest.approx(0.05)
    assert full.loc[("en", "negative"), "n_examples"] == 1
    # fr has no positive and no neutral token at all: no mean, no examples
    assert np.isnan(full.loc[("fr", "positive"), "mean_diff"]) and full.loc[("fr", "positive"), "n_examples"] == 0
    assert np.isnan(full.loc[("fr", "neutral"), "mean_diff"]) and full.loc[("fr", "neutral"), "n_examples"] == 0


def test_cumulative_differences_require_aligned_tokens():
    ref, other = _pair_of_frames()
    with pytest.raises(LangskewError, match="only in the reference"):
        sc.cumulative_differences(ref, other.iloc[1:])
    other.loc[0, "token"] = "X"
    with pytest.raises(LangskewError, match="tokens differ for example 'a'"):
        sc.cumulative_differences(ref, other)


def test_token_words_groups_subword_pieces():
    tokens = ["", "good ", "mo", "vie", "! ", "bad", "", " so", "-", "so"]
    assert sc.token_words(tokens) == ["", "good", "movie", "movie", "movie", "bad", "", "so-so", "so-so", "so-so"]


def test_informative_share():
    vals = _values([
        ("a", "en", 0, "", 0, 0.0), ("a", "en", 1, "good ", 0, 0.3), ("a", "en", 2, "fi", 0, -0.1),
        ("a", "en", 3, "lm", 0, 0.0), ("a", "en", -1, "<base>", 0, 9.0),
        ("a", "en", 0, "", 1, 0.0), ("a", "en", 1, "good ", 1, -0.2), ("a", "en", 2, "fi", 1, 0.2),
        ("a", "en", 3, "lm", 1, 0.0), ("a", "en", -1, "<base>", 1, 9.0),
        ("b", "xx", 0, "good", 0, 1.0), ("b", "xx", 0, "good", 1, 1.0)])
    out = sc.informative_share(vals, {"en": {"good": 0, "bad": 1}}).set_index("class_index")
    assert list(out["language"]) == ["en", "en"]  # language xx has no informative tokens: skipped
    assert out.loc[0, "share_informative"] == pytest.approx(0.3 / 0.4)
    assert out.loc[0, "share_class_informative"] == pytest.approx(0.3 / 0.4)
    assert out.loc[1, "share_informative"] == pytest.approx(0.2 / 0.4)
    assert out.loc[1, "share_class_informative"] == 0.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_encoder(tmp_path_factory.mktemp("shap_model") / "bert", kind="bert")
    return path, *load_for_inference(path)


def _probabilities(model, tokenizer, df):
    import torch

    pairs = None if df["text_pair"].isna().all() else df["text_pair"].tolist()
    enc = tokenizer(df["text"].tolist(), pairs, padding=True, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**enc).logits, -1).numpy()


@pytest.mark.parametrize("pair", [False, True])
def test_explain_is_efficient(tiny, pair):
    _, tokenizer, model = tiny
    df = tiny_frame(1, pair=pair)
    # enough evaluations to resolve the whole partition tree (else unresolved clusters share credit)
    values = sv.explain(model, tokenizer, df, batch_size=64, max_evals=400, seed=0, max_length=32)
    assert list(values.columns) == sv.VALUE_COLUMNS
    expected = _probabilities(model, tokenizer, df)
    for i, ex in enumerate(df["id"]):
        ex_vals = values[values["id"] == ex]
        n_tokens = len(tokenizer(df["text"][i], df["text_pair"][i] if pair else None)["input_ids"])
        assert len(ex_vals) == (n_tokens + 1) * 3  # "A [SEP] B" tokenises like the pair; + base; x 3 classes
        totals = ex_vals.groupby("class_index")["value"].sum().to_numpy()
        np.testing.assert_allclose(totals, expected[i], atol=1e-4)
        assert not np.allclose(ex_vals[ex_vals["token_index"] >= 0]["value"], 0)
        if pair:  # the separator between premise and hypothesis is never masked: value 0
            sep_rows = ex_vals[ex_vals["token"].str.strip() == tokenizer.sep_token]
            assert len(sep_rows) == 3 and np.allclose(sep_rows["value"], 0, atol=1e-6)


def test_explain_truncates_to_max_length(tiny):
    _, tokenizer, model = tiny
    df = tiny_frame(1).iloc[:1].assign(text=" ".join(["chat"] * 40))
    values = sv.explain(model, tokenizer, df, batch_size=16, max_evals=20, max_length=8)
    assert values["token_index"].max() == 7  # [CLS] + 6 words + [SEP]


def test_shap_jobs_end_to_end(tiny, tmp_path):
    path, _, _ = tiny
    data = tmp_path / "test.parquet"
    tiny_frame(3).to_parquet(data)
    ref_out = tmp_path / "balanced.parquet"
    sv.shap_values_job(job({"model": str(path), "data": str(data)}, [str(ref_out)]),
                       settings=dict(n_examples=4, random_state=0, batch_size=16, max_evals=20, max_length=32,
                                     precision="auto", pair_input="authors"), labels=["a", "b", "c"])
    ref = pd.read_parquet(ref_out)
    assert ref["id"].nunique() == 4
    other = ref.assign(value=ref["value"] + np.where(ref["token_index"] < 0, 0.1, 0.0))
    other_out = tmp_path / "imbalanced.parquet"
    other.to_parquet(other_out)
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"labels": ["a", "b", "c"], "informative_tokens": {"en": {"cat": 0}, "fr": {"chat": 0}}}))
    compare = job({"reference": str(ref_out), "others": [str(other_out)], "meta": str(meta)},
                  {"cumulative": str(tmp_path / "cum.csv"), "informative": str(tmp_path / "inf.csv"),
                   "figure": str(tmp_path / "fig.png")})
    sc.shap_compare_job(compare, threshold=0.01, classes=[0, 2], compare=["imbalanced"],
                        ratio_groups={"en": "1:2:3", "fr": "3:2:1"}, labels=["a", "b", "c"])
    outputs = compare.output
    cum = pd.read_csv(outputs.cumulative)
    base = cum[cum["type"] == "base"]
    np.testing.assert_allclose(base["mean_diff"], 0.1)
    tokens = cum[cum["type"] != "base"]
    present = tokens["n_examples"] > 0  # a type no example has is NaN (nan-mean), not 0
    np.testing.assert_allclose(tokens[present]["mean_diff"], 0.0, atol=1e-12)
    assert tokens[~present]["mean_diff"].isna().all()
    assert set(cum["ratio_group"]) == {"1:2:3", "3:2:1"}
    inf = pd.read_csv(outputs.informative)
    assert set(inf["condition"]) == {"balanced", "imbalanced"}
    assert inf["share_informative"].between(0, 1).all()
    assert Path(outputs.figure).stat().st_size > 1000


# --- the authors' pair input (pair_input: authors) -------------------------------------------

def test_paper_config_explains_in_fp32_with_the_authors_pair_input():
    import torch

    from langskew.config import load_config, shap_settings
    from langskew.study_a.shap_fast import autocast_dtype

    from conftest import ROOT

    cfg = load_config(ROOT / "config.yaml")
    for dataset in ("xnli", "amazon"):
        settings = shap_settings(cfg, dataset)
        assert settings["precision"] == "fp32" and settings["pair_input"] == "authors"
        # fp32 means no autocast, on a GPU too
        assert autocast_dtype(torch.device("cuda"), settings["precision"]) is None


def test_authors_string_and_its_masks(tiny):
    """premise, a space, [SEP], the hypothesis; shap's masker keeps a token that is exactly the separator."""
    import shap

    from langskew.study_a.shap_fast import MaskedStrings, text_masker

    _, tokenizer, _ = tiny
    df = pd.DataFrame({"id": ["en-0"], "language": ["en"], "label": [0], "text": ["the cat runs"],
                       "text_pair": ["le chat"]})
    (text,), pair = sv.joined_inputs(tokenizer, df, 64)
    assert pair and text == "the cat runs [SEP]le chat"
    masker = shap.maskers.Text(tokenizer)  # what shap.Explainer(f, tokenizer) builds
    assert list(masker.data_transform(text)[0]) == ["", "the ", "cat ", "runs ", "[SEP]", "le ", "chat", ""]
    ours = MaskedStrings(text_masker(tokenizer, pair=False), text)
    # positions: [CLS] the cat runs [SEP] le chat [SEP]; [CLS] and the final [SEP] are kept by shap
    nothing, no_sep = np.zeros(8, bool), np.array([1, 1, 1, 1, 0, 1, 1, 1], bool)
    expected = ["[MASK] [MASK] [MASK][SEP] [MASK] [MASK]", "the cat runs [SEP]le chat"]
    assert [str(masker(m, text)[0][0]) for m in (nothing, no_sep)] == expected
    assert ours(np.stack([nothing, no_sep])) == expected


def _typed_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def test_sep_token_types_by_hand():
    from langskew.study_a.shap_fast import sep_token_types

    assert sep_token_types([2, 7, 8, 3, 9, 3], 3) == [0, 0, 0, 0, 1, 1]  # [CLS] a a [SEP] b [SEP]
    assert sep_token_types([2, 7, 3], 3) == [0, 0, 0]  # the final separator only: no second text
    assert sep_token_types([2, 7], 3) == [0, 0]


def test_authors_input_is_one_sequence(tiny, tmp_path):
    """BERT: the authors' sequence has the ids and token types of the true pair; XLM-R: one </s> between the
    texts where the pair template puts two."""
    import sentencepiece as spm
    from transformers import XLMRobertaTokenizerFast

    from helpers import TINY_WORDS
    from langskew.study_a.shap_fast import ProbabilityModel

    path, plain, model = tiny
    bert = _typed_tokenizer(path)  # makes token type ids, as mBERT's does
    ids, types = ProbabilityModel(model, bert, 64, pair=True, pair_input="authors").encode(["the cat runs [SEP]le chat"])
    pair = bert("the cat runs", "le chat")
    assert ids[0] == pair["input_ids"] and types[0] == pair["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1, 1]
    # a tokenizer without token type ids (the model was fine-tuned without them) gets none here either
    ids, types = ProbabilityModel(model, plain, 64, pair=True, pair_input="authors").encode(["the cat runs [SEP]le chat"])
    assert ids[0] == pair["input_ids"] and types is None

    rng = np.random.default_rng(0)
    words = sum(TINY_WORDS.values(), [])
    (tmp_path / "corpus.txt").write_text("\n".join(" ".join(rng.choice(words, size=8)) for _ in range(300)))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=50, model_type="unigram", character_coverage=1.0, bos_id=0,
                                   pad_id=1, eos_id=2, unk_id=3, minloglevel=2)
    xlmr = XLMRobertaTokenizerFast(vocab_file=str(tmp_path / "sp.model"))
    text = "the cat runs </s>le chat"
    ids, types = ProbabilityModel(model, xlmr, 64, pair=True, pair_input="authors").encode([text])
    assert ids[0][0] == xlmr.bos_token_id and ids[0].count(xlmr.eos_token_id) == 2 and types is None
    ids, _ = ProbabilityModel(model, xlmr, 64, pair=True, pair_input="pair").encode([text])
    assert ids[0].count(xlmr.eos_token_id) == 3  # <s> a </s></s> b </s>


def test_unknown_pair_input_is_named(tiny):
    _, tokenizer, model = tiny
    with pytest.raises(LangskewError, match="pair_input 'joined'"):
        sv.explain(model, tokenizer, tiny_frame(1, pair=True), pair_input="joined", max_length=32)
