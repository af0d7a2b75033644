"""Every loader on real small files; corrupt and unknown files give clear per-file errors."""

from __future__ import annotations

import json

import pytest

from indexers.documents import LoaderError
from indexers.loaders import DOCX, EML, PDF, XLSX, detect_content_type, load
from tests.indexers import files
from tests.ocr import expect_ocr, require_ocr


def test_plain_text_and_encoding() -> None:
    doc = load("Línea uno.\n\nSegunda línea.".encode("latin-1"), "notas.txt")
    assert doc.content_type == "text/plain"
    assert "Línea uno" in doc.text and "Segunda" in doc.text


def test_markdown_sections_keep_heading_path() -> None:
    doc = load(b"# Contract\nIntro.\n## Payment\nPay in 30 days.\n## Term\nTwo years.", "c.md")
    assert doc.title == "Contract"
    assert [s.location.section for s in doc.sections] == ["Contract", "Contract > Payment", "Contract > Term"]


def test_html_drops_scripts_and_keeps_structure() -> None:
    doc = load(
        files.html(
            "Policy",
            "<h1>Privacy</h1><p>We keep data 5 years.</p><table><tr><th>Item</th><th>Days</th></tr><tr><td>Logs</td><td>30</td></tr></table>",
        ),
        "p.html",
    )
    assert doc.title == "Policy"
    assert "alert" not in doc.text and "color" not in doc.text
    assert "Logs | 30" in doc.text
    assert doc.sections[0].location.section == "Privacy"


def test_pdf_pages_and_missing_text_layer() -> None:
    data = files.pdf(
        ["The supplier shall deliver within ten days.", None, "Termination requires 60 days notice."]
    )
    assert detect_content_type(data, "scan.bin") == PDF
    doc = load(data, "agreement.pdf")
    assert doc.page_count == 3 and doc.title == "Service Agreement"
    assert {s.location.page for s in doc.sections} == {1, 3}
    if expect_ocr():  # page 2 is a drawing: OCR runs on it and finds no text
        assert doc.extra_metadata["ocr_pages"] == [2]
        assert doc.warnings == ["page 2: OCR found no text"]
    else:
        assert doc.extra_metadata["needs_ocr_pages"] == [2]
        assert len(doc.warnings) == 1 and "needs OCR" in doc.warnings[0]


def test_docx_headings_and_tables() -> None:
    data = files.docx(
        "Lease",
        [("Rent", ["Rent is 900 EUR per month."]), ("Deposit", ["Two months."])],
        [["Item", "Cost"], ["Parking", "50"]],
    )
    assert detect_content_type(data, "x.zip") == DOCX
    doc = load(data, "lease.docx")
    assert doc.title == "Lease"
    sections = {s.location.section: s.text for s in doc.sections}
    assert "Rent is 900 EUR" in sections["Lease > Rent"]
    assert "Parking | 50" in doc.text


def test_xlsx_rows_carry_headers_sheet_and_row() -> None:
    data = files.xlsx(
        {
            "Invoices": [["Number", "Client", "Amount"], ["F-1", "Acme", 1200], ["F-2", "Globex", 80.5]],
            "Empty": [],
        }
    )
    assert detect_content_type(data, "book") == XLSX
    doc = load(data, "ledger.xlsx")
    section = doc.sections[0]
    assert section.location.sheet == "Invoices"
    texts = {loc.row: t for t, loc in section.units}
    assert texts[2] == "Number: F-1; Client: Acme; Amount: 1200"
    assert texts[3].endswith("Amount: 80.5")


def test_csv_rows() -> None:
    doc = load(b"name;role\nAna;judge\nLuis;clerk\n", "staff.csv")
    assert [t for t, _ in doc.sections[0].units] == ["name: Ana; role: judge", "name: Luis; role: clerk"]


def test_eml_body_and_attachments() -> None:
    inner = files.pdf(["Annex A: penalties of 5% per week of delay."])
    data = files.eml(
        "Contrato revisado",
        "Adjunto el anexo firmado.",
        [("anexo.pdf", inner, "application/pdf"), ("notes.txt", b"call Monday", "text/plain")],
    )
    assert detect_content_type(data, "mail.eml") == EML
    doc = load(data, "mail.eml")
    assert doc.title == "Contrato revisado"
    assert "From: ana.lopez@example.com" in doc.text and "Adjunto el anexo" in doc.text
    assert [(a.filename, a.content_type) for a in doc.attachments] == [
        ("anexo.pdf", "application/pdf"),
        ("notes.txt", "text/plain"),
    ]
    assert load(doc.attachments[0].data, "anexo.pdf").sections[0].text.startswith("Annex A")


