"""Words for BM25: lowercased, split on word characters, stemmed in each document's language.

Full-text search finds "contratos" for "contrato" and "terminated" for "termination" only if both
sides are reduced to one stem, and the stemmer has to be the language's own: an English stemmer
leaves Spanish plurals alone and a Spanish one mangles English. Each chunk is stemmed in the
language its document was detected in (``indexers.language``); a query, whose language is rarely
detectable from a few words, is stemmed in every language the collection holds and the stems are
OR-ed together. Text in a language without a stemmer is still indexed, unstemmed.

Snowball stemmers come from PyStemmer (C, the Snowball project's own algorithms).
"""

from __future__ import annotations

import functools
import re

#: ISO 639-1 codes (what language detection reports) → Snowball algorithm names.
SNOWBALL = {
    "ar": "arabic",
    "ca": "catalan",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "eu": "basque",
    "fi": "finnish",
    "fr": "french",
    "ga": "irish",
    "hi": "hindi",
    "hu": "hungarian",
    "hy": "armenian",
    "id": "indonesian",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "nl": "dutch",
    "no": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}

_WORD = re.compile(r"\w+", re.UNICODE)
#: Longest query, in distinct words, sent to full-text search (a pasted page would be thousands).
MAX_QUERY_WORDS = 64


@functools.lru_cache(maxsize=64)
def _stemmer(language: str | None):
    name = SNOWBALL.get((language or "").lower())
    if name is None:
        return None
    import Stemmer

    return Stemmer.Stemmer(name)


def supported(language: str | None) -> bool:
    """Whether words in ``language`` are stemmed (others are indexed as they are)."""
    return (language or "").lower() in SNOWBALL


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def analyze(text: str, language: str | None) -> str:
    """``text`` as space-separated stems, the form stored in the full-text index."""
    tokens = words(text)
    stemmer = _stemmer(language)
    if stemmer is not None and tokens:
        tokens = stemmer.stemWords(tokens)
    return " ".join(tokens)


def query_terms(text: str, languages: list[str | None]) -> list[str]:
    """Distinct search terms for ``text``: its words stemmed in each of ``languages``.

    Single letters are dropped (they match nearly every chunk) but single digits are kept
    ("article 5"). The unstemmed word is always included, so a collection whose documents had no
    detectable language still matches.
    """
    tokens = [w for w in dict.fromkeys(words(text)) if len(w) > 1 or w.isdigit()][:MAX_QUERY_WORDS]
    out = dict.fromkeys(tokens)
    for language in dict.fromkeys(languages):
        stemmer = _stemmer(language)
        if stemmer is not None:
            out.update(dict.fromkeys(stemmer.stemWords(tokens)))
    return [t for t in out if t]
