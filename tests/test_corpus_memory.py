"""Study B's corpus steps read their inputs in bounded memory (benchmarks/corpus_throughput.py
measures the whole steps at 0.1 and 1 GB)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from langskew.study_b.corpus import file_documents, iter_texts, split_text


def _random_text(rng, n_chars: int) -> str:
    return "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz  \n"), size=n_chars))


def test_iter_texts_holds_one_row_group_not_the_file(tmp_path):
    """pyarrow pre-buffers every requested row group by default: the whole compressed column."""
    rng = np.random.default_rng(0)
    path = tmp_path / "train.parquet"
    docs = [_random_text(rng, 2000) for _ in range(200)]  # random letters: ~5 bits/char after compression
    with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as writer:
        for i in range(0, len(docs), 4):  # 50 row groups of ~8 kB, as the corpus step writes them
            writer.write_table(pa.table({"text": docs[i:i + 4]}))
    assert pq.ParquetFile(path).metadata.num_row_groups == 50
    peak, got = 0, []
    for doc in iter_texts(path, batch_rows=4):
        got.append(doc)
        peak = max(peak, pa.total_allocated_bytes())
    assert got == docs
    # the file is ~250 kB compressed; one row group with its decoded batch is ~20 kB
    assert peak < 100_000, peak


CASES = ["a\n\nb", "a\n  \n\tb\n", "\n\n\na\r\nb\r\n\r\nc", "one\ntwo\n \nthree\x0cfour\n\x0c\nfive",
         "x\u2028y\n\n\n", "", "  \n \n", "last line without newline"]


@pytest.mark.parametrize("text", CASES)
@pytest.mark.parametrize("mode", ["file", "blank_line", "line"])
def test_file_documents_cut_as_split_text(tmp_path, text, mode):
    path = tmp_path / "docs.txt"
    path.write_bytes(text.encode())
    assert list(file_documents(path, mode)) == split_text(path.read_text(encoding="utf-8"), mode)


def test_file_documents_read_line_by_line(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "big.txt"
    docs = [" ".join(_random_text(rng, 800).split()) for _ in range(4000)]  # ~3.2 MB in 4,000 documents
    path.write_text("\n\n".join(docs), encoding="utf-8")
    tracemalloc.start()
    try:
        n = sum(1 for _ in file_documents(path, "blank_line"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == len([d for d in docs if d])
    assert peak < 500_000, peak  # reading the file whole (as split_text needs) takes > 6 MB
