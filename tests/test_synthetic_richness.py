"""Study B's synthetic grammar with a richer lexicon (``richness``): richness 1 is the generator as
it was before the knob (compared with that code, not with stored strings; its French with the
"d'l'" and "le vieux ami" spellings corrected), a richer lexicon has
more words and word types, generated words follow each grammar's morphology, and the config
checks the value and the parallel pairs' richness."""
import copy
import importlib.util
import subprocess
import sys

import pytest

from conftest import ROOT
from helpers import rejected
from langskew.config import validate_config
from langskew.errors import LangskewError
from langskew.study_b import corpus
from langskew.study_b import synthetic_lang as sl

#: The last commit whose synthetic_lang.py had no richness (the generator richness 1 must reproduce).
BEFORE_RICHNESS = "6b0313d67d3922c72e95b997c5ba58c630150c34"
MODULE = "src/langskew/study_b/synthetic_lang.py"


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    """The generator from before the knob, loaded from ``git show`` as a separate module."""
    try:
        source = subprocess.run(["git", "show", f"{BEFORE_RICHNESS}:{MODULE}"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"no git history with the generator before richness ({err})")
    path = tmp_path_factory.mktemp("old") / "synthetic_lang_before_richness.py"
    path.write_text(source)
    name = "synthetic_lang_before_richness"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    assert not hasattr(module, "lexicon")  # really the old code
    return module


LIAISON = {"beau": "bel", "vieux": "vieil", "nouveau": "nouvel"}


def mended(texts, grammar):
    """The old generator's French with its two spelling errors corrected in the text: "d'l'"
    (de l'enfant) and a masculine adjective before a vowel (le vieil ami); English as it was."""
    import re

    if grammar != "fr":
        return list(texts)
    return [re.sub(r"\b(le|un|Le|Un) (beau|vieux|nouveau) (?=[aeiouéèêâîôûh])",
                   lambda m: f"{m.group(1)} {LIAISON[m.group(2)]} ", t.replace("d'l'", "de l'")) for t in texts]


@pytest.mark.parametrize("grammar", ["en", "fr"])
def test_richness_1_gives_the_documents_of_the_old_generator(old, grammar):
    for seed in (0, 7):
        assert list(sl.documents(grammar, 300, seed, richness=1)) == mended(old.documents(grammar, 300, seed), grammar)
    assert list(sl.documents(grammar, 50, 3, 1, 4)) == mended(old.documents(grammar, 50, 3, 1, 4), grammar)
    assert list(sl.documents(grammar, 50, 3)) == mended(old.documents(grammar, 50, 3), grammar)  # the default


def test_richness_1_gives_the_parallel_sentences_of_the_old_generator(old):
    for grammars in (("en", "fr"), ("fr", "en"), ("en", "en")):
        pairs = list(old.parallel_sentences(grammars, 300, 2))
        sides = [mended([p[i] for p in pairs], grammars[i]) for i in range(2)]
        assert list(sl.parallel_sentences(grammars, 300, 2, richness=1)) == list(zip(*sides))


def _forms(entries, columns):
    return {e[c] for e in entries for c in columns}


def test_richness_4_has_four_times_the_entries_and_more_word_types():
    one, four = sl.lexicon(1), sl.lexicon(4)
    assert (len(one.nouns), len(one.adjectives), len(one.verbs)) == (36, 18, 16)
    assert (len(four.nouns), len(four.adjectives), len(four.verbs)) == (4 * 36, 4 * 18, 4 * 16)
    for cls, en_cols, fr_cols in (("nouns", (0, 1), (2, 3)), ("adjectives", (0,), (1, 2)), ("verbs", (0, 1), (2, 3))):
        a, b = getattr(one, cls), getattr(four, cls)
        assert b[:len(a)] == a  # the hand-written entries first, unchanged
        for col in en_cols[:1] + fr_cols[:1]:  # distinct entries, in each language
            assert len({e[col] for e in b}) == 4 * len({e[col] for e in a})
    types = {k: {w for doc in sl.documents("en", 2000, 0, richness=k) for w in doc.split()} for k in (1, 4)}
    assert len(types[4]) > 2 * len(types[1])
    fr = {k: {w for doc in sl.documents("fr", 2000, 0, richness=k) for w in doc.split()} for k in (1, 4)}
    assert len(fr[4]) > 2 * len(fr[1])


def test_deterministic_and_the_lexicon_does_not_depend_on_the_document_seed():
    a = list(sl.documents("en", 40, 5, richness=4))
    assert a == list(sl.documents("en", 40, 5, richness=4))
    assert a != list(sl.documents("en", 40, 6, richness=4))
    assert a != list(sl.documents("en", 40, 5, richness=1))
    before = sl.lexicon(4)
    generated = _forms(before.nouns[36:], (0, 1))
    for seed in (5, 6, 123):  # every seed's documents draw on the same generated nouns
        words = {w.strip(".,").lower() for doc in sl.documents("en", 300, seed, richness=4) for w in doc.split()}
        assert words & generated
    sl.lexicon.cache_clear()  # built again from scratch: the same words
    assert sl.lexicon(4) == before and sl.lexicon(4) is not before
    assert sl.lexicon(8).nouns[:4 * 36] == before.nouns  # richness k's lexicon starts richness k + 1's


def test_generated_words_follow_each_grammars_morphology():
    lex = sl.lexicon(4)
    for en_sg, en_pl, fr_sg, fr_pl, gender in lex.nouns[36:]:
        assert en_pl in (en_sg + "s", en_sg + "es", en_sg[:-1] + "ies")
        assert fr_pl == fr_sg + ("x" if fr_sg.endswith("eau") else "s") and gender in ("m", "f")
    for en, masc, fem, before in lex.adjectives[18:]:
        assert fem in (masc, masc + "e") and (fem == masc) == masc.endswith("e") and isinstance(before, bool)
    for en_3sg, en_past, fr_3sg, fr_pp in lex.verbs[16:]:
        stem = en_past[:-2]
        assert en_past == stem + "ed" and en_3sg in (stem + "s", stem + "es")
        assert fr_3sg[:-1] == fr_pp[:-1] and fr_3sg.endswith("e") and fr_pp.endswith("é")
    genders = {n[4] for n in lex.nouns[36:]}
    assert genders == {"m", "f"}


def test_french_agreement_with_generated_words():
    lex = sl.lexicon(4)
    noun = next(i for i in range(36, len(lex.nouns)) if lex.nouns[i][4] == "f")
    adj = next(i for i in range(18, len(lex.adjectives))
               if lex.adjectives[i][1] != lex.adjectives[i][2] and not lex.adjectives[i][3])
    verb = 16
    en_sg, en_pl, fr_sg, fr_pl, _ = lex.nouns[noun]
    en_adj, masc, fem, _ = lex.adjectives[adj]
    frame = sl.Frame("act", "Anna", verb, sl.NP(noun, 1, adj, True), None, None, None, False)
    assert sl.render(frame, "fr", lex) == f"Anna {lex.verbs[verb][2]} la {fr_sg} {fem}."
    assert sl.render(frame, "en", lex) == f"Anna {lex.verbs[verb][0]} the {en_adj} {en_sg}."
    frame = sl.Frame("act", "Anna", verb, sl.NP(noun, 3, adj, False), None, None, None, True)
    assert sl.render(frame, "fr", lex) == f"Anna a {lex.verbs[verb][3]} 3 {fr_pl} {fem}s."
    assert sl.render(frame, "en", lex) == f"Anna {lex.verbs[verb][1]} 3 {en_adj} {en_pl}."
    masculine = next(i for i in range(36, len(lex.nouns)) if lex.nouns[i][4] == "m")
    frame = sl.Frame("say", "Tom", 0, sl.NP(masculine, 1, adj, True), None, None, None, False)
    assert sl.render(frame, "fr", lex).endswith(f"{lex.nouns[masculine][2]} est {masc}.")
    with pytest.raises(IndexError):  # a generated word's index is not in the hand-written lexicon
        sl.render(frame, "fr")


def test_generated_english_and_french_words_never_meet():
    lex = sl.lexicon(16)
    en = _forms(lex.nouns[36:], (0, 1)) | _forms(lex.adjectives[18:], (0,)) | _forms(lex.verbs[16:], (0, 1))
    fr = _forms(lex.nouns[36:], (2, 3)) | _forms(lex.adjectives[18:], (1, 2)) | _forms(lex.verbs[16:], (2, 3))
    assert not en & fr
    hand = _forms(sl.NOUNS, (0, 1, 2, 3)) | _forms(sl.ADJECTIVES, (0, 1, 2)) | _forms(sl.VERBS, (0, 1, 2, 3))
    assert not (en | fr) & hand
    assert len(_forms(lex.nouns[36:], (0,))) == len(lex.nouns) - 36  # no two generated nouns alike


@pytest.mark.parametrize("bad", [0, -1, 1.5, "x", True, None])
def test_bad_richness_is_refused(bad):
    with pytest.raises(LangskewError, match="whole number of at least 1"):
        list(sl.documents("en", 1, 0, richness=bad))
    with pytest.raises(LangskewError, match="richness"):
        sl.lexicon(bad)


def test_corpus_and_parallel_sources_pass_the_richness():
    spec = {"source": "synthetic", "synthetic": {"grammar": "en", "n_documents": {"train": 30, "test": 5},
                                                 "seed": 1, "richness": 4}}
    docs = corpus.load_corpus(spec, "en")["train"]
    assert docs == list(sl.documents("en", 30, 1000, richness=4))  # seed * 1000 + the train split
    par = {"source": "synthetic", "n_pairs": 20, "synthetic": {"seed": 2, "richness": 4}}
    pairs = corpus.load_parallel(par, ["en", "fr"])
    assert list(pairs.itertuples(index=False, name=None)) == list(sl.parallel_sentences(("en", "fr"), 20, 2, 4))
    par["synthetic"]["richness"] = None  # not resolved by the workflow: the default lexicon
    pairs = corpus.load_parallel(par, ["en", "fr"])
    assert list(pairs.itertuples(index=False, name=None)) == list(sl.parallel_sentences(("en", "fr"), 20, 2))


def test_parallel_richness_follows_the_languages():
    syn = {"source": "synthetic", "synthetic": {"n_documents": {"train": 1, "test": 1}}}
    langs = {"en": copy.deepcopy(syn), "fr": copy.deepcopy(syn), "de": {"source": "local"}}
    par = {"languages": ["en", "fr"], "synthetic": {"seed": 2}}
    assert sl.parallel_richness(par, langs) == 1
    for lang in ("en", "fr"):
        langs[lang]["synthetic"]["richness"] = 4
    assert sl.parallel_richness(par, langs) == 4
    assert sl.parallel_richness({**par, "languages": ["de", "fr"]}, langs) == 4  # de is not synthetic
    assert sl.parallel_richness({**par, "languages": ["de", "xx"]}, langs) == 1
    langs["fr"]["synthetic"]["richness"] = 2
    with pytest.raises(LangskewError, match=r"en: 4, fr: 2"):
        sl.parallel_richness(par, langs)
    assert sl.parallel_richness({**par, "synthetic": {"richness": 3}}, langs) == 3  # given: no inference


# --- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, 1.5, "x"])
def test_config_refuses_a_bad_richness(demo_raw, bad):
    msg = rejected(demo_raw, lambda c: c["study_b"]["languages"]["fr"]["synthetic"].update(richness=bad))
    assert "config key 'study_b.languages.fr.synthetic.richness'" in msg
    msg = rejected(demo_raw, lambda c: c["study_b"]["parallel"]["synthetic"].update(richness=bad))
    assert "config key 'study_b.parallel.synthetic.richness'" in msg
    with pytest.raises(LangskewError, match="richness"):  # the job's own check of the same value
        corpus.synthetic_documents({"n_documents": {"train": 1}, "richness": bad}, "train", "fr")


def test_config_fills_the_default_and_checks_the_parallel_richness(demo_raw):
    cfg = validate_config(copy.deepcopy(demo_raw))
    assert cfg["study_b"]["languages"]["en"]["synthetic"]["richness"] == 1
    assert cfg["study_b"]["parallel"]["synthetic"]["richness"] is None  # inferred from the languages

    def both(k):
        def mutate(c):
            for lang, value in zip(("en", "fr"), k):
                c["study_b"]["languages"][lang]["synthetic"]["richness"] = value
        return mutate
    cfg = copy.deepcopy(demo_raw)
    both((4, 4))(cfg)
    validate_config(cfg)
    assert sl.parallel_richness(cfg["study_b"]["parallel"], cfg["study_b"]["languages"]) == 4
    msg = rejected(demo_raw, both((4, 2)))
    assert "config key 'study_b.parallel.synthetic.richness'" in msg and "en: 4, fr: 2" in msg
    cfg = copy.deepcopy(demo_raw)
    both((4, 2))(cfg)
    cfg["study_b"]["parallel"]["synthetic"]["richness"] = 2  # set: the pairs use fr's lexicon
    validate_config(cfg)
