"""Request models for constrained output: ``response_format``, ``tools`` and vLLM's ``structured_outputs``.

They follow the OpenAI API (and vLLM's extension) field for field, with limits, so a schema or a
tool list is checked before anything is compiled into a grammar: sizes are bounded, names follow
OpenAI's pattern, and unknown ``type`` values are a 400 naming the field.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

MAX_SCHEMA_BYTES = 64 * 1024
MAX_TOOLS = 64
MAX_CHOICES = 256
MAX_PATTERN = 4096
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

_STRICT = ConfigDict(extra="ignore", strict=True)


def _bounded(value: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(value)) > MAX_SCHEMA_BYTES:
        raise ValueError(f"the schema is larger than {MAX_SCHEMA_BYTES // 1024} KiB")
    return value


#: A JSON schema from a client, bounded in size before anything compiles it into a grammar.
JSONSchema = Annotated[dict[str, Any], AfterValidator(_bounded)]


class JSONSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)

    name: str = Field(..., pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=4096)
    # "schema" shadows a BaseModel attribute; the alias keeps the wire name
    json_schema: JSONSchema | None = Field(None, alias="schema")
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text"]


class JSONObjectFormat(BaseModel):
    model_config = _STRICT
    type: Literal["json_object"]


class JSONSchemaFormat(BaseModel):
    model_config = _STRICT
    type: Literal["json_schema"]
    json_schema: JSONSchemaSpec


ResponseFormat = Annotated[TextFormat | JSONObjectFormat | JSONSchemaFormat, Field(discriminator="type")]


class StructuredOutputs(BaseModel):
    """vLLM's extension: exactly one of a JSON schema, a regular expression or a list of choices."""

    model_config = _STRICT

    json_schema: JSONSchema | None = Field(None, alias="json")
    regex: str | None = Field(None, min_length=1, max_length=MAX_PATTERN)
    choice: list[Annotated[str, Field(min_length=1, max_length=1024)]] | None = Field(
        None, min_length=1, max_length=MAX_CHOICES
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputs:
        given = [v for v in (self.json_schema, self.regex, self.choice) if v is not None]
        if len(given) != 1:
            raise ValueError("structured_outputs takes exactly one of 'json', 'regex' or 'choice'")
        return self


class FunctionSpec(BaseModel):
    model_config = _STRICT

    name: str = Field(..., pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=4096)
    parameters: JSONSchema | None = None
    strict: bool | None = None


class ToolSpec(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    model_config = _STRICT
    name: str = Field(..., pattern=NAME_PATTERN)


class NamedToolChoice(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(BaseModel):
    model_config = _STRICT
    name: str = Field(..., max_length=64)
    arguments: str = Field(..., max_length=MAX_SCHEMA_BYTES)


class ToolCall(BaseModel):
    """A call the assistant made: in responses, and in the history a client sends back."""

    model_config = _STRICT
    id: str = Field(..., max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCall
