"""Plain text, Markdown (sections by heading) and HTML (reduced to Markdown-like text)."""

from __future__ import annotations

import re

from indexers.documents import LoadedDocument, LoaderError, Location, Section

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), else the most likely legacy encoding."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise LoaderError("the file is not text in any known encoding") from None
        return str(best)


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return re.sub(r"[ \t\f\v]+\n", "\n", text)


def load_plain(data: bytes, filename: str) -> LoadedDocument:
    return LoadedDocument("text/plain", [Section(_clean(decode(data)))])


def markdown_sections(text: str) -> tuple[list[Section], str | None]:
    """Split on headings; each section's location carries its heading path ("A > B")."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    buf: list[str] = []
    title = None

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            heading = " > ".join(h for _, h in path) or None
            sections.append(Section(body, Location(section=heading)))
        buf.clear()

    in_code = False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        m = None if in_code else _HEADING.match(line)
        if m:
            flush()
            level, heading = len(m.group(1)), m.group(2).strip()
            path[:] = [(lv, h) for lv, h in path if lv < level] + [(level, heading)]
            title = title or heading
        else:
            buf.append(line)
    flush()
    return sections, title


def load_markdown(data: bytes, filename: str) -> LoadedDocument:
    sections, title = markdown_sections(_clean(decode(data)))
    return LoadedDocument("text/markdown", sections, title=title)


_BLOCKS = (
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "aside",
    "nav",
    "table",
    "ul",
    "ol",
    "pre",
    "blockquote",
    "dl",
    "dt",
    "dd",
    "figure",
    "figcaption",
    "form",
    "hr",
    "address",
)


def html_to_markdown(html: str) -> tuple[str, str | None]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else None
    for tag in soup(["head", "script", "style", "noscript", "template", "svg"]):
        tag.extract()
    for level in range(1, 7):
        for h in soup.find_all(f"h{level}"):
            h.replace_with(f"\n\n{'#' * level} {h.get_text(' ', strip=True)}\n\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for tr in soup.find_all("tr"):
        cells = [c.get_text(" ", strip=True) for c in tr.find_all(["td", "th"])]
        tr.replace_with("\n" + " | ".join(c for c in cells if c) + "\n")
    for li in soup.find_all("li"):
        li.insert_before("\n- ")
        li.insert_after("\n")
    for tag in soup.find_all(_BLOCKS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    text = soup.get_text()
    lines = [re.sub(r"[ \t\xa0]+", " ", line).strip() for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text, title


def load_html(data: bytes, filename: str) -> LoadedDocument:
    text, title = html_to_markdown(decode(data))
    sections, first_heading = markdown_sections(text)
    return LoadedDocument("text/html", sections, title=title or first_heading)
