"""The backbone's tokenizer in its two fixed modes: markup and literal text.

Templates are markup (``<|im_start|>`` is the role token); client and document text is literal
(``<|im_start|>`` typed by a user is plain characters). Switching one tokenizer between the two per
call (``split_special_tokens=...``) changes the shared Rust object, so a concurrent call can encode
with the other mode; two objects, each fixed at construction, cannot. Use them from one thread
(``indexers.owner.OwnerThread``): tokenizers are not safe to share across threads.
"""

from __future__ import annotations

import copy
from typing import Any


def literal_copy(tokenizer: Any) -> Any:
    """A copy of ``tokenizer`` that encodes special tokens as text, set once and never flipped."""
    literal = copy.deepcopy(tokenizer)
    literal.split_special_tokens = True
    backend = getattr(literal, "_tokenizer", None)
    if backend is not None:
        backend.encode_special_tokens = True
    return literal


class PromptTokenizer:
    """``markup`` (the tokenizer as loaded) and ``literal`` (special tokens split); other
    attributes (chat template, special ids, ``decode``) are the markup tokenizer's."""

    def __init__(self, markup: Any, literal: Any | None = None) -> None:
        self.markup = markup
        self.literal = literal if literal is not None else literal_copy(markup)

    def markup_ids(self, text: str) -> list[int]:
        return self.markup(text, add_special_tokens=False)["input_ids"]

    def literal_ids(self, text: str) -> list[int]:
        return self.literal(text, add_special_tokens=False)["input_ids"]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if "split_special_tokens" in kwargs:
            raise TypeError("choose markup_ids or literal_ids instead of split_special_tokens")
        return self.markup(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.markup)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("markup", "literal"):
            raise AttributeError(name)  # copying and pickling look these up before __init__ ran
        return getattr(self.markup, name)

    def __setattr__(self, name: str, value: Any) -> None:
        """Settings of the tokenizer (``chat_template``...) go to the markup one, which renders."""
        if name not in ("markup", "literal") and "markup" in self.__dict__ and hasattr(self.markup, name):
            setattr(self.markup, name, value)
        else:
            object.__setattr__(self, name, value)


def prompt_tokenizer(tokenizer: Any) -> PromptTokenizer:
    """``tokenizer`` as a ``PromptTokenizer`` (its literal copy built once and kept on it)."""
    if isinstance(tokenizer, PromptTokenizer):
        return tokenizer
    cached = tokenizer.__dict__.get("_tailor_prompt_tokenizer")
    if cached is None:
        cached = PromptTokenizer(tokenizer)
        tokenizer.__dict__["_tailor_prompt_tokenizer"] = cached
    return cached
