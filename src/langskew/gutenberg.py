"""Project Gutenberg plain-text editions: the book alone, without the Gutenberg header, footer
and licence (used by the Study B corpus job and by ``benchmarks/public_domain_text.py``).

What is kept of an edition is the text between its ``*** START OF ... PROJECT GUTENBERG
EBOOK`` (or ``ETEXT``, ``E-BOOK``) and ``*** END OF ...`` markers: the header before the first (title page of the
edition, "This eBook is for the use of anyone anywhere ...") and the footer and full licence
after the second go, and so do the paragraphs between them that are a credit ("Produced by
...", "E-text prepared by ...", "Transcribed from ...") or name Gutenberg (the closing "End of
the Project Gutenberg EBook of ..." line; the licence allows the public-domain text to be used
freely once the licence and every reference to Project Gutenberg are removed). Line endings
become ``\\n`` and the hard-wrapped lines of a paragraph are joined into one line, paragraphs
separated by one blank line.

:func:`clean_book` is that one cleaning. ``strict=True`` (the benchmark's novels, each a
known edition) refuses a text without exactly one START marker and one END marker after it;
``strict=False`` (a hub dataset of books) keeps a text without any marker whole and unchanged
(``Book.marked`` is False, so the caller counts it), and cuts a text with one marker only, or
several, after its first START and before the first END that follows it.

No maintained library does this: the ``gutenberg`` package (last release 2021) strips headers
with a longer list of historical markers but installs a metadata cache and its dependencies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from langskew.errors import LangskewError

# the markers of the editions since about 2000: "EBOOK", earlier "ETEXT" and "E-BOOK" spellings
START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG E-?(BOOK|TEXT)", re.IGNORECASE)
END = re.compile(r"^\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG E-?(BOOK|TEXT)", re.IGNORECASE)
CREDIT = re.compile(r"^(Produced by|E-text prepared by|Transcribed from)", re.IGNORECASE)


class EditionError(LangskewError):
    """A text is not a Project Gutenberg plain-text edition with one pair of markers (strict mode)."""


@dataclass(frozen=True)
class Book:
    """A cleaned book: ``text`` (empty when nothing but licence was between the markers) and
    whether markers were found (False: the text was kept whole, as it came)."""

    text: str
    marked: bool


def _lines(raw: str) -> list[str]:
    return raw.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _body(lines: list[str], name: str, strict: bool) -> list[str] | None:
    """The lines between the markers; None when there is no marker (non-strict only)."""
    starts = [i for i, line in enumerate(lines) if START.match(line)]
    ends = [i for i, line in enumerate(lines) if END.match(line)]
    if strict and (len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]):
        raise EditionError(f"{name}: expected one START and one END marker after it, "
                           f"found {len(starts)} and {len(ends)}")
    if not starts and not ends:
        return None
    first = starts[0] + 1 if starts else 0
    after = [i for i in ends if i >= first]
    return lines[first:after[0] if after else len(lines)]


def _paragraphs(body: list[str]) -> list[str]:
    """Paragraphs of the body, each one line; credits and paragraphs naming Gutenberg left out."""
    paragraphs, block = [], []
    for line in body + [""]:
        if line.strip():
            block.append(line.strip())
            continue
        if block:
            para = " ".join(block)
            block = []
            if not CREDIT.match(para) and "gutenberg" not in para.lower():
                paragraphs.append(para)
    return paragraphs


def clean_book(raw: str, name: str = "text", strict: bool = False) -> Book:
    """The book of one Gutenberg edition, one paragraph per line with blank lines between
    (see the module docstring); ``name`` names the text in errors."""
    body = _body(_lines(raw), name, strict)
    if body is None:
        return Book(raw, marked=False)
    paragraphs = _paragraphs(body)
    if not paragraphs:
        if strict:
            raise EditionError(f"{name}: no text between the markers")
        return Book("", marked=True)
    return Book("\n\n".join(paragraphs) + "\n", marked=True)


CLEANINGS = ("none", "gutenberg")
