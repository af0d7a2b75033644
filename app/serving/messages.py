"""Client chat messages → the messages a chat template renders, tool calls and results included.

A template that renders tools gets calls and results in the shape it expects (arguments as a
mapping); tool definitions and call arguments are then template text, so no special token may
hide in them. Any other template gets them as text: a call as the JSON list the model is asked to
write, a result as a user turn naming the call it answers. ``developer`` renders as ``system``.
"""

from __future__ import annotations

import json
from typing import Any

from app.engine import Constraint
from app.protocol.errors import APIError
from app.protocol.openai import ChatCompletionRequest, ChatMessage
from prompts.chat import special_tokens_in

ROLE_MAP = {"developer": "system"}


def _arguments(text: str) -> Any:
    """Tool-call arguments as templates expect them: a mapping when they parse."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def template_message(m: ChatMessage, native_tools: bool) -> dict[str, Any]:
    """One client message for the chat template.

    With a template that renders tools, tool calls and results go as the template expects them.
    Otherwise they become text: a call as the JSON list the model is asked to write, a result as
    a user turn that says which call it answers.
    """
    role = ROLE_MAP.get(m.role, m.role)
    text = m.text()
    if native_tools:
        out: dict[str, Any] = {"role": role, "content": text}
        if m.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)},
                }
                for c in m.tool_calls
            ]
        if m.tool_call_id:
            out["tool_call_id"] = m.tool_call_id
        if role == "tool" and m.name:
            out["name"] = m.name
        return out
    if role == "tool":
        which = f" {m.name}" if m.name else ""
        call = f" (call {m.tool_call_id})" if m.tool_call_id else ""
        return {"role": "user", "content": f"Result of the function{which}{call}:\n{text}"}
    if m.tool_calls:
        calls = [
            {"name": c.function.name, "parameters": _arguments(c.function.arguments)} for c in m.tool_calls
        ]
        return {"role": role, "content": "\n".join(x for x in (text, json.dumps(calls)) if x)}
    return {"role": role, "content": text}


def check_template_text(tokenizer: Any, req: ChatCompletionRequest) -> None:
    """Tools and call arguments are rendered as template text: no special token may hide in them."""
    pieces = [json.dumps([t.model_dump(exclude_none=True) for t in req.tools or []])]
    pieces += [c.function.arguments + c.function.name for m in req.messages for c in m.tool_calls or []]
    for piece in pieces:
        token = special_tokens_in(tokenizer, piece)
        if token is not None:
            raise APIError(
                400,
                f"Tools and tool calls may not contain the special token {token!r}.",
                param="tools",
                code="invalid_value",
            )


def with_note(messages: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """The note joins the client's first system message, or becomes one."""
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def schema_note(constraint: Constraint) -> str | None:
    """What the model is told about a JSON constraint (None for other kinds)."""
    if constraint.kind == "json_object":
        return "Answer with one JSON object."
    if constraint.kind == "json":
        schema = json.dumps(constraint.value, separators=(",", ":"))
        return f"Answer with one JSON object that matches this JSON schema:\n{schema}"
    return None
