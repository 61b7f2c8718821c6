"""Study B data: corpus sources, tokenizers, memmap token streams, parallel data, anchored vocab."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import build_study_b_tokens, job, streaming_datasets_left
from hub_fixtures import sharded_parquet_repo, split_shards_repo, translation_repo
from langskew.errors import LangskewError
from langskew.io import read_json
from langskew.study_b import corpus, synthetic_lang, tokenizer
from langskew.study_b.languages import anchored_mapping, build_mixture, load_packed_parallel, open_stream


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_study_b_tokens(tmp_path_factory.mktemp("sb"), n_documents=150, vocab_size=400, parallel_pairs=30)


def test_synthetic_is_deterministic_and_differs_by_language():
    a = list(synthetic_lang.documents("en", 5, seed=3))
    assert a == list(synthetic_lang.documents("en", 5, seed=3))
    assert a != list(synthetic_lang.documents("en", 5, seed=4))
    fr = list(synthetic_lang.documents("fr", 50, seed=3))
    assert any(" le " in d or " la " in d for d in fr) and not any(" the " in d for d in fr)


def test_parallel_pairs_share_content_but_not_words():
    pairs = list(synthetic_lang.parallel_sentences(("en", "fr"), 40, seed=0))
    digits = sum(any(c.isdigit() for c in en) for en, _ in pairs)
    assert digits > 0
    for en, fr in pairs:
        assert [t for t in en.split() if t[0].isdigit()] == [t for t in fr.split() if t[0].isdigit()]
        assert en != fr


def test_french_adjective_follows_the_noun():
    frame = synthetic_lang.Frame("act", "Anna", 0, synthetic_lang.NP(2, 1, 2, True), None, None, None, False)
    assert synthetic_lang.render(frame, "en") == "Anna sees the red house."
    assert synthetic_lang.render(frame, "fr") == "Anna voit la maison rouge."


def test_french_de_elides_before_a_vowel_but_not_before_the_elided_article():
    after = synthetic_lang._fr_after
    assert after("à côté de", "l'enfant") == "à côté de l'enfant"
    assert after("près de", "un arbre") == "près d'un arbre" and after("loin de", "une école") == "loin d'une école"
    assert after("près de", "le roi") == "près du roi" and after("sous", "l'arbre") == "sous l'arbre"
    assert after("loin de", "3 chats") == "loin de 3 chats"


def test_french_masculine_adjective_before_a_vowel_takes_its_liaison_form():
    nouns = [n[0] for n in synthetic_lang.NOUNS]
    adjs = [a[0] for a in synthetic_lang.ADJECTIVES]
    np_ = synthetic_lang.NP
    fr_np = synthetic_lang._fr_np
    lex = synthetic_lang.lexicon(1)
    assert fr_np(np_(nouns.index("friend"), 1, adjs.index("old"), True), lex) == "le vieil ami"
    assert fr_np(np_(nouns.index("bird"), 1, adjs.index("beautiful"), False), lex) == "un bel oiseau"
    assert fr_np(np_(nouns.index("child"), 1, adjs.index("new"), True), lex) == "le nouvel enfant"
    assert fr_np(np_(nouns.index("king"), 1, adjs.index("old"), True), lex) == "le vieux roi"
    assert fr_np(np_(nouns.index("friend"), 2, adjs.index("old"), True), lex) == "2 vieux amis"


def test_generated_french_has_no_elision_errors():
    """Over generated stories and parallel sentences: no "d'l'" (de l'), no "de un"/"de une"
    (d'un), no "le"/"la" before a vowel (l'), no "le vieux ami" (le vieil ami), and the right
    forms do occur."""
    import re

    docs = list(synthetic_lang.documents("fr", 1500, seed=0))
    docs += list(synthetic_lang.documents("fr", 500, seed=1, richness=3))
    docs += [fr for _, fr in synthetic_lang.parallel_sentences(("en", "fr"), 1000, seed=0)]
    text = " ".join(docs)
    vowel = "[aeiouéèêâîôûh]"
    assert "d'l'" not in text
    assert not re.search(r"\bde une?\b", text, re.IGNORECASE)
    assert not re.search(rf"\b(le|la) {vowel}", text, re.IGNORECASE)
    assert not re.search(rf"\b(le|un) (beau|vieux|nouveau) {vowel}", text, re.IGNORECASE)
    assert not re.search(r"d'(?![aeiouéèêâîôûh])", text)
    assert re.search(r"\bde l'", text) and re.search(r"\bdu ", text) and re.search(r"\ble vieil ", text)


def test_token_streams_round_trip(built):
    meta = read_json(built["metas"]["en"])
    assert meta["dtype"] == "uint16" and meta["eod_id"] == 2 and meta["pad_id"] == 0
    stream = open_stream(built["metas"]["en"])
    assert len(stream.train) == meta["n_tokens"]["train"] and stream.train[-1] == meta["eod_id"]
    sp = tokenizer.load_tokenizer(built["tokenizers"]["en"])
    ids = np.asarray(stream.test, dtype=np.int64)
    ends = np.flatnonzero(ids == meta["eod_id"])
    assert len(ends) == meta["n_documents"]["test"]
    first_doc = sp.decode(ids[:ends[0]].tolist())
    spec = {"source": "synthetic", "synthetic": {"n_documents": {"train": 150, "test": 30}, "seed": 0}}
    assert first_doc == corpus.load_corpus(spec, "en")["test"][0]


def test_data_jobs_write_what_their_functions_write(built, tmp_path):
    """The stage jobs, called as their rules call them, write the files the functions wrote for ``built``."""
    spec = {"source": "synthetic", "synthetic": {"n_documents": {"train": 150, "test": 30}, "seed": 0}}
    docs = {"train": str(tmp_path / "train.parquet"), "test": str(tmp_path / "test.parquet")}
    corpus.corpus_job(job(output=docs), language="en", spec=spec)
    model = str(tmp_path / "en.model")
    tokenizer.tokenizer_job(job({"train": docs["train"]}, [model]),
                            tokenizer={"vocab_size": 400, "hard_vocab_limit": False}, seed=0)
    assert Path(model).read_bytes() == Path(built["tokenizers"]["en"]).read_bytes()
    streams = {"train": str(tmp_path / "train.bin"), "test": str(tmp_path / "test.bin"),
               "meta": str(tmp_path / "meta.json")}
    tokenizer.tokens_job(job({"tokenizer": model, **docs}, streams), language="en")
    reference = Path(built["metas"]["en"]).parent
    for split in ("train", "test"):
        assert Path(streams[split]).read_bytes() == (reference / f"{split}.bin").read_bytes()
    pairs, npz = str(tmp_path / "parallel.parquet"), str(tmp_path / "parallel.npz")
    models = [built["tokenizers"][lang] for lang in ("en", "fr")]
    corpus.parallel_corpus_job(job({"tokenizers": models}, [pairs]), spec={"source": "synthetic", "n_pairs": 30},
                               languages=["en", "fr"], n_parallel=1, min_len=1, max_len=400)
    tokenizer.parallel_tokens_job(job({"pairs": pairs, "tokenizers": models}, [npz]), languages=["en", "fr"])
    got, want = np.load(npz), np.load(built["parallel"])
    assert sorted(got.files) == sorted(want.files) and all(np.array_equal(got[k], want[k]) for k in want.files)


def test_tokenizer_splits_digits_and_falls_back_to_bytes(built):
    sp = tokenizer.load_tokenizer(built["tokenizers"]["en"])
    pieces = sp.encode("Anna saw 123 dogs ☃", out_type=str)
    assert {"1", "2", "3"} <= set(pieces)
    assert any(p.startswith("<0x") for p in pieces)  # the snowman is not in the vocabulary


def test_parallel_npz_layout(built):
    data = np.load(built["parallel"])
    for lang in ("en", "fr"):
        offsets = data[f"{lang}_offsets"]
        assert len(offsets) == 31 and offsets[0] == 0 and offsets[-1] == len(data[f"{lang}_ids"])
        assert (np.diff(offsets) > 0).all()


def test_anchored_mixture_from_real_tokenizers(built):
    en = open_stream(built["metas"]["en"]).pieces()
    fr = open_stream(built["metas"]["fr"]).pieces()
    merged = anchored_mapping(en, fr)
    shared = set(en) & set(fr)
    assert merged.n_shared == len(shared) and merged.vocab_size == len(en) + len(fr) - len(shared)
    run = {"id": "a", "kind": "real", "base_languages": ["en", "fr"], "schedule": [[0.5, 0.5]],
           "vocab_mode": "anchored", "steps": 10}
    mix = build_mixture(run, [built["metas"]["en"], built["metas"]["fr"]], seed=0)
    assert mix.vocab_size == merged.vocab_size and mix.info["n_shared"] == merged.n_shared
    anna_en, anna_fr = en.index("▁Anna") if "▁Anna" in en else None, fr.index("▁Anna") if "▁Anna" in fr else None
    if anna_en is not None and anna_fr is not None:
        assert mix.map_ids(np.array([anna_fr]), 1)[0] == anna_en
    pairs = mix.parallel(5, min_len=8, max_len=48)  # parallel lines packed into 8..48 tokens per side
    assert len(pairs) == 5 and all(8 <= len(a) <= 48 and 8 <= len(b) <= 48 for a, b in pairs)
    assert all(b.max() < mix.vocab_size for _, b in pairs)


def _hub_fixture(root):
    data = root / "data"
    data.mkdir(parents=True)
    pd.DataFrame({"story": [f"Story number {i}. It ends." for i in range(20)], "n": range(20)}).to_parquet(
        data / "train-00000.parquet")
    pd.DataFrame({"story": ["A held-out story."] * 3, "n": range(3)}).to_parquet(data / "validation-00000.parquet")
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n"
        "  - split: validation\n    path: data/validation-*.parquet\n---\n# tiny stories fixture\n")
    return str(root)


def test_hub_source_on_a_local_hub_folder(tmp_path):
    path = _hub_fixture(tmp_path / "hub")
    spec = {"source": "hub", "hub": {"path": path, "name": "default", "text_column": "story",
                                     "splits": {"train": "train", "test": "validation"},
                                     "cache_dir": str(tmp_path / "cache")},
            "max_documents": {"train": 12, "test": None}}
    docs = corpus.load_corpus(spec, "en")
    assert docs["train"][:2] == ["Story number 0. It ends.", "Story number 1. It ends."]
    assert len(docs["train"]) == 12 and docs["test"] == ["A held-out story."] * 3
    spec["hub"]["text_column"] = "body"
    with pytest.raises(LangskewError, match="'body'"):
        corpus.load_corpus(spec, "en")


def _numbered_docs(tmp_path, n=400):
    """A folder of numbered documents read in sorted order (like a folder of books)."""
    folder = tmp_path / "books"
    folder.mkdir()
    for f in range(4):
        (folder / f"part{f}.txt").write_text("\n\n".join(f"doc {i}" for i in range(f * n // 4, (f + 1) * n // 4)))
    return str(folder / "*.txt")


def test_held_out_documents_are_a_seeded_random_sample(tmp_path):
    spec = {"source": "local", "local": {"train": _numbered_docs(tmp_path)}, "test_fraction": 0.1, "holdout_seed": 3}
    docs = corpus.load_corpus(spec, "en")
    held = [int(d.split()[1]) for d in docs["test"]]
    assert 20 <= len(held) <= 60 and len(held) + len(docs["train"]) == 400
    assert not set(docs["test"]) & set(docs["train"])
    # spread over the whole corpus, not its last files
    assert min(held) < 100 and max(held) > 300 and sum(h < 200 for h in held) >= len(held) // 4
    assert corpus.load_corpus(spec, "en") == docs  # reproducible
    assert corpus.load_corpus({**spec, "holdout_seed": 4}, "en")["test"] != docs["test"]


def test_sharded_hub_repo_reads_only_the_chosen_shards(tmp_path):
    shards = [pd.DataFrame({"complete_text": [f"book {s}-{i} text." for i in range(5)],
                            "ocr": [0.5, 0.95, 0.99, 0.2, 0.9]}) for s in range(4)]
    root = sharded_parquet_repo(tmp_path / "French-PD-Books", shards)
    hub = {"path": str(root), "text_column": "complete_text", "splits": {"train": "train", "test": None},
           "shards": 2, "streaming": True, "filter": {"column": "ocr", "min": 0.9}}
    spec = {"source": "hub", "hub": hub, "test_fraction": 0.5, "holdout_seed": 0}
    docs = corpus.load_corpus(spec, "fr")
    got = sorted(docs["train"] + docs["test"])
    assert got == sorted(f"book {s}-{i} text." for s in (0, 1) for i in (1, 2, 4))
    hub["data_files"] = "data/train-0000[23]-*.parquet"
    docs = corpus.load_corpus(spec, "fr")
    got = sorted(docs["train"] + docs["test"])
    assert got == sorted(f"book {s}-{i} text." for s in (2, 3) for i in (1, 2, 4))
    hub["filter"] = {"column": "quality", "min": 0.5}
    with pytest.raises(LangskewError, match="filter column 'quality'"):
        corpus.load_corpus(spec, "fr")


@pytest.mark.parametrize("max_train", [None, 6])
def test_a_streamed_hub_corpus_is_freed_as_soon_as_reading_ends(tmp_path, max_train):
    """A streaming dataset opened first in a process (as in every corpus job) sits in a reference
    cycle; left for the collector, it may be freed only at interpreter exit, where freeing its
    Arrow readers can abort a job whose outputs are written. The corpus job frees it when the rows
    are read, or when it stops reading at max_documents."""
    root = sharded_parquet_repo(tmp_path / "books", [pd.DataFrame({"text": [f"b{s}-{i}" for i in range(10)]})
                                                     for s in range(3)])
    hub = {"path": str(root), "splits": {"train": "train", "test": None}, "shards": 2, "streaming": True}
    spec = {"source": "hub", "hub": hub, "test_fraction": 0.5, "max_documents": {"train": max_train}}
    counts, alive = streaming_datasets_left("langskew.study_b.corpus.write_corpus", spec, "fr",
                                            {split: tmp_path / f"{split}.parquet" for split in ("train", "test")})
    assert alive == 0
    assert counts["train"] == (max_train or 20 - counts["test"])


def test_paper_english_corpus_reads_the_english_shards_of_a_gutenberg_style_repo(tmp_path):
    """The paper configuration's English source, run as configured on a folder laid out like
    manu/project_gutenberg (data/{split}-xxxxx-of-xxxxx-{hash}.parquet, one split per language)."""
    from langskew.config import load_config

    spec = load_config(Path(__file__).resolve().parents[1] / "config.yaml")["study_b"]["languages"]["en"]
    assert spec["hub"]["path"] == "manu/project_gutenberg" and len(spec["hub"]["revision"]) == 40
    books = {lang: [pd.DataFrame({"id": [f"{lang}{s}-{i}" for i in range(20)],
                                  "text": [f"{lang} book {s}-{i}." for i in range(20)]}) for s in range(n)]
             for lang, n in (("de", 2), ("en", 3), ("fr", 1))}
    root = split_shards_repo(tmp_path / "project_gutenberg", books)
    spec = {**spec, "hub": {**spec["hub"], "path": str(root)}, "test_fraction": 0.25}
    docs = corpus.load_corpus(spec, "en")
    assert sorted(docs["train"] + docs["test"]) == sorted(f"en book {s}-{i}." for s in range(3) for i in range(20))
    assert 0 < len(docs["test"]) < 30  # a seeded sample of the books is held out


def test_europarl_style_pairs_keep_empty_sides_and_take_the_first_n(tmp_path):
    shard0 = [("", "Vide."), ("Hello.", "Bonjour."), ("Yes.", ""), ("Good night.", "Bonne nuit."), ("A.", "B.")]
    shard1 = [("Later.", "Plus tard.")]
    root = translation_repo(tmp_path / "europarl", [shard0, shard1])
    spec = {"source": "hub", "n_pairs": 3,
            "hub": {"path": str(root), "name": "en-fr", "split": "train",
                    "columns": {"en": "translation.en", "fr": "translation.fr"}}}
    df = corpus.load_parallel(spec, ["en", "fr"])  # the hub config, prepared by datasets
    assert df.to_dict("records") == [{"en": "", "fr": "Vide."}, {"en": "Hello.", "fr": "Bonjour."},
                                     {"en": "Yes.", "fr": ""}]
    spec["hub"].update(data_files="en-fr/*.parquet", shards=1, streaming=True)
    spec["n_pairs"] = 10
    assert len(corpus.load_parallel(spec, ["en", "fr"])) == 5  # only the first shard is read


# (en, fr) digit counts of the pairs below; a digit is one token (split_digits, no dummy prefix)
DIGIT_PAIRS = [(3, 3), (3, 3), (3, 3), (0, 4), (2, 1), (4, 4), (9, 1), (4, 4), (1, 1), (1, 1)]


def test_parallel_pairs_are_read_until_n_packed_sequences_exist(built, tmp_path, monkeypatch):
    """Packed by hand with min_len 4, max_len 8 (the authors' rule: join while both sides fit,
    close and drop a sequence with a side under min_len, skip a pair longer than max_len):
    A = pairs 0-1 (6, 6); B = pairs 2-4 (5, 8), pair 3's empty English side kept; C = pairs 5, 7
    (8, 8), pair 6 (9 tokens) skipped; pairs 8-9 (2, 2) are too short. Three sequences in all."""
    models = {lang: built["tokenizers"][lang] for lang in ("en", "fr")}
    sp = tokenizer.load_tokenizer(models["en"])
    assert len(sp.encode("7777")) == 4 and sp.encode("") == []
    pairs = [("7" * e, "5" * f) for e, f in DIGIT_PAIRS]
    root = translation_repo(tmp_path / "europarl", [pairs[:5], pairs[5:]])
    spec = {"source": "hub", "n_pairs": None,
            "hub": {"path": str(root), "name": "en-fr", "split": "train", "data_files": "en-fr/*.parquet",
                    "streaming": True, "columns": {"en": "translation.en", "fr": "translation.fr"}}}
    monkeypatch.setattr(corpus, "PARALLEL_CHUNK", 2)  # read two pairs at a time
    # n_parallel 2: after pairs 0-5 A and B are closed (C has begun) -> reading stops at 6 pairs
    df = corpus.load_parallel(spec, ["en", "fr"], models, n_parallel=2, min_len=4, max_len=8)
    assert list(zip(df["en"].str.len(), df["fr"].str.len())) == DIGIT_PAIRS[:6]
    out = tmp_path / "parallel.parquet"
    npz = tmp_path / "parallel.npz"
    corpus.parallel_corpus_job(job({"tokenizers": [models["en"], models["fr"]]}, [str(out)]), spec=spec,
                               languages=["en", "fr"], n_parallel=2, min_len=4, max_len=8)
    tokenizer.encode_parallel(pd.read_parquet(out), models, npz)
    packed = load_packed_parallel(npz, 4, 8)
    assert [(len(a), len(b)) for a, b in zip(packed["en"], packed["fr"])][:2] == [(6, 6), (5, 8)]
    # n_parallel 3: the whole source (C is the last sequence kept)
    assert len(corpus.load_parallel(spec, ["en", "fr"], models, n_parallel=3, min_len=4, max_len=8)) == 10
    with pytest.raises(LangskewError, match=r"only 3 packed parallel sequences .* from 10 pairs \(the source ran out\)"
                                            r".* asks for 4"):
        corpus.load_parallel(spec, ["en", "fr"], models, n_parallel=4, min_len=4, max_len=8)
    with pytest.raises(LangskewError, match=r"only 1 packed .* from 4 pairs \(n_pairs=4 reached\)"):
        corpus.load_parallel({**spec, "n_pairs": 4}, ["en", "fr"], models, n_parallel=2, min_len=4, max_len=8)


def test_corpus_job_streams_to_parquet_like_the_in_memory_path(tmp_path):
    spec = {"source": "local", "local": {"train": _numbered_docs(tmp_path)}, "test_fraction": 0.05}
    out = {"train": tmp_path / "train.parquet", "test": tmp_path / "test.parquet"}
    counts = corpus.write_corpus(spec, "en", out)
    docs = corpus.load_corpus(spec, "en")
    assert list(corpus.iter_texts(out["train"])) == docs["train"]
    assert list(corpus.iter_texts(out["test"])) == docs["test"]
    assert counts == {"train": len(docs["train"]), "test": len(docs["test"])}


def test_local_source_document_splits(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nline two\n\nsecond doc\n")
    (tmp_path / "b.txt").write_text("third doc")
    (tmp_path / "c.txt").write_text("held out")
    spec = {"source": "local", "local": {"train": [str(tmp_path / "[ab].txt")], "test": str(tmp_path / "c.txt"),
                                         "document_split": "blank_line"}}
    docs = corpus.load_corpus(spec, "en")
    assert docs["train"] == ["first doc\nline two", "second doc", "third doc"] and docs["test"] == ["held out"]
    spec["local"]["document_split"] = "file"
    spec["local"]["train"] = str(tmp_path / "a.txt")  # one path (not a list) is accepted too
    assert corpus.load_corpus(spec, "en")["train"] == ["first doc\nline two\n\nsecond doc"]
    spec["local"]["train"] = [str(tmp_path / "missing*.txt")]
    with pytest.raises(LangskewError, match="missing"):
        corpus.load_corpus(spec, "en")


def test_local_parallel_files(tmp_path):
    (tmp_path / "en.txt").write_text("Hello.\nGood night.\n")
    (tmp_path / "fr.txt").write_text("Bonjour.\nBonne nuit.\n")
    spec = {"source": "local", "local": {"files": {"en": str(tmp_path / "en.txt"), "fr": str(tmp_path / "fr.txt")}}}
    df = corpus.load_parallel(spec, ["en", "fr"])
    assert df.to_dict("records") == [{"en": "Hello.", "fr": "Bonjour."}, {"en": "Good night.", "fr": "Bonne nuit."}]


def test_stream_dtype():
    assert tokenizer.stream_dtype(16384) == "uint16" and tokenizer.stream_dtype(70000) == "uint32"


def test_tokenizer_keeps_text_as_it_is_by_default(tmp_path):
    """The authors' SentencePiece settings: identity normalisation, no dummy prefix, whitespace kept."""
    docs = [f"Anna  sees the ﬁne house {i}.\n  Ｂob waves." for i in range(200)]
    model = tmp_path / "xx.model"
    tokenizer.train_tokenizer(docs, model, 300, {"hard_vocab_limit": False})
    sp = tokenizer.load_tokenizer(model)
    text = "Anna  sees  ﬁne Ｂob"
    assert sp.decode(sp.encode(text)) == text  # NFKC would give "fine", "B"; whitespace collapse "Anna sees"
    assert not sp.encode("Anna", out_type=str)[0].startswith("▁")  # no dummy prefix
    nfkc = tmp_path / "nfkc.model"
    tokenizer.train_tokenizer(docs, nfkc, 300, {"hard_vocab_limit": False, "normalization_rule_name": "nmt_nfkc",
                                                "add_dummy_prefix": True, "remove_extra_whitespaces": True})
    sp2 = tokenizer.load_tokenizer(nfkc)
    assert sp2.decode(sp2.encode(text)) == "Anna sees fine Bob"
    assert sp2.encode("Anna", out_type=str)[0].startswith("▁")


def test_tokenizer_trainer_spec_matches_the_authors(tmp_path):
    """The trainer spec inside the authors' .model files: pieces up to 99 characters,
    whitespace-only pieces allowed, character coverage 0.9995 (read back from the ModelProto)."""
    from sentencepiece import sentencepiece_model_pb2

    docs = [f"Anna    sees the house number {i}.    Bob waves." for i in range(200)]
    model = tmp_path / "xx.model"
    tokenizer.train_tokenizer(docs, model, 300, {"hard_vocab_limit": False})
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.read_bytes())
    spec = proto.trainer_spec
    assert spec.max_sentencepiece_length == 99
    assert spec.allow_whitespace_only_pieces is True
    assert spec.character_coverage == pytest.approx(0.9995)
    assert (spec.split_digits, spec.byte_fallback, spec.model_type) == (True, True, spec.BPE)
    assert not proto.normalizer_spec.add_dummy_prefix and proto.normalizer_spec.name == "identity"
