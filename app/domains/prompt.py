"""A domain's prompt: its system prompt, template, examples and passages, fitted into the window.

Serving (chat, completions, the template optimizer) and fine-tuning (training examples) lay a
domain's prompt out with these functions, so the backbone sees the same layout wherever it meets
the domain. They use the backbone's tokenizer: call them on its owner thread (``engine.tokens``).
"""

from __future__ import annotations

from collections.abc import Sequence

from app.engine import Engine
from app.errors import ServiceError
from app.protocol.profiles import DomainProfile
from indexers.store import SearchHit
from prompts.assemble import Assembled, ContextOverflow, PromptParts, assemble_chat, assemble_text
from prompts.rag import Passage
from prompts.template import PromptTemplate


class PromptTooLong(ServiceError):
    """The parts that must stay (question, system prompt) do not fit the window."""


def label(hit: SearchHit) -> str:
    where = hit.location
    parts = [hit.filename or hit.title or hit.document_id]
    if "page" in where:
        parts.append(f"page {where['page']}")
    if "sheet" in where:
        parts.append(f"sheet {where['sheet']}")
    if "row" in where:
        parts.append(f"row {where['row']}")
    if "section" in where:
        parts.append(str(where["section"]))
    return ", ".join(parts)


def passages(hits: Sequence[SearchHit]) -> list[Passage]:
    return [Passage(h.text, label(h)) for h in hits]


def domain_parts(
    profile: DomainProfile,
    question: str,
    hits: Sequence[SearchHit] = (),
    *,
    history: Sequence[dict[str, str]] = (),
    client_system: str = "",
    template: PromptTemplate | None = None,
    examples: Sequence[tuple[str, str]] | None = None,
    with_system: bool = True,
) -> PromptParts:
    """A domain request's parts; ``template`` / ``examples`` replace the profile's (optimizer)."""
    system = "\n\n".join(x for x in (profile.system_prompt, client_system) if x) if with_system else ""
    return PromptParts(
        template=template or profile.prompt_template,
        question=question,
        system=system,
        domain=profile.name,
        passages=passages(list(hits)),
        examples=[(e.input, e.output) for e in profile.examples] if examples is None else examples,
        history=history,
    )


def assemble(
    kind: str, engine: Engine, parts: PromptParts, reserve: int, param: str, virtual: int = 0
) -> Assembled:
    """Fit ``parts`` into the window as chat messages (``chat``) or plain text (``text``).

    ``virtual``: positions a soft prompt takes in front of the prompt (they leave the window).
    """
    build = assemble_chat if kind == "chat" else assemble_text
    try:
        return build(engine.tokenizer, parts, engine.max_model_len - virtual, reserve)
    except ContextOverflow as exc:
        raise PromptTooLong(
            400,
            f"This model's maximum context length is {exc.window} tokens: {exc}.",
            param=param,
            code="context_length_exceeded",
        ) from exc
