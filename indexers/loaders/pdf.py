"""PDF: the text layer page by page; pages without one are OCR'd or reported."""

from __future__ import annotations

from io import BytesIO

from indexers.documents import LoadedDocument, LoaderError, Location, Section
from indexers.ocr import NEEDS_OCR, ocr_available, ocr_image

#: A page with fewer characters than this in its text layer is treated as scanned.
MIN_TEXT_CHARS = 16
OCR_DPI = 200


def _render(data: bytes, index: int):
    import pypdfium2

    pdf = pypdfium2.PdfDocument(data)
    try:
        return pdf[index].render(scale=OCR_DPI / 72).to_pil()
    finally:
        pdf.close()


def load_pdf(data: bytes, filename: str) -> LoadedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoaderError("the PDF is encrypted with a password")
        pages = list(reader.pages)
    except PdfReadError as exc:
        raise LoaderError(f"corrupt PDF: {exc}") from exc
    title = None
    try:
        title = (reader.metadata or {}).get("/Title") or None
    except Exception:  # noqa: BLE001 - metadata is optional
        title = None
    doc = LoadedDocument("application/pdf", title=str(title) if title else None, page_count=len(pages))
    scanned: list[int] = []
    for number, page in enumerate(pages, start=1):
        try:
            text = page.extract_text() or ""
        except Exception as exc:  # noqa: BLE001 - one bad page must not lose the others
            doc.warnings.append(f"page {number}: text layer unreadable ({exc})")
            text = ""
        if len(text.strip()) >= MIN_TEXT_CHARS:
            doc.sections.append(Section(text.strip(), Location(page=number)))
        else:
            scanned.append(number)
    if scanned and ocr_available():
        for number in scanned:
            text = ocr_image(_render(data, number - 1))
            if text:
                doc.sections.append(Section(text, Location(page=number)))
            else:
                doc.warnings.append(f"page {number}: OCR found no text")
        doc.sections.sort(key=lambda s: s.location.page or 0)
        doc.extra_metadata["ocr_pages"] = scanned
    elif scanned:
        listed = ", ".join(map(str, scanned))
        doc.warnings.append(f"page(s) {listed} have no text layer: {NEEDS_OCR}")
        doc.extra_metadata["needs_ocr_pages"] = scanned
    return doc
