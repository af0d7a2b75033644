"""What Tailor keeps in Milvus: one chunk collection per domain, one shared document collection.

Tenancy (docs/benchmarks.md "Milvus" has the measurement): each domain's chunks get their own
collection because Milvus computes BM25 statistics (document count, average length, document
frequency) per collection, not per partition: with a partition key per domain in one shared chunk
collection, adding documents to one domain changed the BM25 ranking of every other, and no
longer ranked a domain as its own FAISS/SQLite store does. Document records are small and carry
no text to rank, so they share one collection with ``domain`` as the partition key (Milvus's
recommendation for many tenants).

Chunks carry their document's filterable columns (``doc_<name>``) and metadata (JSON), so a
metadata filter is one boolean expression on the chunk collection, applied before ranking.
``terms`` holds Tailor's own analysis of the chunk (stems in the document's language, the head's
words repeated ``head_weight`` times); Milvus's BM25 function turns it into the sparse vector, so
per-language stemming is the same as on the SQLite store.

Names: collections are ``<prefix>d_<domain>`` and ``<prefix>documents``; a domain name's ``.``,
``-`` and ``_`` are spelled ``_d``, ``_h``, ``_u`` (Milvus names take letters, digits and ``_``),
one-to-one, so any domain name maps to exactly one collection and back.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: Longest string columns, in UTF-8 bytes (Milvus VARCHAR lengths are limits, not reservations).
LONG = 65_535
#: A document id is at most 256 characters: 1,024 bytes of UTF-8.
ID_LENGTH = 1024
_ENCODE = {".": "_d", "-": "_h", "_": "_u"}
_DECODE = {v[1]: k for k, v in _ENCODE.items()}
DOCUMENT_COLUMNS = (
    "id",
    "filename",
    "title",
    "content_type",
    "language",
    "page_count",
    "sha256",
    "parent_id",
    "metadata",
    "status",
    "warnings",
    "chunk_count",
    "size_bytes",
    "created_at",
    "updated_at",
)
#: Document columns copied onto each chunk (the filter language's document fields).
CHUNK_DOCUMENT_COLUMNS = ("filename", "title", "content_type", "language", "parent_id", "status", "sha256")
CHUNK_OUTPUT = (
    "id",
    "doc_id",
    "doc_version",
    "ordinal",
    "text",
    "page",
    "section",
    "sheet",
    "row",
    "metadata",
    *(f"doc_{c}" for c in CHUNK_DOCUMENT_COLUMNS),
)


def fit(text: str | None, limit: int = LONG) -> str | None:
    """``text`` cut to ``limit`` UTF-8 bytes (at a character boundary): what a VARCHAR column takes."""
    if text is None:
        return None
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode(errors="ignore")


def chunk_collection(prefix: str, domain: str) -> str:
    return f"{prefix}d_" + "".join(_ENCODE.get(ch, ch) for ch in domain)


def documents_collection(prefix: str) -> str:
    return f"{prefix}documents"


def domain_of(prefix: str, collection: str) -> str | None:
    """The domain whose chunks ``collection`` holds, or None for any other collection."""
    head = f"{prefix}d_"
    if not collection.startswith(head):
        return None
    encoded, out, i = collection[len(head) :], [], 0
    while i < len(encoded):
        ch = encoded[i]
        if ch == "_":
            if i + 1 >= len(encoded) or encoded[i + 1] not in _DECODE:
                return None
            out.append(_DECODE[encoded[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out) or None


def chunk_id(domain: str, doc_id: str, version: str, ordinal: int) -> int:
    """A chunk's primary key: 63 bits of a hash of where it belongs (collisions ~1e-8 at 1e6 chunks).

    Derived rather than allocated, so writers in several processes need no shared counter, and a
    new version of a document never reuses an old chunk's id (a stale id never names new text).
    """
    digest = hashlib.blake2b(f"{domain}\0{doc_id}\0{version}\0{ordinal}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


def document_key(domain: str, doc_id: str) -> str:
    # domain names hold no "/", so the first one ends the domain
    return f"{domain}/{doc_id}"


def chunk_schema(client: Any, dim: int) -> Any:
    from pymilvus import DataType, Function, FunctionType

    s = client.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("doc_id", DataType.VARCHAR, max_length=ID_LENGTH)
    s.add_field("doc_version", DataType.VARCHAR, max_length=64)
    s.add_field("ordinal", DataType.INT64)
    s.add_field("text", DataType.VARCHAR, max_length=LONG)
    s.add_field("page", DataType.INT64, nullable=True)
    s.add_field("section", DataType.VARCHAR, max_length=LONG, nullable=True)
    s.add_field("sheet", DataType.VARCHAR, max_length=LONG, nullable=True)
    s.add_field("row", DataType.INT64, nullable=True)
    s.add_field("tokens", DataType.INT64)
    for column in CHUNK_DOCUMENT_COLUMNS:
        length = 64 if column == "sha256" else ID_LENGTH if column == "parent_id" else LONG
        s.add_field(f"doc_{column}", DataType.VARCHAR, max_length=length, nullable=True)
    s.add_field("metadata", DataType.JSON)
    s.add_field(
        "terms",
        DataType.VARCHAR,
        max_length=LONG,
        enable_analyzer=True,
        analyzer_params={"tokenizer": "standard"},
    )
    s.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    s.add_function(
        Function(
            name="bm25",
            function_type=FunctionType.BM25,
            input_field_names=["terms"],
            output_field_names=["sparse"],
        )
    )
    return s


def chunk_indexes(client: Any, index_type: str) -> Any:
    params = client.prepare_index_params()
    params.add_index("vector", index_type=index_type, metric_type="IP")
    params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    return params


def documents_schema(client: Any) -> Any:
    """Document records; ``version`` is the chunk version searches see ("" while a first write or a
    delete is in flight), ``pending`` the version being written, ``dirty_since`` when that began."""
    from pymilvus import DataType

    s = client.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("key", DataType.VARCHAR, is_primary=True, max_length=ID_LENGTH + 80)
    s.add_field("domain", DataType.VARCHAR, max_length=64, is_partition_key=True)
    s.add_field("id", DataType.VARCHAR, max_length=ID_LENGTH)
    for column in ("filename", "title", "content_type", "language"):
        s.add_field(column, DataType.VARCHAR, max_length=LONG, nullable=True)
    s.add_field("page_count", DataType.INT64, nullable=True)
    s.add_field("sha256", DataType.VARCHAR, max_length=64)
    s.add_field("parent_id", DataType.VARCHAR, max_length=ID_LENGTH, nullable=True)
    s.add_field("metadata", DataType.JSON)
    s.add_field("status", DataType.VARCHAR, max_length=32)
    s.add_field("warnings", DataType.JSON)
    s.add_field("chunk_count", DataType.INT64)
    s.add_field("size_bytes", DataType.INT64, nullable=True)
    s.add_field("created_at", DataType.DOUBLE)
    s.add_field("updated_at", DataType.DOUBLE)
    s.add_field("version", DataType.VARCHAR, max_length=64)
    s.add_field("pending", DataType.VARCHAR, max_length=64)
    s.add_field("dirty_since", DataType.DOUBLE)
    # Milvus wants a vector field in every collection; records need none
    s.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
    return s


def documents_indexes(client: Any) -> Any:
    params = client.prepare_index_params()
    params.add_index("unused", index_type="FLAT", metric_type="L2")
    return params
