"""Prompt templates that cannot run code or read files, by construction.

A template is text with ``{name}`` placeholders (``{{`` and ``}}`` for literal braces). Only plain
names from a fixed set are allowed: no attribute or index access (``{x.__class__}``,
``{x[0]}``), no conversions or format specs, so rendering is pure substitution of strings.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

VARIABLES = ("question", "context", "examples", "history", "domain")
MAX_TEMPLATE_CHARS = 20_000


class TemplateError(ValueError):
    """The template uses something other than plain ``{variable}`` placeholders."""


@dataclass(frozen=True)
class PromptTemplate:
    text: str
    variables: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> PromptTemplate:
        if len(text) > MAX_TEMPLATE_CHARS:
            raise TemplateError(f"a template has at most {MAX_TEMPLATE_CHARS} characters")
        used: set[str] = set()
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:  # unbalanced braces
            raise TemplateError(f"invalid template: {exc}; write {{{{ and }}}} for literal braces") from exc
        for _, field, spec, conversion in parsed:
            if field is None:
                continue
            if field not in VARIABLES:
                allowed = ", ".join("{" + v + "}" for v in VARIABLES)
                raise TemplateError(f"unknown or unsafe placeholder {{{field}}}; allowed: {allowed}")
            if spec or conversion:
                raise TemplateError(f"placeholder {{{field}}} may not have a format spec or conversion")
            used.add(field)
        if "question" not in used:
            raise TemplateError("a template must contain {question}")
        return cls(text, frozenset(used))

    def render(self, **values: str) -> str:
        return self.text.format_map({v: values.get(v, "") for v in VARIABLES})


DEFAULT_TEMPLATE = "{context}\n\nQuestion: {question}"