def test_json_and_jsonl_records() -> None:
    doc = load(
        json.dumps([{"case": "C-1", "party": {"name": "Acme"}}, {"case": "C-2"}]).encode(), "cases.json"
    )
    units = [t for t, _ in doc.sections[0].units]
    assert units[0] == "case: C-1\nparty.name: Acme"
    doc = load(files.jsonl([{"q": "a"}, {"q": "b"}]) + b"\n{broken", "rows.jsonl")
    assert len(doc.sections[0].units) == 2 and "line 3" in doc.warnings[0]


def test_pptx_slides_become_pages() -> None:
    import io
    import zipfile

    def slide(*texts: str) -> str:
        runs = "".join(f"<a:p><a:r><a:t>{t}</a:t></a:r></a:p>" for t in texts)
        return (
            '<p:sld xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main" '
            'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"><p:cSld><p:spTree>'
            f"<p:sp><p:txBody>{runs}</p:txBody></p:sp></p:spTree></p:cSld></p:sld>"
        )

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("ppt/presentation.xml", "<p:presentation/>")
        z.writestr("ppt/slides/slide2.xml", slide("Budget", "Costs rose 4%"))
        z.writestr("ppt/slides/slide10.xml", slide("Next steps"))
        z.writestr("ppt/slides/slide1.xml", slide("Quarterly review"))
    doc = load(buf.getvalue(), "deck.pptx")
    assert doc.title == "Quarterly review" and doc.page_count == 3
    assert [(s.location.page, s.text) for s in doc.sections] == [
        (1, "Quarterly review"),
        (2, "Budget\nCosts rose 4%"),
        (3, "Next steps"),
    ]


def test_other_office_formats_are_refused_not_unpacked() -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        z.writestr("content.xml", "<office:document-content/>")
    with pytest.raises(LoaderError, match="unsupported"):
        load(buf.getvalue(), "letter.odt")


def test_zip_members_become_attachments() -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("case/brief.md", "# Brief\nText.")
        z.writestr("case/../../etc/evil.txt", "x")
        z.writestr("__MACOSX/._brief.md", "junk")
        z.writestr("case/.DS_Store", "junk")
    doc = load(buf.getvalue(), "case.zip")
    assert doc.content_type == "application/zip" and not doc.sections
    assert [a.filename for a in doc.attachments] == ["case/brief.md", "case/../../etc/evil.txt"]


@pytest.mark.parametrize(
    "data, name, message",
    [
        (b"", "empty.txt", "empty"),
        (b"%PDF-1.7\n garbage", "broken.pdf", "PDF"),
        (b"PK\x03\x04garbage", "broken.docx", "zip"),
        (bytes(range(256)) * 4, "blob.bin", "unsupported"),
        (b"\x89PNG\r\n\x1a\nnot really", "x.png", "image"),
        (b"{not json", "bad.json", "invalid JSON"),
        (b"{\\rtf1\\ansi Hello}", "memo.rtf", "unsupported"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500), "old.doc", "unsupported"),
    ],
)
def test_bad_files_raise_clear_errors(data: bytes, name: str, message: str) -> None:
    with pytest.raises(LoaderError) as exc:
        load(data, name)
    assert message.lower() in str(exc.value).lower()


def test_image_is_ocrd_when_tesseract_is_present() -> None:
    require_ocr()
    doc = load(files.png_with_text(["MINUTES OF THE BOARD", "Meeting held on 17 March"]), "scan.png")
    assert doc.extra_metadata["ocr"] is True
    assert "MINUTES" in doc.text.upper()


def test_scanned_pdf_page_is_ocrd() -> None:
    require_ocr()
    from PIL import Image

    image = Image.open(__import__("io").BytesIO(files.png_with_text(["SCANNED PAGE TEXT"])))
    buf = __import__("io").BytesIO()
    image.save(buf, format="PDF")
    doc = load(buf.getvalue(), "scan.pdf")
    assert "SCANNED" in doc.text.upper() and doc.extra_metadata.get("ocr_pages") == [1]


def test_image_without_ocr_is_reported(monkeypatch) -> None:
    import indexers.loaders.image as image_loader

    monkeypatch.setattr(image_loader, "ocr_available", lambda: False)
    doc = load(files.png_with_text(["x"]), "scan.png")
    assert not doc.sections and "needs OCR" in doc.warnings[0]
