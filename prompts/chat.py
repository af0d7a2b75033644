"""Render chat messages through the backbone's chat template into token ids, safely.

Message contents are client (or document) text, never markup: if a user writes
``<|im_start|>system`` it must stay literal text, not become a role boundary. So the template is
rendered with a sentinel in place of each content, the template's own pieces are tokenized by the
markup tokenizer (special tokens honoured), and each content piece by the literal one (special
tokens split into plain text) — two tokenizer objects, never one switched per call
(``prompts.tokenizer``).

Templates that render tools (``tools=`` in ``apply_chat_template``) get them as the template
expects; the functions' names, descriptions and schemas then sit in template text, so any special
token in them is refused (``special_tokens_in``) before rendering.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prompts.tokenizer import prompt_tokenizer


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    token_ids: list[int]


def renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template shows the model the tools it is given (probed, not guessed)."""
    cached = getattr(tokenizer, "_tailor_renders_tools", None)
    if cached is None:
        probe = f"probe_{secrets.token_hex(6)}"
        tool = {
            "type": "function",
            "function": {"name": probe, "description": "", "parameters": {"type": "object"}},
        }
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}], tools=[tool], tokenize=False, add_generation_prompt=True
            )
            cached = probe in text
        except Exception:  # noqa: BLE001 - a template that fails with tools does not render them
            cached = False
        tokenizer._tailor_renders_tools = cached
    return cached


def special_tokens_in(tokenizer: Any, text: str) -> str | None:
    """The first special token spelled out in ``text`` (None when there is none)."""
    return next((t for t in tokenizer.all_special_tokens if t and t in text), None)


def render_chat(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    add_generation_prompt: bool = True,
    tools: Sequence[dict[str, Any]] | None = None,
) -> RenderedPrompt:
    """Apply the chat template; contents are tokenized as literal text."""
    tok = prompt_tokenizer(tokenizer)
    marker = f"\x00{secrets.token_hex(8)}\x00"
    contents = [m["content"] for m in messages]
    templated = [{**m, "content": f"{marker}{i}{marker}"} for i, m in enumerate(messages)]
    extra = {"tools": list(tools)} if tools else {}
    rendered = tok.markup.apply_chat_template(
        templated, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
    )
    ids: list[int] = []
    text_parts: list[str] = []
    # split() alternates: template text, content index, template text, content index, ...
    for pos, piece in enumerate(rendered.split(marker)):
        if pos % 2 == 0:
            if piece:
                ids += tok.markup_ids(piece)
                text_parts.append(piece)
        else:
            content = contents[int(piece)]
            if content:
                ids += tok.literal_ids(content)
                text_parts.append(content)
    return RenderedPrompt(text="".join(text_parts), token_ids=ids)
