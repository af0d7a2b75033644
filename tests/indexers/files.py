"""Real small files of every supported kind, made in the tests (no fixtures on disk)."""

from __future__ import annotations

import io
import json
from email.message import EmailMessage


def pdf(pages: list[str | None], title: str = "Service Agreement") -> bytes:
    """A PDF whose pages have the given text; ``None`` makes a page with no text layer."""
    from fpdf import FPDF

    doc = FPDF()
    doc.set_title(title)
    for text in pages:
        doc.add_page()
        if text is None:
            doc.rect(20, 20, 100, 60)  # a drawing, no text: what a scan looks like to a text extractor
            continue
        doc.set_font("helvetica", size=12)
        doc.multi_cell(0, 8, text)
    return bytes(doc.output())


def docx(title: str, sections: list[tuple[str, list[str]]], table: list[list[str]] | None = None) -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.add_heading(title, level=0)
    for heading, paragraphs in sections:
        document.add_heading(heading, level=1)
        for p in paragraphs:
            document.add_paragraph(p)
    if table:
        t = document.add_table(rows=len(table), cols=len(table[0]))
        for i, row in enumerate(table):
            for j, value in enumerate(row):
                t.cell(i, j).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def xlsx(sheets: dict[str, list[list[object]]]) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def eml(subject: str, body: str, attachments: list[tuple[str, bytes, str]]) -> bytes:
    msg = EmailMessage()
    msg["From"] = "ana.lopez@example.com"
    msg["To"] = "legal@example.com"
    msg["Date"] = "Mon, 17 Mar 2025 10:00:00 +0000"
    msg["Subject"] = subject
    msg.set_content(body)
    for name, data, ctype in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return bytes(msg)


def html(title: str, body: str) -> bytes:
    return f"<html><head><title>{title}</title><style>p {{color: red}}</style></head><body>{body}<script>alert('x')</script></body></html>".encode()


def png_with_text(lines: list[str]) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (1400, 120 + 90 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=56)
    for i, line in enumerate(lines):
        draw.text((40, 40 + 90 * i), line, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jsonl(records: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode()
