"""Project Gutenberg cleaning (langskew.gutenberg) and the corpus job's cleaning and
deduplication before the train/test split (langskew.study_b.corpus), on hand-written editions;
the shipped novels of benchmarks/texts come out of an edition rebuilt around them unchanged."""
import logging
import re
from pathlib import Path

import pandas as pd
import pytest

from helpers import load_benchmark, rejected
from hub_fixtures import split_shards_repo
from langskew.errors import LangskewError
from langskew.gutenberg import Book, EditionError, clean_book
from langskew.study_b import corpus

START = "*** START OF THE PROJECT GUTENBERG EBOOK {} ***"
END = "*** END OF THE PROJECT GUTENBERG EBOOK {} ***"
LICENCE = "*** START: FULL LICENSE ***\nProject Gutenberg-tm is synonymous with the free distribution\n"


def edition(title: str, body: str, header: str = "", newline: str = "\n") -> str:
    """A Gutenberg edition in miniature: header, START, body, END, licence."""
    text = (f"The Project Gutenberg EBook of {title}\n{header}\nThis eBook is for the use of anyone anywhere\n\n"
            f"{START.format(title.upper())}\n\nProduced by Volunteers\n\n{body}\n\n"
            f"End of the Project Gutenberg EBook of {title}\n\n{END.format(title.upper())}\n\n{LICENCE}")
    return text.replace("\n", newline)


def test_the_book_alone_one_paragraph_per_line():
    raw = edition("Tides", "It was a dark and\n  stormy night.\n\n\nThe sea rose.", newline="\r\n")
    assert clean_book(raw) == Book("It was a dark and stormy night.\n\nThe sea rose.\n", marked=True)
    assert clean_book(raw, strict=True).text == "It was a dark and stormy night.\n\nThe sea rose.\n"


@pytest.mark.parametrize("spelling", ["ETEXT", "E-BOOK", "EBOOK"])
def test_older_marker_spellings_are_markers(spelling):
    raw = (f"Header.\n***START OF THE PROJECT GUTENBERG {spelling} OLD***\nAn old\ntext.\n"
           f"***END OF THE PROJECT GUTENBERG {spelling} OLD***\nLicence.\n")
    assert clean_book(raw, strict=True) == Book("An old text.\n", marked=True)


def test_a_text_without_markers_is_kept_whole_unless_strict():
    raw = "A plain book.\r\nWith no header,\n\nand no licence.\n"
    assert clean_book(raw) == Book(raw, marked=False)
    with pytest.raises(EditionError, match="plain.txt: expected one START and one END .* found 0 and 0"):
        clean_book(raw, "plain.txt", strict=True)


def test_one_marker_only_cuts_at_that_marker():
    body = "Chapter one.\n\nChapter two."
    only_start = f"Header.\n{START.format('A')}\n{body}\n"
    only_end = f"{body}\n{END.format('A')}\n{LICENCE}"
    assert clean_book(only_start).text == clean_book(only_end).text == "Chapter one.\n\nChapter two.\n"
    with pytest.raises(EditionError, match="found 1 and 0"):
        clean_book(only_start, strict=True)


def test_an_edition_with_nothing_but_licence_is_emptied():
    raw = f"{START.format('X')}\nProduced by Nobody\n{END.format('X')}\n{LICENCE}"
    assert clean_book(raw) == Book("", marked=True)
    with pytest.raises(EditionError, match="no text between the markers"):
        clean_book(raw, "x.txt", strict=True)


def test_clean_records_removes_licence_and_duplicates_and_counts_them():
    a = edition("Tides", "The sea rose.")                     # "The sea rose.\n": 14 bytes
    a_again_other_header = edition("Tides", "The sea\nrose.", header="Release date: 1999")  # same book
    b = edition("Moors", "The wind blew.")                    # "The wind blew.\n": 15 bytes
    plain = "No markers here.\n"                               # 17 bytes, kept whole
    empty = f"{START.format('E')}\n{END.format('E')}\n"
    records = [("1", a), ("1", b), ("2", a_again_other_header), ("3", b), ("4", plain), ("5", empty), ("6", plain)]
    report = corpus.CleanReport()
    kept = list(corpus.clean_records(records, "gutenberg", True, report))
    assert kept == ["The sea rose.\n", "The wind blew.\n", plain]
    assert (report.read, report.kept, report.duplicate_id, report.duplicate_text, report.unmarked, report.emptied) \
        == (7, 3, 1, 2, 2, 1)  # id "1" twice; "2" (same book, other header) and the second plain text by content
    raw = [len(t.encode()) for _, t in records]
    assert report.bytes_read == sum(raw)
    assert report.bytes_kept == 14 + 15 + 17
    # duplicates: b as read (its id came before), the cleaned "The sea rose.\n" and the plain text
    assert report.bytes_duplicate == raw[1] + 14 + 17
    assert report.bytes_cleaned == (raw[0] - 14) + (raw[2] - 14) + (raw[3] - 15) + raw[5]
    assert report.bytes_read - report.bytes_kept == report.bytes_cleaned + report.bytes_duplicate
    summary = report.summary("en")
    assert "7 documents read" in summary and "removed 4 documents" in summary and "2 documents without" in summary


