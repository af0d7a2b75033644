"""Embeddings for clients from the knowledge store's own embedder, so client vectors match the index.

Inputs are tokenized once to count usage and enforce the embedder's input limit: a longer input is
a 400 (the model would silently cut it) unless ``truncate_prompt_tokens`` asks for truncation.
"""

from __future__ import annotations

import base64

import numpy as np

from app.protocol.embeddings import EmbeddingItem, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from app.protocol.errors import APIError
from indexers.embedding import Embedder


def _bad(message: str, param: str = "input") -> APIError:
    return APIError(400, message, param=param, code="invalid_value")


def _texts(req: EmbeddingRequest, embedder: Embedder) -> list[str]:
    items = req.input
    if isinstance(items, str) or (items and isinstance(items[0], int)):
        items = [items]
    tok = embedder.tokenizer
    vocab = len(tok)
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise _bad(f"input[{i}] is empty.")
            texts.append(item)
        else:
            bad = next((t for t in item if not 0 <= t < vocab), None)
            if bad is not None:
                raise _bad(
                    f"input[{i}] has token id {bad}, outside the embedder's vocabulary (0..{vocab - 1})."
                )
            texts.append(tok.decode(item, skip_special_tokens=True))
    return texts


def _fit(texts: list[str], req: EmbeddingRequest, embedder: Embedder) -> tuple[list[str], int]:
    """Texts the embedder reads whole, and the tokens they take (special tokens included)."""
    limit = embedder.max_tokens
    keep = req.truncate_prompt_tokens
    if keep is not None and keep > limit:
        raise _bad(
            f"truncate_prompt_tokens is above the embedder's limit of {limit} tokens.",
            "truncate_prompt_tokens",
        )
    tok = embedder.tokenizer
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    room = limit - 2  # [CLS] and [SEP]
    out, total = [], 0
    for i, (text, row) in enumerate(zip(texts, ids, strict=True)):
        if keep is not None:
            cut = room if keep == -1 else min(keep, room)
            if len(row) > cut:
                row = row[-cut:]
                text = tok.decode(row)
        elif len(row) > room:
            raise _bad(
                f"input[{i}] has {len(row) + 2} tokens; the embedder reads at most {limit}. Split it, or set "
                "truncate_prompt_tokens (-1 keeps the last tokens that fit)."
            )
        out.append(text)
        total += len(row) + 2
    return out, total


def encode(vector: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.astype(float).tolist()


def embed(req: EmbeddingRequest, embedder: Embedder, model: str) -> EmbeddingResponse:
    """Blocking: run it off the event loop."""
    if req.dimensions is not None and req.dimensions != embedder.dim:
        raise _bad(
            f"This embedder's vectors have {embedder.dim} dimensions; it cannot give {req.dimensions}.",
            "dimensions",
        )
    # counting and decoding on the embedder tokenizer's owner thread; the model runs here
    texts, tokens = embedder.tokens.call(lambda: _fit(_texts(req, embedder), req, embedder))
    vectors = embedder.embed(texts)
    return EmbeddingResponse(
        data=[
            EmbeddingItem(index=i, embedding=encode(v, req.encoding_format)) for i, v in enumerate(vectors)
        ],
        model=model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
