"""Tailor's engine requests in vLLM's own ``/v1/completions`` fields, and its stream back.

Tailor renders and tokenizes; a replica receives token ids (``prompt``) or, with a prompt-tuning
soft prompt, prompt embeddings Tailor built itself from the backbone's embedding table
(``prompt_embeds``: base64 of ``torch.save`` bytes, vLLM's wire format). Clients never send
tensors: only this module writes them, from soft prompts the server loaded.

Replies ask for ``return_token_ids`` (token counts per delta) and ``return_tokens_as_token_ids``
(log-probabilities keyed by id, decoded by Tailor's own tokenizer), so streams map one to one onto
``OutputDelta``.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from app.engine.base import LOGPROB_FLOOR, EngineRequest, OutputDelta, SamplingOptions, TokenLogprob


def sampling_fields(o: SamplingOptions) -> dict[str, Any]:
    """``SamplingOptions`` as vLLM's completion request fields."""
    body = {k: v for k, v in o.fields().items() if v is not None}
    if o.logprobs is not None:
        body["return_tokens_as_token_ids"] = True
    if o.constraint is not None:
        body["structured_outputs"] = o.constraint.fields()
    return body


def encode_embeds(tensor: Any) -> str:
    """vLLM's wire format for ``prompt_embeds``: base64 of the ``torch.save`` bytes."""
    import torch

    buffer = io.BytesIO()
    torch.save(tensor.contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode()


def completion_body(
    request: EngineRequest, model: str, embeds: Any | None, request_id: str
) -> dict[str, Any]:
    """The JSON body of one streamed completion on a replica."""
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "return_token_ids": True,
        "request_id": request_id,
        **sampling_fields(request.options),
    }
    if embeds is not None:
        body["prompt_embeds"] = encode_embeds(embeds)
    else:
        body["prompt"] = list(request.prompt.token_ids)
    return body


def _token_id(key: str) -> int:
    return int(key.removeprefix("token_id:"))


def token_logprobs(lp: dict[str, Any], ids: list[int], k: int, decode) -> tuple[TokenLogprob, ...]:
    """A chunk's ``logprobs`` (tokens as ``token_id:N``) → one ``TokenLogprob`` per new token.

    vLLM adds the sampled token to the top ``k`` when it is not among them; then it is dropped from
    the alternatives, as the embedded engine does.
    """
    out = []
    tokens = lp.get("tokens") or []
    values = lp.get("token_logprobs") or []
    tops = lp.get("top_logprobs") or []
    for i, key in enumerate(tokens):
        token_id = _token_id(key) if key.startswith("token_id:") else (ids[i] if i < len(ids) else -1)
        value = values[i] if i < len(values) and values[i] is not None else LOGPROB_FLOOR
        top = dict(tops[i] or {}) if i < len(tops) else {}
        if len(top) > k:
            top.pop(key, None)
        ranked = sorted(top.items(), key=lambda kv: -kv[1])[:k]
        out.append(
            TokenLogprob(
                token_id=token_id,
                token=decode(token_id),
                logprob=float(value),
                top=tuple((decode(_token_id(t)), float(v)) for t, v in ranked),
            )
        )
    return tuple(out)


def parse_event(line: str) -> dict[str, Any] | None:
    """One SSE line → its JSON payload; None for blank lines, comments and ``[DONE]``."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    return json.loads(data)


def deltas(payload: dict[str, Any], k: int | None, decode) -> list[OutputDelta]:
    """A completion chunk → the deltas of its choices."""
    out = []
    for choice in payload.get("choices") or []:
        ids = list(choice.get("token_ids") or [])
        lp = choice.get("logprobs")
        out.append(
            OutputDelta(
                index=int(choice.get("index", 0)),
                text=choice.get("text") or "",
                num_tokens=len(ids),
                finish_reason=choice.get("finish_reason"),
                stop_reason=choice.get("stop_reason"),
                logprobs=token_logprobs(lp, ids, k, decode) if (k is not None and lp) else (),
            )
        )
    return out


def error_message(body: bytes) -> str:
    """The message of a vLLM (OpenAI-shaped) error body, or the body itself."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:500]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return json.dumps(data)[:500]
