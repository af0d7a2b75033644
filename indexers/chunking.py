"""Structure-aware chunking, sized in the embedder's tokens, with overlap.

Chunks never cross a section (page, heading, sheet), so each keeps one location for citations.
Inside a section, paragraph-like units are packed greedily up to ``max_tokens``; the next chunk
starts with the last ``overlap`` tokens of the previous one. A unit longer than a chunk is cut at
token boundaries into overlapping windows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from indexers.documents import LoadedDocument, Location, Section
from indexers.owner import OwnerThread

_PARAGRAPHS = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    location: Location
    tokens: int


def _merge(section: Location, unit: Location) -> Location:
    return Location(
        page=unit.page if unit.page is not None else section.page,
        section=unit.section or section.section,
        sheet=unit.sheet or section.sheet,
        row=unit.row if unit.row is not None else section.row,
    )


class Chunker:
    def __init__(
        self, tokenizer: Any, max_tokens: int = 200, overlap: int = 32, owner: OwnerThread | None = None
    ) -> None:
        """``owner``: the thread that owns ``tokenizer`` (the embedder's), when others use it too."""
        if not 0 <= overlap < max_tokens:
            raise ValueError("overlap must be smaller than max_tokens")
        self.tokenizer = tokenizer
        self.owner = owner
        self.max_tokens = max_tokens
        self.overlap = overlap

    def _encode(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        if self.owner is not None:
            return self.owner.call(self._encode_here, texts)
        return self._encode_here(texts)

    def _encode_here(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return list(zip(enc["input_ids"], enc["offset_mapping"], strict=True))

    def split(self, doc: LoadedDocument) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in doc.sections:
            chunks += self._split_section(section, len(chunks))
        return chunks

    def _units(self, section: Section) -> list[tuple[str, Location]]:
        if section.units:
            return [(t.strip(), _merge(section.location, loc)) for t, loc in section.units if t.strip()]
        return [(p.strip(), section.location) for p in _PARAGRAPHS.split(section.text) if p.strip()]

    def _split_section(self, section: Section, start: int) -> list[Chunk]:
        units = self._units(section)
        if not units:
            return []
        encoded = self._encode([u for u, _ in units])
        out: list[Chunk] = []
        pending: list[tuple[str, Location, int]] = []
        carry: tuple[str, int] = ("", 0)  # overlap taken from the previous chunk

        def flush() -> None:
            nonlocal pending, carry
            if not pending:
                return
            texts = ([carry[0]] if carry[1] else []) + [t for t, _, _ in pending]
            text = "\n".join(texts)
            out.append(Chunk(start + len(out), text, pending[0][1], carry[1] + sum(n for _, _, n in pending)))
            carry = self._tail(text)
            pending = []

        for (text, loc), (ids, offsets) in zip(units, encoded, strict=True):
            n = len(ids)
            if n > self.max_tokens:  # cut into overlapping windows at token boundaries
                flush()
                step = self.max_tokens - self.overlap
                for begin in range(0, n, step):
                    end = min(begin + self.max_tokens, n)
                    out.append(
                        Chunk(
                            start + len(out), text[offsets[begin][0] : offsets[end - 1][1]], loc, end - begin
                        )
                    )
                    if end == n:
                        break
                carry = ("", 0)
                continue
            if pending and carry[1] + sum(p[2] for p in pending) + n > self.max_tokens:
                flush()
            if carry[1] + n > self.max_tokens:
                carry = ("", 0)
            pending.append((text, loc, n))
        flush()
        return out

    def _tail(self, text: str) -> tuple[str, int]:
        """The last ``overlap`` tokens of ``text`` (as text) and their count."""
        if not self.overlap:
            return "", 0
        ids, offsets = self._encode([text])[0]
        if len(ids) <= self.overlap:
            return text, len(ids)
        begin = len(ids) - self.overlap
        return text[offsets[begin][0] :], self.overlap
