"""ZIP archives: each member becomes a child document (like an e-mail's attachments).

Guarded against archive bombs: member count, per-member and total uncompressed size are capped.
"""

from __future__ import annotations

import zipfile
from io import BytesIO
from pathlib import PurePosixPath

from indexers.documents import Attachment, LoadedDocument, LoaderError

MAX_MEMBERS = 2000
MAX_MEMBER_BYTES = 128 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024


def load_zip(data: bytes, filename: str) -> LoadedDocument:
    try:
        archive = zipfile.ZipFile(BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise LoaderError(f"corrupt ZIP archive: {exc}") from exc
    doc = LoadedDocument("application/zip")
    total = 0
    members = [m for m in archive.infolist() if not m.is_dir()]
    for info in members[:MAX_MEMBERS]:
        path = PurePosixPath(info.filename)
        if any(
            (part.startswith(".") and part not in (".", "..")) or part == "__MACOSX" for part in path.parts
        ):
            continue
        if info.flag_bits & 0x1:
            doc.warnings.append(f"{info.filename}: encrypted member skipped")
            continue
        if info.file_size > MAX_MEMBER_BYTES or total + info.file_size > MAX_TOTAL_BYTES:
            doc.warnings.append(f"{info.filename}: skipped, the archive expands beyond the size limits")
            continue
        total += info.file_size
        doc.attachments.append(Attachment(str(path), archive.read(info)))
    if len(members) > MAX_MEMBERS:
        doc.warnings.append(f"only the first {MAX_MEMBERS} of {len(members)} members were read")
    if not doc.attachments and not doc.warnings:
        raise LoaderError("the ZIP archive has no files")
    return doc
