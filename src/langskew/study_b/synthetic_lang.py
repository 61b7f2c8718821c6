"""A synthetic English-like language and a French-like second language.

Both render the same *content* (a small semantic frame: who does what to how many of
which things, where, when) with their own lexicon and word order: French-like puts most
adjectives after the noun, has grammatical gender (le/la/un/une, adjective agreement),
a compound past tense ("a vu") and contractions ("du", "au"). Names, digits and
punctuation are shared between the two, so an anchored vocabulary has real anchors.

Documents are short stories with a protagonist, a tense and a topic (a few favoured
nouns), with Zipf-distributed word choice, so a tiny GPT's perplexity keeps dropping
with more data. Everything is deterministic given the seed.

``richness`` (an integer k >= 1) sets the size of the lexicon: the hand-written nouns,
adjectives and verbs below, then (k - 1) times as many generated pseudo-words per class
(:func:`lexicon`), built from English-like and French-like syllables with each grammar's
morphology (plurals, gender, agreement, tenses). The generated words come from a fixed seed,
not the documents' seed, so every corpus and the parallel data of one richness share one
lexicon, and the lexicon of k is the start of the lexicon of k + 1. Word choice stays Zipf
over the whole lexicon, so a richer lexicon adds a longer tail of rarer words. Richness 1
is the hand-written lexicon alone and gives the same documents as before the knob existed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from langskew.errors import LangskewError

GRAMMARS = ("en", "fr")

# (en singular, en plural, fr singular, fr plural, fr gender)
NOUNS = [
    ("dog", "dogs", "chien", "chiens", "m"), ("cat", "cats", "chat", "chats", "m"),
    ("house", "houses", "maison", "maisons", "f"), ("tree", "trees", "arbre", "arbres", "m"),
    ("apple", "apples", "pomme", "pommes", "f"), ("book", "books", "livre", "livres", "m"),
    ("river", "rivers", "rivière", "rivières", "f"), ("car", "cars", "voiture", "voitures", "f"),
    ("bird", "birds", "oiseau", "oiseaux", "m"), ("flower", "flowers", "fleur", "fleurs", "f"),
    ("child", "children", "enfant", "enfants", "m"), ("boat", "boats", "bateau", "bateaux", "m"),
    ("door", "doors", "porte", "portes", "f"), ("table", "tables", "table", "tables", "f"),
    ("horse", "horses", "cheval", "chevaux", "m"), ("garden", "gardens", "jardin", "jardins", "m"),
    ("letter", "letters", "lettre", "lettres", "f"), ("stone", "stones", "pierre", "pierres", "f"),
    ("friend", "friends", "ami", "amis", "m"), ("city", "cities", "ville", "villes", "f"),
    ("forest", "forests", "forêt", "forêts", "f"), ("window", "windows", "fenêtre", "fenêtres", "f"),
    ("bread", "breads", "pain", "pains", "m"), ("road", "roads", "route", "routes", "f"),
    ("king", "kings", "roi", "rois", "m"), ("queen", "queens", "reine", "reines", "f"),
    ("box", "boxes", "boîte", "boîtes", "f"), ("ship", "ships", "navire", "navires", "m"),
    ("mountain", "mountains", "montagne", "montagnes", "f"), ("song", "songs", "chanson", "chansons", "f"),
    ("key", "keys", "clé", "clés", "f"), ("hat", "hats", "chapeau", "chapeaux", "m"),
    ("cake", "cakes", "gâteau", "gâteaux", "m"), ("fish", "fish", "poisson", "poissons", "m"),
    ("school", "schools", "école", "écoles", "f"), ("bridge", "bridges", "pont", "ponts", "m"),
]
# (en, fr masculine, fr feminine, placed before the noun in French)
ADJECTIVES = [
    ("big", "grand", "grande", True), ("small", "petit", "petite", True), ("red", "rouge", "rouge", False),
    ("green", "vert", "verte", False), ("old", "vieux", "vieille", True), ("new", "nouveau", "nouvelle", True),
    ("happy", "heureux", "heureuse", False), ("dark", "sombre", "sombre", False),
    ("quiet", "calme", "calme", False), ("strange", "étrange", "étrange", False),
    ("white", "blanc", "blanche", False), ("black", "noir", "noire", False), ("blue", "bleu", "bleue", False),
    ("warm", "chaud", "chaude", False), ("cold", "froid", "froide", False), ("beautiful", "beau", "belle", True),
    ("heavy", "lourd", "lourde", False), ("long", "long", "longue", True),
]
# (en present 3sg, en past, fr present 3sg, fr past participle)
VERBS = [
    ("sees", "saw", "voit", "vu"), ("finds", "found", "trouve", "trouvé"), ("takes", "took", "prend", "pris"),
    ("likes", "liked", "aime", "aimé"), ("opens", "opened", "ouvre", "ouvert"), ("paints", "painted", "peint", "peint"),
    ("carries", "carried", "porte", "porté"), ("watches", "watched", "regarde", "regardé"),
    ("buys", "bought", "achète", "acheté"), ("loses", "lost", "perd", "perdu"), ("builds", "built", "construit", "construit"),
    ("follows", "followed", "suit", "suivi"), ("cleans", "cleaned", "nettoie", "nettoyé"),
    ("draws", "drew", "dessine", "dessiné"), ("hides", "hid", "cache", "caché"), ("counts", "counted", "compte", "compté"),
]
# (en, fr, article after the French preposition: "de" contracts with le/les)
PREPOSITIONS = [("near", "près de"), ("in", "dans"), ("under", "sous"), ("behind", "derrière"),
                ("next to", "à côté de"), ("on", "sur"), ("far from", "loin de")]
TIMES = [("yesterday", "hier"), ("in the morning", "le matin"), ("at night", "la nuit"),
         ("every day", "chaque jour"), ("after the rain", "après la pluie"), ("today", "aujourd'hui")]
NAMES = ["Anna", "Marco", "Lina", "Tom", "Sofia", "Hugo", "Mila", "Oscar", "Nora", "Felix", "Ivy", "Leo",
         "Clara", "Max", "Zoe", "Paul", "Ada", "Emil", "Rosa", "Jonas"]
# (en, fr) sentence connectives
CONNECTIVES = [("then", "puis"), ("later", "plus tard"), ("suddenly", "soudain"), ("so", "alors"),
               ("and", "et"), ("but", "mais")]
SAY = ("said that", "says that", "a dit que", "dit que")
WAS = ("was", "is", "était", "est")
VOWELS = tuple("aeiouéèêâîôûh")
# masculine adjectives placed before the noun that take another form before a vowel
FR_BEFORE_VOWEL = {"beau": "bel", "vieux": "vieil", "nouveau": "nouvel"}


# ---------------------------------------------------------------------------------------
# The lexicon and its richness
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lexicon:
    """Nouns, adjectives and verbs of both grammars, entries shaped as NOUNS, ADJECTIVES, VERBS."""

    nouns: tuple[tuple[str, str, str, str, str], ...]
    adjectives: tuple[tuple[str, str, str, bool], ...]
    verbs: tuple[tuple[str, str, str, str], ...]


LEXICON_SEED = 0x1E81C0  # the generated words' seed: the same for every corpus and richness

# Syllable inventories: English-like (consonant clusters, -ck, -ng, ...) and French-like
# (ou, oi, an, é, ... and French endings), so a generated entry is spelled differently in each.
EN_ONSETS = ("b", "bl", "br", "d", "dr", "f", "fl", "fr", "g", "gl", "gr", "h", "j", "k", "l", "m", "n", "p", "pl",
             "pr", "r", "s", "sc", "sh", "sk", "sl", "sn", "sp", "st", "sw", "t", "th", "tr", "tw", "w", "wh")
EN_VOWELS = ("a", "e", "i", "o", "u", "ea", "ee", "oo", "ai", "oa")
EN_CODAS = ("b", "ck", "d", "ft", "g", "ld", "lk", "m", "mp", "nd", "ng", "nk", "nt", "p", "rk", "rn", "sk", "sh",
            "st", "t", "tch", "x")
EN_MIDDLE = ("", "", "n", "r", "l", "m")  # an inner syllable's coda
EN_NOUN_SUFFIXES = ("", "", "", "er", "et", "on")
EN_ADJ_SUFFIXES = ("", "y", "ish", "ful", "en", "ic")
FR_ONSETS = ("b", "br", "c", "ch", "cr", "d", "f", "fl", "g", "gr", "j", "l", "m", "n", "p", "pl", "qu", "r", "s",
             "t", "tr", "v", "vr")
FR_VOWELS = ("a", "ai", "an", "au", "é", "eu", "i", "in", "o", "oi", "on", "ou", "u")
FR_FEMININE_ENDINGS = ("ette", "elle", "ine", "ure", "ade", "ion", "erie", "ille", "ance")
FR_MASCULINE_ENDINGS = ("eau", "age", "on", "in", "ier", "oir", "ot", "and", "ail")
FR_ADJ_ENDINGS = ("ant", "ard", "in", "ot", "u", "é", "ent", "ais", "ble", "ique", "ide", "ore")
FR_LINKS = ("l", "r", "n", "t", "s", "v", "m", "d", "ch", "g")  # before an ending that starts with a vowel
FR_VERB_VOWELS = ("a", "ou", "i", "o", "eu", "u", "ai")
FR_VERB_CODAS = ("l", "r", "n", "t", "ss", "ch", "m", "d", "v", "p", "rd", "ng")


def _function_words() -> set[str]:
    """Every word of the fixed word lists, which a generated word must not be."""
    phrases = [w for pair in PREPOSITIONS + TIMES + CONNECTIVES for w in pair] + list(SAY) + list(WAS)
    phrases += [n.lower() for n in NAMES] + ["the a an le la les l un une du des au de d aux"]
    return {w for phrase in phrases for w in phrase.replace("'", " ").split()}


def _en_plural(word: str) -> str:
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        return word[:-1] + "ies"
    return word + "s"


def _en_past(stem: str) -> str:
    return stem + "d" if stem.endswith("e") else stem + "ed"


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _en_stem(rng: np.random.Generator) -> str:
    """One or two English-like syllables, the last closed by a consonant."""
    n = 1 + int(rng.random() < 0.5)
    word = ""
    for i in range(n):
        if i == 0 and rng.random() < 0.15:  # a word that starts with a vowel ("an ...")
            word += _pick(rng, ("a", "e", "i", "o", "u"))
        else:
            word += _pick(rng, EN_ONSETS) + _pick(rng, EN_VOWELS)
        word += _pick(rng, EN_MIDDLE) if i < n - 1 else _pick(rng, EN_CODAS)
    return word


def _en_entry(cls: str, rng: np.random.Generator) -> tuple[str, ...]:
    if cls == "noun":
        word = _en_stem(rng) + _pick(rng, EN_NOUN_SUFFIXES)
        return word, _en_plural(word)
    if cls == "adj":
        return (_en_stem(rng) + _pick(rng, EN_ADJ_SUFFIXES),)
    stem = _en_stem(rng)
    return _en_plural(stem), _en_past(stem)  # 3sg present (+s / +es), past (+ed)


def _fr_syllables(rng: np.random.Generator, n: int) -> str:
    return "".join(_pick(rng, FR_ONSETS) + _pick(rng, FR_VOWELS) for _ in range(n))


def _fr_word(rng: np.random.Generator, n: int, endings: tuple[str, ...]) -> str:
    """``n`` French-like syllables and an ending, joined by a consonant where the ending starts with a vowel."""
    ending = _pick(rng, endings)
    link = _pick(rng, FR_LINKS) if ending[0] in "aeiouéy" else ""
    return _fr_syllables(rng, n) + link + ending


def _fr_entry(cls: str, rng: np.random.Generator) -> tuple[Any, ...]:
    n = 1 + int(rng.random() < 0.4)
    if cls == "noun":
        gender = "f" if rng.random() < 0.5 else "m"
        sg = _fr_word(rng, n, FR_FEMININE_ENDINGS if gender == "f" else FR_MASCULINE_ENDINGS)
        return sg, sg + ("x" if sg.endswith("eau") else "s"), gender
    if cls == "adj":
        masc = _fr_word(rng, n, FR_ADJ_ENDINGS)
        fem = masc if masc.endswith("e") else masc + "e"
        return masc, fem, bool(rng.random() < 0.15)  # most French adjectives follow the noun
    stem = _fr_syllables(rng, n - 1) + _pick(rng, FR_ONSETS) + _pick(rng, FR_VERB_VOWELS) + _pick(rng, FR_VERB_CODAS)
    return stem + "e", stem + "é"  # present 3sg, past participle (first conjugation)


def _generated_block(rng: np.random.Generator, taken: set[str]) -> dict[str, list[tuple]]:
    """As many new nouns, adjectives and verbs as the hand-written lexicon has, every form of
    every word new (not in ``taken``, which grows). An entry is its English forms, then its
    French ones, as in NOUNS, ADJECTIVES and VERBS."""
    block: dict[str, list[tuple]] = {"noun": [], "adj": [], "verb": []}
    for cls, count in (("noun", len(NOUNS)), ("adj", len(ADJECTIVES)), ("verb", len(VERBS))):
        while len(block[cls]) < count:
            en, fr = _en_entry(cls, rng), _fr_entry(cls, rng)
            forms = {f for f in en + fr if isinstance(f, str) and len(f) > 1}
            if len(en[0]) < 3 or len(fr[0]) < 3 or forms & taken or set(en) & set(fr):
                continue
            taken |= forms
            block[cls].append(en + fr)
    return block


def check_richness(richness: Any, where: str = "richness") -> int:
    """``richness`` as an int; a LangskewError unless it is a whole number of at least 1."""
    integral = isinstance(richness, (int, np.integer)) or (isinstance(richness, float) and richness.is_integer())
    if isinstance(richness, bool) or not integral or richness < 1:
        raise LangskewError(f"{where} must be a whole number of at least 1 (1 - the hand-written lexicon, "
                            f"k - k times as many nouns, adjectives and verbs), got {richness!r}")
    return int(richness)


@functools.lru_cache(maxsize=None)
def lexicon(richness: int = 1) -> Lexicon:
    """The lexicon of ``richness`` k: the hand-written entries, then k - 1 blocks of generated
    ones (as many per block as there are hand-written entries of each class)."""
    k = check_richness(richness)
    nouns, adjectives, verbs = list(NOUNS), list(ADJECTIVES), list(VERBS)
    if k > 1:
        rng = np.random.default_rng(LEXICON_SEED)
        taken = _function_words() | {w for entry in NOUNS + ADJECTIVES + VERBS for w in entry if isinstance(w, str)}
        for _ in range(k - 1):
            block = _generated_block(rng, taken)
            nouns += block["noun"]
            adjectives += block["adj"]
            verbs += block["verb"]
    return Lexicon(tuple(nouns), tuple(adjectives), tuple(verbs))


def parallel_richness(parallel: dict, languages: dict) -> int:
    """Richness of the synthetic parallel sentences: ``parallel.synthetic.richness`` when given,
    else that of the parallel languages' synthetic corpora (so the pairs share their lexicon),
    which must then agree; 1 when no parallel language is synthetic."""
    given = (parallel.get("synthetic") or {}).get("richness")
    if given is not None:
        return check_richness(given, "study_b.parallel.synthetic.richness")
    found: dict[str, int] = {}
    for lang in parallel.get("languages") or []:
        spec = languages.get(lang) or {}
        if spec.get("source") == "synthetic":
            found[lang] = check_richness((spec.get("synthetic") or {}).get("richness", 1),
                                         f"study_b.languages.{lang}.synthetic.richness")
    if len(set(found.values())) > 1:
        values = ", ".join(f"{lang}: {k}" for lang, k in found.items())
        raise LangskewError(f"study_b.parallel.synthetic.richness is not set and the parallel languages' synthetic "
                            f"corpora have different richness ({values}); set it to the lexicon the pairs should use")
    return next(iter(found.values()), 1)


def _zipf(n: int, s: float = 1.0) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


@dataclass
class NP:
    """A noun phrase: noun index, count (1 = singular definite/indefinite), adjective or None."""

    noun: int
    count: int
    adj: int | None
    definite: bool


@dataclass
class Frame:
    """Language-independent content of one sentence."""

    form: str           # "act" (S V O [PP] [time]), "say" (S said that NP was ADJ), "count"
    subject: str | NP
    verb: int
    obj: NP
    place: tuple[int, NP] | None
    time: int | None
    connective: int | None
    past: bool


class Story:
    """Draws frames for one document: protagonist, topic nouns, tense."""

    def __init__(self, rng: np.random.Generator, lex: Lexicon | None = None):
        self.rng = rng
        self.lex = lex = lex or lexicon(1)
        self.name = NAMES[rng.choice(len(NAMES), p=_zipf(len(NAMES), 0.7))]
        self.friend = NAMES[rng.integers(len(NAMES))]
        self.topic = rng.choice(len(lex.nouns), size=4, replace=False, p=_zipf(len(lex.nouns), 0.8))
        self.past = bool(rng.random() < 0.6)
        self.noun_p = _zipf(len(lex.nouns), 1.1)
        self.adj_p = _zipf(len(lex.adjectives), 1.0)
        self.verb_p = _zipf(len(lex.verbs), 1.0)

    def noun(self) -> int:
        if self.rng.random() < 0.7:
            return int(self.rng.choice(self.topic))
        return int(self.rng.choice(len(self.lex.nouns), p=self.noun_p))

    def np_(self, allow_count: bool = True) -> NP:
        count = 1
        if allow_count and self.rng.random() < 0.25:
            count = int(self.rng.integers(2, 13))
        adj = int(self.rng.choice(len(self.lex.adjectives), p=self.adj_p)) if self.rng.random() < 0.5 else None
        return NP(self.noun(), count, adj, definite=bool(self.rng.random() < 0.6))

    def frame(self, first: bool) -> Frame:
        r = self.rng.random()
        form = "act" if r < 0.75 else ("say" if r < 0.9 else "count")
        subject: str | NP = self.name if self.rng.random() < 0.6 else (
            self.friend if self.rng.random() < 0.5 else self.np_(allow_count=False))
        place = None
        if self.rng.random() < 0.35:
            place = (int(self.rng.integers(len(PREPOSITIONS))), NP(self.noun(), 1, None, True))
        time = int(self.rng.integers(len(TIMES))) if self.rng.random() < 0.2 else None
        connective = None if first or self.rng.random() < 0.6 else int(self.rng.integers(len(CONNECTIVES)))
        obj = self.np_(allow_count=form != "say")
        if form == "say":
            obj.adj = int(self.rng.choice(len(self.lex.adjectives), p=self.adj_p))
        if form == "count":
            obj.count = int(self.rng.integers(2, 100))
        return Frame(form, subject, int(self.rng.choice(len(self.lex.verbs), p=self.verb_p)), obj, place, time,
                     connective, self.past)


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------
def _en_np(np_: NP, lex: Lexicon, with_adj: bool = True) -> str:
    noun = lex.nouns[np_.noun]
    word = noun[0] if np_.count == 1 else noun[1]
    adj = f"{lex.adjectives[np_.adj][0]} " if with_adj and np_.adj is not None else ""
    if np_.count > 1:
        return f"{np_.count} {adj}{word}"
    det = "the" if np_.definite else ("an" if (adj or word)[0] in "aeiou" else "a")
    return f"{det} {adj}{word}"


def _fr_adj(adj: int, gender: str, plural: bool, lex: Lexicon) -> str:
    form = lex.adjectives[adj][1] if gender == "m" else lex.adjectives[adj][2]
    if plural and not form.endswith(("s", "x")):
        form += "x" if form.endswith("eau") else "s"
    return form


def _fr_np(np_: NP, lex: Lexicon, with_adj: bool = True) -> str:
    _, _, sg, pl, gender = lex.nouns[np_.noun]
    plural = np_.count > 1
    word = pl if plural else sg
    if with_adj and np_.adj is not None:
        adj = _fr_adj(np_.adj, gender, plural, lex)
        if lex.adjectives[np_.adj][3]:
            if gender == "m" and not plural and word.startswith(VOWELS):
                adj = FR_BEFORE_VOWEL.get(adj, adj)  # le vieil ami, un bel oiseau
            word = f"{adj} {word}"
        else:
            word = f"{word} {adj}"
    if plural:
        return f"{np_.count} {word}"
    if np_.definite:
        det = "l'" if word.startswith(VOWELS) else ("le " if gender == "m" else "la ")
    else:
        det = "un " if gender == "m" else "une "
    return det + word


def _fr_after(prep: str, phrase: str) -> str:
    """French preposition + noun phrase: de + le/les contract (du, des), de elides before a
    vowel (d'un, d'une) but not before the elided article (de l'enfant)."""
    if prep.endswith("de"):
        if phrase.startswith("le "):
            return prep[:-2] + "du " + phrase[3:]
        if phrase.startswith("les "):
            return prep[:-2] + "des " + phrase[4:]
        if not phrase.startswith("l'") and phrase[0] in VOWELS:
            return prep[:-1] + "'" + phrase
    return f"{prep} {phrase}"


def render(frame: Frame, grammar: str, lex: Lexicon | None = None) -> str:
    """One sentence of ``frame`` in the ``en`` or ``fr`` grammar, its words from ``lex``
    (default: the hand-written lexicon, richness 1)."""
    if grammar not in GRAMMARS:
        raise LangskewError(f"synthetic grammar {grammar!r} is not one of {', '.join(GRAMMARS)}")
    lex = lex or lexicon(1)
    en = grammar == "en"

    def np_fn(np_: NP) -> str:
        return _en_np(np_, lex) if en else _fr_np(np_, lex)

    subj = frame.subject if isinstance(frame.subject, str) else np_fn(frame.subject)
    words: list[str] = []
    if frame.connective is not None:
        words.append(CONNECTIVES[frame.connective][0 if en else 1])
    if frame.time is not None and not en:
        words.append(TIMES[frame.time][1] + " ,")
    words.append(subj)
    if frame.form == "say":
        words.append(SAY[(0 if frame.past else 1) if en else (2 if frame.past else 3)])
        bare = NP(frame.obj.noun, 1, None, True)
        words.append(np_fn(bare))
        words.append(WAS[(0 if frame.past else 1) if en else (2 if frame.past else 3)])
        gender = lex.nouns[frame.obj.noun][4]
        words.append(lex.adjectives[frame.obj.adj][0] if en else _fr_adj(frame.obj.adj, gender, False, lex))
    else:
        verb = lex.verbs[frame.verb]
        if en:
            words.append(verb[1] if frame.past else verb[0])
        else:
            words.append(f"a {verb[3]}" if frame.past else verb[2])
        words.append(np_fn(frame.obj))
        if frame.place is not None:
            prep, place_np = frame.place
            words.append(f"{PREPOSITIONS[prep][0]} {_en_np(place_np, lex)}" if en
                         else _fr_after(PREPOSITIONS[prep][1], _fr_np(place_np, lex)))
    if frame.time is not None and en:
        words.append(TIMES[frame.time][0])
    text = " ".join(words).replace(" ,", ",") + "."
    return text[0].upper() + text[1:]


def documents(grammar: str, n: int, seed: int, min_sentences: int = 3, max_sentences: int = 9,
              richness: int = 1) -> Iterator[str]:
    """``n`` synthetic documents (short stories) in ``grammar`` with the lexicon of ``richness``;
    deterministic by seed."""
    lex = lexicon(check_richness(richness))
    rng = np.random.default_rng([int(seed), 0x5E7, GRAMMARS.index(grammar) if grammar in GRAMMARS else 99])
    for _ in range(int(n)):
        story = Story(rng, lex)
        k = int(rng.integers(min_sentences, max_sentences + 1))
        yield " ".join(render(story.frame(i == 0), grammar, lex) for i in range(k))


def parallel_sentences(grammars: tuple[str, str], n: int, seed: int, richness: int = 1) -> Iterator[tuple[str, str]]:
    """``n`` pairs of the same content rendered in both grammars (two-sentence snippets), with
    the lexicon of ``richness``."""
    lex = lexicon(check_richness(richness))
    rng = np.random.default_rng([int(seed), 0x9A2])
    for _ in range(int(n)):
        story = Story(rng, lex)
        frames = [story.frame(i == 0) for i in range(2)]
        yield tuple(" ".join(render(f, g, lex) for f in frames) for g in grammars)  # type: ignore[misc]
