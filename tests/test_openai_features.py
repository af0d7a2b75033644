"""Structured outputs, tool calls and logprobs on the OpenAI routes, through the openai client and LangChain."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.test_errors import assert_error

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris in Celsius?"}]


def chat_model(server, model: str, **kw) -> ChatOpenAI:
    return ChatOpenAI(
        model=model,
        base_url=f"{server.url}/v1",
        api_key="unused",
        temperature=0,
        max_retries=0,
        timeout=120,
        **kw,
    )


# -- logprobs --------------------------------------------------------------------------------------
def test_chat_logprobs_match_the_answer_and_stream_alike(server, oai: openai.OpenAI, model_name: str) -> None:
    kw = {"model": model_name, "messages": ASK, "max_tokens": 8, "logprobs": True, "top_logprobs": 3}
    r = oai.chat.completions.create(**kw)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 8
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3
        tops = [x.logprob for x in t.top_logprobs]
        assert tops == sorted(tops, reverse=True) and all(x <= 0 for x in tops)
        # greedy: the chosen token is the most likely one
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token
    streamed = [
        t
        for ch in oai.chat.completions.create(**kw, stream=True)
        for c in ch.choices
        if c.logprobs
        for t in c.logprobs.content
    ]
    assert [t.token for t in streamed] == [t.token for t in content]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in content], abs=1e-3)
    plain = oai.chat.completions.create(model=model_name, messages=ASK, max_tokens=4)
    assert plain.choices[0].logprobs is None
    # LangChain's ChatOpenAI puts them in response_metadata
    ai = chat_model(server, model_name, max_tokens=4, logprobs=True, top_logprobs=2).invoke(ASK[0]["content"])
    lc = ai.response_metadata["logprobs"]["content"]
    assert len(lc) == 4 and all(len(t["top_logprobs"]) == 2 for t in lc)


def test_completion_logprobs_and_offsets(oai: openai.OpenAI, model_name: str) -> None:
    kw = {"model": model_name, "prompt": "The capital of France is", "max_tokens": 6, "logprobs": 2}
    r = oai.completions.create(**kw)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.tokens) == 6
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    assert all(
        len(top) <= 2 and max(top.values()) >= lp.token_logprobs[i] - 1e-4
        for i, top in enumerate(lp.top_logprobs)
    )
    chunks = [c.choices[0] for c in oai.completions.create(**kw, stream=True) if c.choices]
    tokens = [t for c in chunks if c.logprobs for t in c.logprobs.tokens]
    offsets = [o for c in chunks if c.logprobs for o in c.logprobs.text_offset]
    assert tokens == lp.tokens and offsets == lp.text_offset


def test_logprob_limits(http: httpx.Client, model_name: str) -> None:
    body = {"model": model_name, "messages": ASK}
    assert_error(http.post("/v1/chat/completions", json={**body, "top_logprobs": 2}), 400, "invalid_value")
    assert_error(
        http.post("/v1/chat/completions", json={**body, "logprobs": True, "top_logprobs": 21}),
        422,
        "invalid_value",
    )
    comp = {"model": model_name, "prompt": "Hi", "logprobs": 1}
    assert_error(http.post("/v1/completions", json={**comp, "echo": True}), 400, "unsupported_parameter")
    assert_error(http.post("/v1/completions", json={**comp, "logprobs": True}), 422, "invalid_value")


# -- structured outputs ----------------------------------------------------------------------------
class Person(BaseModel):
    name: str
    age: int


def test_with_structured_output_returns_a_parsed_object_from_a_domain(server, http: httpx.Client) -> None:
    llm = chat_model(server, "legal", max_tokens=60)
    person = llm.with_structured_output(Person, method="json_schema").invoke(
        "Ann is 31 years old. Give her name and age."
    )
    assert isinstance(person, Person) and person.name
    # and the raw response is JSON matching the schema, for a plain client too
    r = http.post(
        "/v1/chat/completions",
        json={
            "model": "legal",
            "messages": [{"role": "user", "content": "Ann is 31. Name and age as JSON."}],
            "max_tokens": 60,
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
            "return_prompt": True,
        },
    ).json()
    data = json.loads(r["choices"][0]["message"]["content"])
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)
    assert "Ann is 31" in r["prompt"]  # the domain's template still lays the question out


def test_json_object_and_vllm_structured_outputs(oai: openai.OpenAI, model_name: str) -> None:
    r = oai.chat.completions.create(
        model=model_name, messages=ASK, max_tokens=40, response_format={"type": "json_object"}
    )
    text = r.choices[0].message.content
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:
        assert text.lstrip().startswith("{")
    choice = oai.chat.completions.create(
        model=model_name,
        messages=[{"role": "user", "content": "Is Paris in France? yes or no"}],
        max_tokens=5,
        extra_body={"structured_outputs": {"choice": ["yes", "no"]}},
    )
    assert choice.choices[0].message.content in ("yes", "no")
    regex = oai.completions.create(
        model=model_name,
        prompt="A date: ",
        max_tokens=12,
        extra_body={"structured_outputs": {"regex": r"\d{4}-\d{2}-\d{2}"}},
    )
    assert __import__("re").fullmatch(r"\d{4}-\d{2}-\d{2}", regex.choices[0].text)


def test_bad_constraints_are_400_and_the_engine_lives_on(http: httpx.Client, model_name: str) -> None:
    body = {"model": model_name, "messages": ASK, "max_tokens": 5}
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    assert_error(
        http.post("/v1/chat/completions", json={**body, "response_format": bad_schema}),
        400,
        "invalid_request",
    )
    assert_error(
        http.post("/v1/chat/completions", json={**body, "response_format": {"type": "xml"}}),
        422,
        "invalid_value",
    )
    both = {"response_format": {"type": "json_object"}, "structured_outputs": {"choice": ["a"]}}
    assert_error(http.post("/v1/chat/completions", json={**body, **both}), 400, "invalid_value")
    two = {"structured_outputs": {"choice": ["a"], "regex": "a"}}
    assert_error(http.post("/v1/chat/completions", json={**body, **two}), 422, "invalid_value")
    huge = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"description": "x" * 70_000}}}
    assert_error(
        http.post("/v1/chat/completions", json={**body, "response_format": huge}), 422, "invalid_value"
    )
    assert http.post("/v1/chat/completions", json=body).status_code == 200


# -- tools -----------------------------------------------------------------------------------------
def test_named_tool_call_comes_back_as_tool_calls(oai: openai.OpenAI, model_name: str) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    r = oai.chat.completions.create(
        model=model_name, messages=ASK, tools=[WEATHER, TIME], tool_choice=named, max_tokens=60
    )
    msg = r.choices[0].message
    assert msg.content is None and len(msg.tool_calls) == 1
    call = msg.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and args["unit"] in ("C", "F")
    # streamed: the id and name first, then the arguments in pieces that add up
    pieces, ids, names = [], set(), set()
    for ch in oai.chat.completions.create(
        model=model_name, messages=ASK, tools=[WEATHER], tool_choice=named, max_tokens=60, stream=True
    ):
        for c in ch.choices:
            for d in c.delta.tool_calls or []:
                ids.add(d.id) if d.id else None
                names.add(d.function.name) if d.function.name else None
                pieces.append(d.function.arguments or "")
    assert len(ids) == 1 and names == {"get_weather"}
    assert json.loads("".join(pieces)) == args


def test_required_tool_call_and_langchain_bind_tools(server, oai: openai.OpenAI, model_name: str) -> None:
    r = oai.chat.completions.create(
        model=model_name,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=80,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    assert choice.message.tool_calls[0].function.name in ("get_weather", "get_time")
    json.loads(choice.message.tool_calls[0].function.arguments)
    # LangChain: bind_tools with a named function → AIMessage.tool_calls with parsed args
    ai = (
        chat_model(server, "legal", max_tokens=60)
        .bind_tools([WEATHER], tool_choice="get_weather")
        .invoke([HumanMessage("Weather in Madrid, in Celsius?")])
    )
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather" and "city" in ai.tool_calls[0]["args"]


def test_tool_results_continue_the_conversation(oai: openai.OpenAI, model_name: str) -> None:
    first = oai.chat.completions.create(
        model=model_name,
        messages=ASK,
        tools=[WEATHER],
        max_tokens=60,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    call = first.choices[0].message.tool_calls[0]
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
    ]
    r = oai.chat.completions.create(
        model=model_name,
        messages=history,
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=30,
        extra_body={"return_prompt": True},
    )
    assert r.choices[0].message.content and not r.choices[0].message.tool_calls
    prompt = r.model_extra["prompt"]
    assert "18 degrees and sunny" in prompt and '"get_weather"' in prompt


def test_tool_choice_auto_needs_a_template_that_renders_tools(http: httpx.Client, model_name: str) -> None:
    body = {"model": model_name, "messages": ASK, "tools": [WEATHER]}
    err = assert_error(http.post("/v1/chat/completions", json=body), 400, "unsupported_parameter")
    assert "tool_choice 'required'" in err["message"]
    bad = [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, 400),
        ({"tools": [WEATHER, WEATHER], "tool_choice": "required"}, 400),
        ({"tools": [], "tool_choice": "required"}, 400),
        ({"tool_choice": "required", "response_format": {"type": "json_object"}}, 400),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, 422),
    ]
    for extra, status in bad:
        assert_error(http.post("/v1/chat/completions", json={**body, **extra}), status, "invalid_value")


def test_auto_reads_tagged_calls_on_templates_that_render_tools(engine) -> None:
    """The `auto` path's two halves on a copy of the tokenizer with a template that renders tools."""
    import copy

    from app.protocol.structured import ToolSpec
    from app.serving.structured import ToolPlan
    from prompts.chat import render_chat, renders_tools

    assert renders_tools(engine.tokenizer) is False  # SmolLM2's ChatML template ignores tools
    tok = copy.deepcopy(engine.tokenizer)
    tok._tailor_renders_tools = None
    tok.chat_template = (
        "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert renders_tools(tok) is True
    rendered = render_chat(tok, ASK, tools=[WEATHER])
    assert '"get_weather"' in rendered.text
    plan = ToolPlan("auto", [ToolSpec.model_validate(WEATHER)])
    calls, rest = plan.calls(
        'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}</tool_call>'
    )
    assert rest == "Sure." and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris", "unit": "C"}
    assert plan.calls("No call here.") == ([], "No call here.")


def test_constraints_and_logprobs_compose_with_adapters_and_soft_prompts(
    http: httpx.Client, model_name: str, model_path: str, base_settings, tmp_path
) -> None:
    from tests.lora import make_adapter
    from tests.soft import peft_prompt, save_peft, upload

    folder = make_adapter(model_path, base_settings.adapters_path / "src-eco", seed=7)
    assert http.post("/v1/adapters", json={"name": "eco-lora", "path": str(folder)}).status_code == 201
    for method, name in (("prompt_tuning", "eco-pt"), ("prefix_tuning", "eco-prefix")):
        data, files = upload(name, save_peft(peft_prompt(model_path, method, seed=3), tmp_path / name))
        assert http.post("/v1/soft-prompts/import", data=data, files=files).status_code == 201
    body = {
        "model": model_name,
        "messages": [{"role": "user", "content": "Ann is 31 and a pilot. As JSON."}],
        "max_tokens": 40,
        "logprobs": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
    }
    for extra in ({"adapter": "eco-lora"}, {"soft_prompt": "eco-pt"}, {"model": "eco-pt"}):
        r = http.post("/v1/chat/completions", json={**body, **extra})
        assert r.status_code == 200, (extra, r.text)
        choice = r.json()["choices"][0]
        assert choice["logprobs"]["content"]
        if choice["finish_reason"] == "stop":
            assert set(json.loads(choice["message"]["content"])) == {"name", "age"}
    err = assert_error(
        http.post("/v1/chat/completions", json={**body, "soft_prompt": "eco-prefix"}), 400, "invalid_request"
    )
    assert "prefix-tuning" in err["message"]


class Rent(BaseModel):
    amount: int
    currency: str


def test_the_schema_can_be_shown_to_the_model(server, http: httpx.Client, make_server, base_settings) -> None:
    """The grammar fixes the shape; with TAILOR_SCHEMA_IN_PROMPT the model also reads the schema."""
    docs = [{"id": "rent", "text": "The monthly rent for the office is 4,500 euros."}]
    assert http.post("/v1/domains/eco-rent/documents", json={"documents": docs}).status_code == 201
    rent = chat_model(server, "eco-rent", max_tokens=60).with_structured_output(Rent, method="json_schema")
    assert isinstance(rent.invoke("What is the monthly rent?"), Rent)
    body = {
        "model": "eco-rent",
        "messages": [{"role": "user", "content": "What is the monthly rent?"}],
        "max_tokens": 60,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "rent", "schema": Rent.model_json_schema()},
        },
        "return_prompt": True,
    }
    assert "JSON schema" not in http.post("/v1/chat/completions", json=body).json()["prompt"]
    noted = make_server(base_settings.model_copy(update={"schema_in_prompt": True}))
    docs_url = f"{noted.url}/v1/domains/eco-rent/documents"  # its own data dir: the same document
    assert httpx.post(docs_url, json={"documents": docs}, timeout=120).status_code == 201
    r = httpx.post(f"{noted.url}/v1/chat/completions", json=body, timeout=120).json()
    assert "matches this JSON schema" in r["prompt"] and '"amount"' in r["prompt"]
    assert r["choices"][0]["message"]["content"].lstrip().startswith("{")
