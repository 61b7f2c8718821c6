"""The public-domain books of benchmarks/texts: how they are cut from a Gutenberg edition
(on a small edition written out by hand) and what ships (every file listed, sized and free of
the Gutenberg licence, readable by the workflow's local source)."""
import re

import pytest

from helpers import load_benchmark
from langskew.study_b.corpus import local_documents

# a Gutenberg edition in miniature: BOM, CRLF, a header, a credit, hard-wrapped paragraphs,
# the closing line and the licence after the END marker
EDITION = (
    "\ufeffThe Project Gutenberg EBook of A Book, by Someone\r\n"
    "\r\n"
    "This eBook is for the use of anyone anywhere at no cost\r\n"
    "\r\n"
    "*** START OF THIS PROJECT GUTENBERG EBOOK A BOOK ***\r\n"
    "\r\n"
    "\r\n"
    "Produced by Some Volunteers\r\n"
    "\r\n"
    "A BOOK\r\n"
    "\r\n"
    "It was a dark and\r\n"
    "  stormy night; the rain\r\n"
    "fell in torrents.\r\n"
    "\r\n"
    "\r\n"
    "\r\n"
    "“Indeed,” said she.\r\n"
    "\r\n"
    "End of the Project Gutenberg EBook of A Book, by Someone\r\n"
    "\r\n"
    "*** END OF THIS PROJECT GUTENBERG EBOOK A BOOK ***\r\n"
    "\r\n"
    "*** START: FULL LICENSE ***\r\n"
    "Project Gutenberg-tm is synonymous with the free distribution\r\n"
)


@pytest.fixture(scope="module")
def prepare():
    return load_benchmark("public_domain_text")


def test_book_text_keeps_the_book_alone(prepare):
    assert prepare.book_text(EDITION) == (
        "A BOOK\n\nIt was a dark and stormy night; the rain fell in torrents.\n\n“Indeed,” said she.\n")


@pytest.mark.parametrize("edition, found", [
    (EDITION.replace("*** START OF THIS", "START OF THIS"), "found 0 and 1"),
    (EDITION.replace("*** END OF THIS", "END OF THIS"), "found 1 and 0"),
    (EDITION + "*** START OF THE PROJECT GUTENBERG EBOOK A BOOK ***\r\n", "found 2 and 1"),
])
def test_book_text_needs_one_pair_of_markers(prepare, edition, found):
    with pytest.raises(prepare.TextError, match=f"edition.txt: .*{found}"):
        prepare.book_text(edition, "edition.txt")


def test_book_text_refuses_an_empty_book(prepare):
    empty = "*** START OF THE PROJECT GUTENBERG EBOOK X ***\nProduced by Nobody\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\n"
    with pytest.raises(prepare.TextError, match="no text between the markers"):
        prepare.book_text(empty, "x.txt")


def test_each_book_needs_a_file_and_a_name(prepare, tmp_path):
    """FILE:NAME[:ENCODING] writes NAME.txt; a spec without a name is refused, not named after the encoding."""
    (tmp_path / "in.txt").write_text(EDITION.replace("\ufeff", "").replace("“", '"').replace("”", '"'),
                                     encoding="latin-1")
    prepare.main([f"{tmp_path / 'in.txt'}:book:latin-1", "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "book.txt").read_text(encoding="utf-8").startswith("A BOOK\n\nIt was a dark")
    for bad in (str(tmp_path / "in.txt"), f"{tmp_path / 'in.txt'}:", f"{tmp_path / 'in.txt'}:a:b:c"):
        with pytest.raises(SystemExit):
            prepare.main([bad, "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit):  # a bad spec after a good one: nothing is written
        prepare.main([f"{tmp_path / 'in.txt'}:book:latin-1", str(tmp_path / "in.txt"), "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()


def shipped(root):
    """(file, bytes, words) of each row of benchmarks/texts/README.md's table."""
    readme = (root / "benchmarks" / "texts" / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+\.txt)` \|.*\| ([\d,]+) \| ([\d,]+) \|$", readme, re.MULTILINE)
    return [(name, int(size.replace(",", "")), int(words.replace(",", ""))) for name, size, words in rows]


def test_every_shipped_book_is_listed_with_its_size(root):
    rows = shipped(root)
    folder = root / "benchmarks" / "texts"
    assert sorted(name for name, _, _ in rows) == sorted(p.name for p in folder.glob("*.txt"))
    for name, size, words in rows:
        text = (folder / name).read_text(encoding="utf-8")
        assert (len(text.encode()), len(text.split())) == (size, words), name
        assert "gutenberg" not in text.lower(), f"{name} still names the licence holder"
        assert "\r" not in text and "\ufeff" not in text


def test_the_local_source_reads_one_document_per_paragraph(root):
    folder = root / "benchmarks" / "texts"
    docs = list(local_documents({"train": str(folder / "carroll_alice_in_wonderland.txt"),
                                 "document_split": "blank_line"}, "train"))
    text = (folder / "carroll_alice_in_wonderland.txt").read_text(encoding="utf-8")
    assert len(docs) == text.count("\n\n") + 1
    assert all("\n" not in doc for doc in docs)
    assert docs[0] == "ALICE’S ADVENTURES IN WONDERLAND"
