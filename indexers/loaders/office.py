"""DOCX (headings → sections, tables → rows) and XLSX (each row with its headers)."""

from __future__ import annotations

from io import BytesIO

from indexers.documents import LoadedDocument, Location, Section

MAX_ROWS = 200_000


def load_docx(data: bytes, filename: str) -> LoadedDocument:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(BytesIO(data))
    doc = LoadedDocument(
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        title=document.core_properties.title or None,
    )
    path: list[tuple[int, str]] = []
    units: list[tuple[str, Location]] = []

    def flush() -> None:
        if units:
            heading = " > ".join(h for _, h in path) or None
            doc.sections.append(
                Section("\n\n".join(u for u, _ in units), Location(section=heading), list(units))
            )
            units.clear()

    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            level = None
            if style == "Title":
                level = 0
                doc.title = doc.title or text
            elif style.startswith("Heading"):
                digits = style.removeprefix("Heading").strip()
                level = int(digits) if digits.isdigit() else 1
            if level is not None:
                flush()
                path[:] = [(lv, h) for lv, h in path if lv < level] + [(level, text)]
                doc.title = doc.title or text
            else:
                units.append((text, Location()))
        elif isinstance(block, Table):
            for row in block.rows:
                cells = []
                for cell in row.cells:
                    value = cell.text.strip()
                    if value and (not cells or cells[-1] != value):  # merged cells repeat
                        cells.append(value)
                if cells:
                    units.append((" | ".join(cells), Location()))
    flush()
    return doc


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def rows_section(rows: list[list[str]], sheet: str | None, first_row: int = 1) -> Section | None:
    """Render rows as ``header: value`` lines, one unit per row, located by sheet and row number."""
    header_index = next((i for i, r in enumerate(rows) if any(r)), None)
    if header_index is None:
        return None
    headers = [h or f"column {i + 1}" for i, h in enumerate(rows[header_index])]
    units: list[tuple[str, Location]] = []
    for offset, row in enumerate(rows[header_index + 1 :], start=header_index + 1):
        pairs = [
            f"{headers[i] if i < len(headers) else f'column {i + 1}'}: {v}" for i, v in enumerate(row) if v
        ]
        if pairs:
            units.append(("; ".join(pairs), Location(sheet=sheet, row=first_row + offset)))
    if not units:  # a header-only sheet still says something
        units.append(
            ("; ".join(h for h in headers if h), Location(sheet=sheet, row=first_row + header_index))
        )
    return Section("\n".join(u for u, _ in units), Location(sheet=sheet), units)


def load_xlsx(data: bytes, filename: str) -> LoadedDocument:
    import openpyxl

    book = openpyxl.load_workbook(BytesIO(data), read_only=True, data_only=True)
    doc = LoadedDocument(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        title=book.properties.title or None,
        page_count=len(book.sheetnames),
    )
    try:
        for sheet in book.worksheets:
            rows: list[list[str]] = []
            for i, row in enumerate(sheet.iter_rows(values_only=True)):
                if i >= MAX_ROWS:
                    doc.warnings.append(f"sheet {sheet.title}: only the first {MAX_ROWS} rows were read")
                    break
                rows.append([_cell(v) for v in row])
            section = rows_section(rows, sheet.title)
            if section:
                doc.sections.append(section)
    finally:
        book.close()
    return doc


def load_pptx(data: bytes, filename: str) -> LoadedDocument:
    """Slides in order, each a section located by its number (``page``), text from its shapes."""
    import re
    import zipfile
    from xml.etree import ElementTree

    archive = zipfile.ZipFile(BytesIO(data))
    slides = sorted(
        (n for n in archive.namelist() if re.fullmatch(r"ppt/slides/slide\d+\.xml", n)),
        key=lambda n: int(re.search(r"(\d+)", n.rsplit("/", 1)[1]).group(1)),
    )
    ns = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
    doc = LoadedDocument(
        "application/vnd.openxmlformats-officedocument.presentationml.presentation", page_count=len(slides)
    )
    for number, name in enumerate(slides, start=1):
        root = ElementTree.fromstring(archive.read(name))
        paragraphs = []
        for para in root.iter(f"{ns}p"):
            text = "".join(t.text or "" for t in para.iter(f"{ns}t")).strip()
            if text:
                paragraphs.append(text)
        if paragraphs:
            doc.title = doc.title or paragraphs[0]
            units = [(p, Location(page=number)) for p in paragraphs]
            doc.sections.append(Section("\n".join(paragraphs), Location(page=number), units))
    return doc
