"""Engine log-probabilities in OpenAI's two shapes: chat (per-token objects) and legacy completions."""

from __future__ import annotations

from collections.abc import Sequence

from app.engine import TokenLogprob
from app.protocol.openai import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob


def _top(token: str, logprob: float) -> TopLogprob:
    return TopLogprob(token=token, logprob=logprob, bytes=list(token.encode("utf-8", "replace")))


def chat_logprobs(tokens: Sequence[TokenLogprob]) -> ChatLogprobs:
    return ChatLogprobs(
        content=[
            ChatTokenLogprob(
                token=t.token,
                logprob=t.logprob,
                bytes=list(t.token.encode("utf-8", "replace")),
                top_logprobs=[_top(a, lp) for a, lp in t.top],
            )
            for t in tokens
        ]
    )


def completion_logprobs(tokens: Sequence[TokenLogprob], offset: int = 0) -> CompletionLogprobs:
    """``offset``: characters of text before these tokens in the choice (echo, earlier chunks)."""
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    return CompletionLogprobs(
        tokens=[t.token for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[dict(t.top) for t in tokens],
        text_offset=offsets,
    )
