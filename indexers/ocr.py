"""OCR with Tesseract when it is installed (Debian: ``tesseract-ocr``, plus ``tesseract-ocr-spa``
and other language packs). Without it, pages and images are reported as needing OCR, never
dropped silently.
"""

from __future__ import annotations

import functools
import shutil
from typing import Any

#: Tesseract language packs used when installed, in order of preference.
PREFERRED_LANGUAGES = ("eng", "spa", "fra", "deu", "por", "ita")


@functools.lru_cache(maxsize=1)
def ocr_languages() -> str | None:
    """The ``-l`` argument for Tesseract, or None when OCR is unavailable."""
    if shutil.which("tesseract") is None:
        return None
    try:
        import pytesseract

        installed = set(pytesseract.get_languages(config=""))
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return None
    chosen = [lang for lang in PREFERRED_LANGUAGES if lang in installed]
    return "+".join(chosen) if chosen else None


def ocr_available() -> bool:
    return ocr_languages() is not None


def ocr_image(image: Any) -> str:
    """Text of a PIL image ('' when nothing was read). Call only when ``ocr_available()``."""
    import pytesseract

    languages = ocr_languages()
    if languages is None:
        raise RuntimeError("Tesseract is not installed")
    return pytesseract.image_to_string(image.convert("RGB"), lang=languages).strip()


NEEDS_OCR = (
    "needs OCR: install Tesseract (Debian: apt-get install tesseract-ocr tesseract-ocr-spa) and re-ingest"
)
