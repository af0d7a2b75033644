"""Chunks respect sections, fit the token budget, overlap, and keep their locations."""

from __future__ import annotations

from indexers.chunking import Chunker
from indexers.documents import LoadedDocument, Location, Section


def count(chunker: Chunker, text: str) -> int:
    return len(chunker.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_chunks_fit_and_overlap(chunker: Chunker) -> None:
    paragraphs = [
        f"Paragraph {i} says the supplier must deliver item {i} before day {i * 3}." for i in range(30)
    ]
    doc = LoadedDocument("text/plain", [Section("\n\n".join(paragraphs), Location(page=4))])
    chunks = chunker.split(doc)
    assert len(chunks) > 3
    for c in chunks:
        assert count(chunker, c.text) <= chunker.max_tokens + 2  # joining newlines may merge/split a token
        assert c.location.page == 4
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        tail = prev.text.split()[-2:]
        assert " ".join(tail) in nxt.text  # the next chunk starts with the previous one's tail
    joined = " ".join(c.text for c in chunks)
    assert all(p in joined for p in paragraphs)


def test_chunks_never_cross_sections(chunker: Chunker) -> None:
    doc = LoadedDocument(
        "text/markdown",
        [Section("Alpha text.", Location(section="A")), Section("Beta text.", Location(section="B"))],
    )
    chunks = chunker.split(doc)
    assert [(c.text, c.location.section) for c in chunks] == [("Alpha text.", "A"), ("Beta text.", "B")]
    assert [c.ordinal for c in chunks] == [0, 1]


def test_long_unit_is_windowed(chunker: Chunker) -> None:
    words = " ".join(f"w{i}" for i in range(400))
    chunks = chunker.split(LoadedDocument("text/plain", [Section(words)]))
    assert len(chunks) >= 4
    assert all(c.tokens <= chunker.max_tokens for c in chunks)
    assert "w0" in chunks[0].text and "w399" in chunks[-1].text


def test_rows_keep_their_row_numbers(chunker: Chunker) -> None:
    units = [(f"Client: C{i}; Amount: {i * 10}", Location(sheet="S", row=i + 2)) for i in range(40)]
    chunks = chunker.split(LoadedDocument("x", [Section("", Location(sheet="S"), units)]))
    assert chunks[0].location == Location(sheet="S", row=2)
    assert all(c.location.sheet == "S" for c in chunks)
    assert chunks[1].location.row > 2
