"""Whether the tests expect OCR: yes, unless the run opted out with ``TAILOR_TEST_OCR=0``.

``make test`` installs Tesseract (as root on Debian/Ubuntu) and passes ``OCR=0`` through when
asked to skip it. A missing Tesseract is then a failed set-up, not a reason to assert less.
"""

from __future__ import annotations

import os

import pytest

from indexers.ocr import ocr_available


def expect_ocr() -> bool:
    """True when OCR must work; fails the test when it should but Tesseract is missing."""
    if os.environ.get("TAILOR_TEST_OCR", "1") == "0":
        if ocr_available():
            pytest.fail("TAILOR_TEST_OCR=0 but Tesseract is installed: the run would test the wrong path")
        return False
    if not ocr_available():
        pytest.fail("Tesseract is not installed: run `make ocr`, or opt out with OCR=0 (TAILOR_TEST_OCR=0)")
    return True


def require_ocr() -> None:
    if not expect_ocr():
        pytest.skip("this run opted out of OCR (TAILOR_TEST_OCR=0)")
