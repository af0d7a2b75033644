"""Language of a document's text (ISO 639-1), or None when too short or unclear."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def _factory():
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0  # deterministic results
    return DetectorFactory


def detect_language(text: str, sample_chars: int = 4000) -> str | None:
    sample = text[:sample_chars]
    if sum(ch.isalpha() for ch in sample) < 20:
        return None
    _factory()
    from langdetect import detect_langs
    from langdetect.lang_detect_exception import LangDetectException

    try:
        best = detect_langs(sample)[0]
    except LangDetectException:
        return None
    return best.lang if best.prob >= 0.6 else None
