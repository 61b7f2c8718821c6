"""Prepare public-domain books as plain text for the Study B miniature search (``--text``).

Each input is a Project Gutenberg plain-text edition. What is kept is the book alone, cut by
the cleaning the Study B corpus job applies to a hub dataset of Gutenberg books
(:func:`langskew.gutenberg.clean_book`): the text between the ``*** START OF ...`` and
``*** END OF ...`` markers, without the "Produced by ..." credit and any other line that
names Project Gutenberg (its licence allows the public-domain text to be used freely once
the licence and every reference to Project Gutenberg are removed). Line endings become
``\\n`` and the hard-wrapped lines of a paragraph are joined into one line, so that a
paragraph is one document for ``document_split: blank_line`` (or ``line``). Here an edition
must have exactly one pair of markers.

    python benchmarks/public_domain_text.py 1342-0.txt:pride_and_prejudice 1661-8.txt:sherlock_holmes:latin-1 ... \\
        --out benchmarks/texts

Which books ship with the repository, and from where, is in ``benchmarks/texts/README.md``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from langskew.gutenberg import EditionError as TextError  # noqa: F401 (what book_text raises)
from langskew.gutenberg import clean_book


def book_text(raw: str, name: str = "text") -> str:
    """The book between the Gutenberg markers, one paragraph per line, blank lines between
    (:func:`langskew.gutenberg.clean_book`, strict: one START and one END marker required)."""
    return clean_book(raw, name, strict=True).text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("books", nargs="+", help="FILE:NAME[:ENCODING], a Gutenberg plain-text file, the output's "
                    "name and the file's encoding (utf-8 by default; the older editions: latin-1)")
    ap.add_argument("--out", type=Path, required=True, help="folder of the NAME.txt files")
    args = ap.parse_args(argv)
    books = [spec.split(":") for spec in args.books]
    for spec, parts in zip(args.books, books):  # every spec checked before any file is written
        if len(parts) not in (2, 3) or not all(parts):
            ap.error(f"{spec!r}: give FILE:NAME[:ENCODING]")
    args.out.mkdir(parents=True, exist_ok=True)
    for parts in books:
        path, name, encoding = (parts + ["utf-8"])[:3]
        text = book_text(Path(path).read_text(encoding=encoding), path)
        (args.out / f"{name}.txt").write_text(text, encoding="utf-8")
        print(f"{name}.txt: {len(text.encode()):,} bytes, {len(text.split()):,} words, "
              f"{text.count(chr(10) + chr(10)) + 1:,} paragraphs")


if __name__ == "__main__":
    main()
