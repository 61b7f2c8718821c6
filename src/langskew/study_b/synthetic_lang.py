"""A synthetic English-like language and a French-like second language.

Both render the same *content* (a small semantic frame: who does what to how many of
which things, where, when) with their own lexicon and word order: French-like puts most
adjectives after the noun, has grammatical gender (le/la/un/une, adjective agreement),
a compound past tense ("a vu") and contractions ("du", "au"). Names, digits and
punctuation are shared between the two, so an anchored vocabulary has real anchors.

Documents are short stories with a protagonist, a tense and a topic (a few favoured
nouns), with Zipf-distributed word choice, so a tiny GPT's perplexity keeps dropping
with more data. Everything is deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

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

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.name = NAMES[rng.choice(len(NAMES), p=_zipf(len(NAMES), 0.7))]
        self.friend = NAMES[rng.integers(len(NAMES))]
        self.topic = rng.choice(len(NOUNS), size=4, replace=False, p=_zipf(len(NOUNS), 0.8))
        self.past = bool(rng.random() < 0.6)
        self.noun_p = _zipf(len(NOUNS), 1.1)
        self.adj_p = _zipf(len(ADJECTIVES), 1.0)
        self.verb_p = _zipf(len(VERBS), 1.0)

    def noun(self) -> int:
        if self.rng.random() < 0.7:
            return int(self.rng.choice(self.topic))
        return int(self.rng.choice(len(NOUNS), p=self.noun_p))

    def np_(self, allow_count: bool = True) -> NP:
        count = 1
        if allow_count and self.rng.random() < 0.25:
            count = int(self.rng.integers(2, 13))
        adj = int(self.rng.choice(len(ADJECTIVES), p=self.adj_p)) if self.rng.random() < 0.5 else None
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
            obj.adj = int(self.rng.choice(len(ADJECTIVES), p=self.adj_p))
        if form == "count":
            obj.count = int(self.rng.integers(2, 100))
        return Frame(form, subject, int(self.rng.choice(len(VERBS), p=self.verb_p)), obj, place, time,
                     connective, self.past)


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------
def _en_np(np_: NP, with_adj: bool = True) -> str:
    noun = NOUNS[np_.noun]
    word = noun[0] if np_.count == 1 else noun[1]
    adj = f"{ADJECTIVES[np_.adj][0]} " if with_adj and np_.adj is not None else ""
    if np_.count > 1:
        return f"{np_.count} {adj}{word}"
    det = "the" if np_.definite else ("an" if (adj or word)[0] in "aeiou" else "a")
    return f"{det} {adj}{word}"


def _fr_adj(adj: int, gender: str, plural: bool) -> str:
    form = ADJECTIVES[adj][1] if gender == "m" else ADJECTIVES[adj][2]
    if plural and not form.endswith(("s", "x")):
        form += "x" if form.endswith("eau") else "s"
    return form


def _fr_np(np_: NP, with_adj: bool = True) -> str:
    _, _, sg, pl, gender = NOUNS[np_.noun]
    plural = np_.count > 1
    word = pl if plural else sg
    if with_adj and np_.adj is not None:
        adj = _fr_adj(np_.adj, gender, plural)
        word = f"{adj} {word}" if ADJECTIVES[np_.adj][3] else f"{word} {adj}"
    if plural:
        return f"{np_.count} {word}"
    if np_.definite:
        det = "l'" if word.startswith(VOWELS) else ("le " if gender == "m" else "la ")
    else:
        det = "un " if gender == "m" else "une "
    return det + word


def _fr_after(prep: str, phrase: str) -> str:
    """French preposition + noun phrase with the de + le/les contractions."""
    if prep.endswith("de"):
        if phrase.startswith("le "):
            return prep[:-2] + "du " + phrase[3:]
        if phrase.startswith("les "):
            return prep[:-2] + "des " + phrase[4:]
        if phrase.startswith(("l'",)) or phrase[0] in VOWELS:
            return prep[:-1] + "'" + phrase
    return f"{prep} {phrase}"


def render(frame: Frame, grammar: str) -> str:
    """One sentence of ``frame`` in the ``en`` or ``fr`` grammar."""
    if grammar not in GRAMMARS:
        raise LangskewError(f"synthetic grammar {grammar!r} is not one of {', '.join(GRAMMARS)}")
    en = grammar == "en"
    np_fn = _en_np if en else _fr_np
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
        gender = NOUNS[frame.obj.noun][4]
        words.append(ADJECTIVES[frame.obj.adj][0] if en else _fr_adj(frame.obj.adj, gender, False))
    else:
        verb = VERBS[frame.verb]
        if en:
            words.append(verb[1] if frame.past else verb[0])
        else:
            words.append(f"a {verb[3]}" if frame.past else verb[2])
        words.append(np_fn(frame.obj))
        if frame.place is not None:
            prep, place_np = frame.place
            words.append(f"{PREPOSITIONS[prep][0]} {_en_np(place_np)}" if en
                         else _fr_after(PREPOSITIONS[prep][1], _fr_np(place_np)))
    if frame.time is not None and en:
        words.append(TIMES[frame.time][0])
    text = " ".join(words).replace(" ,", ",") + "."
    return text[0].upper() + text[1:]


def documents(grammar: str, n: int, seed: int, min_sentences: int = 3, max_sentences: int = 9) -> Iterator[str]:
    """``n`` synthetic documents (short stories) in ``grammar``; deterministic by seed."""
    rng = np.random.default_rng([int(seed), 0x5E7, GRAMMARS.index(grammar) if grammar in GRAMMARS else 99])
    for _ in range(int(n)):
        story = Story(rng)
        k = int(rng.integers(min_sentences, max_sentences + 1))
        yield " ".join(render(story.frame(i == 0), grammar) for i in range(k))


def parallel_sentences(grammars: tuple[str, str], n: int, seed: int) -> Iterator[tuple[str, str]]:
    """``n`` pairs of the same content rendered in both grammars (two-sentence snippets)."""
    rng = np.random.default_rng([int(seed), 0x9A2])
    for _ in range(int(n)):
        story = Story(rng)
        frames = [story.frame(i == 0) for i in range(2)]
        yield tuple(" ".join(render(f, g) for f in frames) for g in grammars)  # type: ignore[misc]
