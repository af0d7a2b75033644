"""Durable file replacement: a crash leaves either the old file or the new one, never a mix."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def replace_durably(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it over ``path``, then fsync the folder so the rename survives."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_durably(path: Path, text: str) -> None:
    write_bytes_durably(path, text.encode("utf-8"))


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC (or a quota) from the file system, or SQLite's and FAISS's words for it."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return "disk is full" in text or "no space left on device" in text