def test_without_cleaning_or_dedup_every_record_passes():
    records = [("1", "x"), ("1", "x")]
    assert list(corpus.clean_records(records)) == ["x", "x"]
    with pytest.raises(LangskewError, match="clean 'strip' is not one of none, gutenberg"):
        list(corpus.clean_records(records, "strip"))


def _gutenberg_repo(tmp_path, copies: int = 30):
    """A manu/project_gutenberg-style repo: 40 distinct books, one book in ``copies`` copies
    under other ids and headers, one id twice, and one text without markers."""
    ids, texts = [], []
    for i in range(40):
        ids.append(str(i))
        texts.append(edition(f"Book {i}", f"Story number {i}.\nIt ends."))
    for c in range(copies):
        ids.append(f"copy{c}")
        texts.append(edition("Twice Told", "The same story.", header=f"Release {c}"))
    ids += ["7", "plain"]
    texts += [edition("Book 7", "Another edition of seven."), "A text with no markers.\n"]
    half = len(ids) // 2
    frames = [pd.DataFrame({"id": ids[:half], "text": texts[:half]}), pd.DataFrame({"id": ids[half:], "text": texts[half:]})]
    return split_shards_repo(tmp_path / "project_gutenberg", {"en": frames})


def _spec(root, **extra):
    hub = {"path": str(root), "text_column": "text", "id_column": "id", "splits": {"train": "en", "test": None},
           "data_files": "data/en-*.parquet", "streaming": True}
    return {"source": "hub", "hub": hub, "test_fraction": 0.3, "holdout_seed": 0, **extra}


def test_corpus_job_cleans_and_deduplicates_before_the_split(tmp_path, caplog):
    root = _gutenberg_repo(tmp_path)
    raw = corpus.load_corpus(_spec(root), "en")  # as read before: licence in, copies on both sides
    assert len(raw["train"] + raw["test"]) == 72 and sum("Gutenberg" in d for d in raw["train"] + raw["test"]) == 71
    assert sum("The same story." in d for d in raw["test"]) > 0 and sum("The same story." in d for d in raw["train"]) > 0
    with caplog.at_level(logging.INFO, logger="langskew.study_b.corpus"):
        docs = corpus.load_corpus(_spec(root, clean="gutenberg", dedup=True), "en")
    everything = docs["train"] + docs["test"]
    assert sorted(everything) == sorted([f"Story number {i}. It ends.\n" for i in range(40)]
                                        + ["The same story.\n", "A text with no markers.\n"])
    assert not set(docs["train"]) & set(docs["test"]) and 0 < len(docs["test"]) < 30
    log = caplog.text
    assert "72 documents read" in log and "42 kept" in log and "removed 30 documents" in log
    assert "1 duplicates by id and 29 by content" in log and "1 documents without Gutenberg markers kept whole" in log


def test_the_paper_english_corpus_is_cleaned_and_deduplicated(root):
    from langskew.config import load_config

    paper_raw = load_config(root / "config.yaml", validate=False)
    en = load_config(root / "config.yaml")["study_b"]["languages"]["en"]
    assert (en["clean"], en["dedup"], en["hub"]["id_column"]) == ("gutenberg", True, "id")
    msg = rejected(paper_raw, lambda c: c["study_b"]["languages"]["en"].update(clean="strip"))
    assert "clean" in msg and "gutenberg" in msg


# -- the shipped novels: an edition rebuilt around each comes out as the shipped file ------------
def _hard_wrap(paragraph: str, width: int = 70) -> str:
    """Wrap at single spaces between words (so that joining the lines with one space restores it)."""
    lines, start, last = [], 0, None
    for m in re.finditer(r"(?<=\S) (?=\S)", paragraph):
        if m.start() - start > width and last is not None:
            lines.append(paragraph[start:last])
            start = last + 1
        last = m.start()
    lines.append(paragraph[start:])
    return "\n".join(lines)


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parents[1]
                                                           / "benchmarks" / "texts").glob("*.txt")))
def test_shipped_novels_come_out_byte_for_byte(root, name):
    shipped = (root / "benchmarks" / "texts" / name).read_text(encoding="utf-8")
    body = "\n\n".join(_hard_wrap(p) for p in shipped.rstrip("\n").split("\n\n"))
    raw = "\ufeff" + edition(name, body, newline="\r\n")
    assert clean_book(raw, name, strict=True).text == shipped
    assert load_benchmark("public_domain_text").book_text(raw, name) == shipped
