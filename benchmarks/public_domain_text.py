"""Prepare public-domain books as plain text for the Study B miniature search (``--text``).

Each input is a Project Gutenberg plain-text edition. What is kept is the book alone: the
text between the ``*** START OF ...`` and ``*** END OF ...`` markers, without the
"Produced by ..." credit and any other line that names Project Gutenberg (its licence
allows the public-domain text to be used freely once the licence and every reference to
Project Gutenberg are removed). Line endings become ``\\n`` and the hard-wrapped lines of a
paragraph are joined into one line, so that a paragraph is one document for
``document_split: blank_line`` (or ``line``).

    python benchmarks/public_domain_text.py 1342-0.txt:pride_and_prejudice 1661-8.txt:sherlock_holmes:latin-1 ... \\
        --out benchmarks/texts

Which books ship with the repository, and from where, is in ``benchmarks/texts/README.md``.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG EBOOK", re.IGNORECASE)
END = re.compile(r"^\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG EBOOK", re.IGNORECASE)
CREDIT = re.compile(r"^(Produced by|E-text prepared by|Transcribed from)", re.IGNORECASE)


class TextError(Exception):
    """A file is not a Project Gutenberg plain-text edition this script understands."""


def book_text(raw: str, name: str = "text") -> str:
    """The book between the Gutenberg markers, one paragraph per line, blank lines between."""
    lines = raw.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    starts = [i for i, line in enumerate(lines) if START.match(line)]
    ends = [i for i, line in enumerate(lines) if END.match(line)]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise TextError(f"{name}: expected one START and one END marker after it, "
                        f"found {len(starts)} and {len(ends)}")
    body = lines[starts[0] + 1:ends[0]]
    paragraphs, block = [], []
    for line in body + [""]:
        if line.strip():
            block.append(line.strip())
            continue
        if block:
            para = " ".join(block)
            block = []
            # a credit paragraph ("Produced by ...") and the closing "End of the Project
            # Gutenberg EBook of ..." line go with the licence
            if not CREDIT.match(para) and "gutenberg" not in para.lower():
                paragraphs.append(para)
    if not paragraphs:
        raise TextError(f"{name}: no text between the markers")
    return "\n\n".join(paragraphs) + "\n"


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
