"""Loaders by content type: bytes in, ``LoadedDocument`` out, or a ``LoaderError`` per file.

``detect_content_type`` trusts the bytes first (magic numbers, zip members), then the extension,
so a mislabelled upload is still read correctly and an unknown one is refused clearly.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from io import BytesIO
from pathlib import PurePath

from indexers.documents import LoadedDocument, LoaderError
from indexers.loaders import email, office, pdf, records, text
from indexers.loaders.archive import load_zip
from indexers.loaders.image import load_image

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
EML = "message/rfc822"
ZIP = "application/zip"

_BY_EXTENSION = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".log": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".xhtml": "text/html",
    ".pdf": PDF,
    ".docx": DOCX,
    ".xlsx": XLSX,
    ".xlsm": XLSX,
    ".pptx": PPTX,
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".eml": EML,
    ".zip": ZIP,
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".bmp": "image/bmp",
    ".gif": "image/gif",
    ".webp": "image/webp",
}

_MAGIC = [
    (b"%PDF-", PDF),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"BM", "image/bmp"),
]

_LOADERS: dict[str, Callable[[bytes, str], LoadedDocument]] = {
    "text/plain": text.load_plain,
    "text/markdown": text.load_markdown,
    "text/html": text.load_html,
    PDF: pdf.load_pdf,
    DOCX: office.load_docx,
    XLSX: office.load_xlsx,
    PPTX: office.load_pptx,
    "text/csv": records.load_csv,
    "text/tab-separated-values": records.load_csv,
    EML: email.load_eml,
    ZIP: load_zip,
    "application/json": records.load_json,
    "application/x-ndjson": records.load_jsonl,
}

SUPPORTED_EXTENSIONS = tuple(sorted(_BY_EXTENSION))


def detect_content_type(data: bytes, filename: str, declared: str | None = None) -> str | None:
    head = data[:16]
    for magic, ctype in _MAGIC:
        if head.startswith(magic):
            return ctype
    if head.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"{\\rtf", b"\xd0\xcf\x11\xe0")):  # RTF, legacy Office (OLE2): not read
        return None
    ext = PurePath(filename).suffix.lower()
    if head.startswith(b"PK\x03\x04"):
        try:
            names = set(zipfile.ZipFile(BytesIO(data)).namelist())
        except zipfile.BadZipFile:
            return _BY_EXTENSION.get(ext)
        if "word/document.xml" in names:
            return DOCX
        if "xl/workbook.xml" in names:
            return XLSX
        if "ppt/presentation.xml" in names:
            return PPTX
        if "[Content_Types].xml" in names or "mimetype" in names:
            return None  # another Office/OpenDocument format: refused, not unpacked as an archive
        return ZIP
    if ext in _BY_EXTENSION:
        return _BY_EXTENSION[ext]
    if declared:
        declared = declared.split(";")[0].strip().lower()
        if declared in _LOADERS or declared.startswith("image/"):
            return declared
    if b"\x00" not in data[:4096]:
        return "text/plain"
    return None


def load(data: bytes, filename: str, declared: str | None = None) -> LoadedDocument:
    """Read one file. Raises ``LoaderError`` with a message fit for the user."""
    if not data:
        raise LoaderError("the file is empty")
    ctype = detect_content_type(data, filename, declared)
    if ctype is None:
        raise LoaderError(
            f"unsupported file type ({PurePath(filename).suffix or 'no extension'}); "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if ctype.startswith("image/"):
        return load_image(data, filename, ctype)
    loader = _LOADERS.get(ctype)
    if loader is None:
        raise LoaderError(f"unsupported content type {ctype}")
    try:
        return loader(data, filename)
    except LoaderError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt file must not stop the batch
        raise LoaderError(f"cannot read {ctype} file: {type(exc).__name__}: {exc}") from exc
