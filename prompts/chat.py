"""Render chat messages through the backbone's chat template into token ids, safely.

Message contents are client (or document) text, never markup: if a user writes
``<|im_start|>system`` it must stay literal text, not become a role boundary. So the template is
rendered with a sentinel in place of each content, the template's own pieces are tokenized with
special tokens honoured, and each content piece is tokenized with special tokens split into plain
text.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    token_ids: list[int]


def render_chat(
    tokenizer: Any, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True
) -> RenderedPrompt:
    """Apply the chat template; contents are tokenized as literal text."""
    marker = f"\x00{secrets.token_hex(8)}\x00"
    contents = [m["content"] for m in messages]
    templated = [{**m, "content": f"{marker}{i}{marker}"} for i, m in enumerate(messages)]
    rendered = tokenizer.apply_chat_template(
        templated, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    ids: list[int] = []
    text_parts: list[str] = []
    # split() alternates: template text, content index, template text, content index, ...
    for pos, piece in enumerate(rendered.split(marker)):
        if pos % 2 == 0:
            if piece:
                ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
                text_parts.append(piece)
        else:
            content = contents[int(piece)]
            if content:
                ids += tokenizer(content, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                text_parts.append(content)
    return RenderedPrompt(text="".join(text_parts), token_ids=ids)
