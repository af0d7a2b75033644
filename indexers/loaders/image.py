"""Images: OCR'd when Tesseract is installed, otherwise reported as needing OCR."""

from __future__ import annotations

from io import BytesIO

from indexers.documents import LoadedDocument, LoaderError, Location, Section
from indexers.ocr import NEEDS_OCR, ocr_available, ocr_image


def load_image(data: bytes, filename: str, content_type: str) -> LoadedDocument:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise LoaderError(f"cannot read image: {exc}") from exc
    doc = LoadedDocument(content_type, page_count=1, extra_metadata={"ocr": False})
    if not ocr_available():
        doc.warnings.append(f"image: {NEEDS_OCR}")
        return doc
    text = ocr_image(image)
    doc.extra_metadata["ocr"] = True
    if text:
        doc.sections.append(Section(text, Location(page=1)))
    else:
        doc.warnings.append("OCR found no text in the image")
    return doc
