"""Constrained output: ``response_format``, vLLM's ``structured_outputs`` and tool calls → one ``Constraint``.

The engine enforces the constraint while decoding (vLLM's structured outputs), so a JSON schema
answer always parses and matches, and a forced tool call always carries arguments that match the
function's parameters. How a tool call is asked for:

- a named function (``tool_choice: {"type": "function", ...}``): the output is the arguments,
  constrained to the function's parameters schema;
- ``required``: the output is a JSON list of ``{"name", "parameters"}`` objects, one of the given
  functions each (one call only when ``parallel_tool_calls`` is false);
- ``auto``: the model decides; only for chat templates that render tools themselves, and the
  answer is read in the ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` form those
  templates teach (Hermes, Qwen2.5 and their kin). Other templates (SmolLM2's among them) get a
  400 that says to use ``required`` or a named function.

Templates that do not render tools get the functions described in a system note instead, so
the model knows what it is filling in.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from app.engine import Constraint
from app.protocol.errors import APIError
from app.protocol.openai import ChatCompletionRequest, SamplingFields
from app.protocol.structured import FunctionCall, ToolCall, ToolSpec

ANY_OBJECT: dict[str, Any] = {"type": "object"}
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def _error(message: str, param: str) -> APIError:
    return APIError(400, message, param=param, code="invalid_value")


def format_constraint(req: SamplingFields) -> Constraint | None:
    """``response_format`` or ``structured_outputs`` (never both) as an engine constraint."""
    fmt = getattr(req, "response_format", None)
    so = req.structured_outputs
    if fmt is not None and fmt.type != "text" and so is not None:
        raise _error("Give either response_format or structured_outputs, not both.", "structured_outputs")
    if so is not None:
        if so.json_schema is not None:
            return Constraint("json", so.json_schema)
        if so.regex is not None:
            return Constraint("regex", so.regex)
        return Constraint("choice", tuple(so.choice or ()))
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return Constraint("json_object")
    return Constraint("json", fmt.json_schema.json_schema or ANY_OBJECT)


@dataclass
class ToolPlan:
    """How this request's tools are served."""

    mode: Literal["none", "auto", "required", "named"]
    tools: list[ToolSpec] = field(default_factory=list)
    name: str | None = None
    parallel: bool = True

    @property
    def forced(self) -> bool:
        return self.mode in ("required", "named")

    def constraint(self) -> Constraint | None:
        if self.mode == "named":
            fn = self._function(self.name)
            return Constraint("json", fn.parameters or ANY_OBJECT)
        if self.mode == "required":
            calls = [
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "enum": [t.function.name]},
                        "parameters": t.function.parameters or ANY_OBJECT,
                    },
                    "required": ["name", "parameters"],
                }
                for t in self.tools
            ]
            schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": calls}}
            if not self.parallel:
                schema["maxItems"] = 1
            return Constraint("json", schema)
        return None

    def _function(self, name: str | None):
        return next(t.function for t in self.tools if t.function.name == name)

    def note(self) -> str:
        """The functions described for a template that does not render tools."""
        chosen = [self._function(self.name)] if self.mode == "named" else [t.function for t in self.tools]
        lines = []
        for fn in chosen:
            desc = f": {fn.description}" if fn.description else ""
            params = json.dumps(fn.parameters or ANY_OBJECT, separators=(",", ":"))
            lines.append(f"- {fn.name}{desc}\n  parameters (JSON schema): {params}")
        if self.mode == "named":
            ask = f"Call the function {self.name}: answer with its arguments as one JSON object."
        else:
            ask = (
                'Call one of these functions: answer with a JSON list of {"name": ..., "parameters": {...}}.'
            )
        return "You can call these functions:\n" + "\n".join(lines) + "\n" + ask

    # -- reading the answer ----------------------------------------------------------------------
    def calls(self, text: str) -> tuple[list[ToolCall], str | None]:
        """Tool calls in a finished answer, and the content left beside them (None when all calls)."""
        if self.mode == "named":
            return [new_call(self.name or "", text.strip())], None
        if self.mode == "required":
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                return [], text  # cut short by max_tokens: the text is all there is
            return [new_call(i["name"], json.dumps(i["parameters"])) for i in items], None
        if self.mode == "auto":
            found = []
            for m in _TAGGED.finditer(text):
                try:
                    item = json.loads(m.group(1))
                    args = item.get("arguments", item.get("parameters", {}))
                    found.append(
                        new_call(str(item["name"]), args if isinstance(args, str) else json.dumps(args))
                    )
                except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
                    continue
            if found:
                rest = _TAGGED.sub("", text).strip()
                return found, rest or None
        return [], text


def new_call(name: str, arguments: str) -> ToolCall:
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", function=FunctionCall(name=name, arguments=arguments))


def tool_plan(req: ChatCompletionRequest, template_renders_tools: bool) -> ToolPlan:
    """Check ``tools`` / ``tool_choice`` and decide how they are served (400 when they cannot be)."""
    tools = list(req.tools or [])
    choice = req.tool_choice
    if not tools:
        if choice not in (None, "none"):
            raise _error("tool_choice needs tools.", "tool_choice")
        return ToolPlan("none")
    names = [t.function.name for t in tools]
    if len(set(names)) != len(names):
        raise _error("Tool names must be unique.", "tools")
    parallel = req.parallel_tool_calls is not False
    if choice is None:
        choice = "auto"
    if choice == "none":
        return ToolPlan("none", tools)
    if not isinstance(choice, str):
        if choice.function.name not in names:
            raise _error(
                f"tool_choice names '{choice.function.name}', which is not among the tools.", "tool_choice"
            )
        return ToolPlan("named", tools, choice.function.name, parallel)
    if choice == "required":
        return ToolPlan("required", tools, None, parallel)
    if not template_renders_tools:
        raise APIError(
            400,
            "tool_choice 'auto' (the default when tools are given) needs a backbone whose chat "
            "template renders tools, and this backbone's does not. Use tool_choice 'required' or "
            "name a function: the call is then constrained to the function's schema.",
            param="tool_choice",
            code="unsupported_parameter",
        )
    return ToolPlan("auto", tools, None, parallel)


def request_constraint(req: SamplingFields, plan: ToolPlan | None = None) -> Constraint | None:
    """The one constraint of a request: a forced tool call or the response format."""
    fmt = format_constraint(req)
    if plan is not None and plan.forced:
        if fmt is not None:
            raise _error(
                "A forced tool call already constrains the output: drop response_format.", "response_format"
            )
        return plan.constraint()
    return fmt
