"""The data model shared by loaders, the chunker and the store.

A loader turns raw bytes into a ``LoadedDocument``: metadata plus ``Section``s that keep where their
text came from (page, section heading, sheet and row), so every chunk can be cited precisely.
Attachments (an e-mail's files) are child documents of their own, linked by ``parent_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Location:
    page: int | None = None
    section: str | None = None
    sheet: str | None = None
    row: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Section:
    """A structural unit of text (a page, a heading's body, a sheet's rows, an e-mail body)."""

    text: str
    location: Location = field(default_factory=Location)
    #: Paragraph-like units inside the section; the chunker never splits inside one unless it is
    #: longer than a chunk. Empty means "split ``text`` on blank lines".
    units: list[tuple[str, Location]] = field(default_factory=list)


@dataclass
class Attachment:
    filename: str
    data: bytes
    content_type: str | None = None


@dataclass
class LoadedDocument:
    content_type: str
    sections: list[Section] = field(default_factory=list)
    title: str | None = None
    page_count: int | None = None
    attachments: list[Attachment] = field(default_factory=list)
    #: Problems that did not stop the document (e.g. pages that need OCR), shown to the user.
    warnings: list[str] = field(default_factory=list)
    extra_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections if s.text.strip())


class LoaderError(Exception):
    """A file cannot be read (unsupported type, corrupt, empty); the batch goes on without it."""


def contextual_text(
    text: str, title: str | None = None, section: str | None = None, sheet: str | None = None
) -> str:
    """A chunk as the embedder and a reranker read it: a header line with its document's title and
    its section / sheet, then the text. Much of a chunk's topic is in those (a clause rarely repeats
    the contract's name); the stored and cited text stays the chunk alone."""
    header = " - ".join(x for x in (title, section, sheet) if x)
    return f"{header}\n{text}" if header else text
