"""Training files: OpenAI's chat lines (``{"messages": [...]}``) or ``{"prompt", "completion"}`` lines.

Files are checked line by line at upload (every error names its line), and turned into token ids
when a job starts, by the same functions that build prompts at inference: the backbone's chat
template for the base model, or the domain's system prompt and template for a domain. The loss is
taken on the answer only: the last assistant message, or the completion.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

ROLES = ("system", "developer", "user", "assistant")


class DatasetError(ValueError):
    """A training file that cannot be used; the message names the line."""


@dataclass(frozen=True)
class Example:
    """One training example: the conversation before the answer, and the answer."""

    messages: list[dict[str, str]]
    answer: str
    #: A plain ``prompt`` / ``completion`` line (trained as raw text, not as a chat).
    raw_prompt: str | None = None


def _content(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    raise DatasetError(f"{where}: 'content' must be a string or a list of text parts")


def parse_line(raw: str, line: int) -> Example:
    where = f"line {line}"
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(item, dict):
        raise DatasetError(f"{where}: expected a JSON object")
    if "messages" in item:
        messages = item["messages"]
        if not isinstance(messages, list) or not messages:
            raise DatasetError(f"{where}: 'messages' must be a non-empty list")
        out: list[dict[str, str]] = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                raise DatasetError(f"{where}: message {i} needs a role among {', '.join(ROLES)}")
            role = "system" if m["role"] == "developer" else m["role"]
            out.append({"role": role, "content": _content(m.get("content"), f"{where}, message {i}")})
        if out[-1]["role"] != "assistant":
            raise DatasetError(f"{where}: the last message must be the assistant's answer")
        if not out[-1]["content"].strip():
            raise DatasetError(f"{where}: the assistant's answer is empty")
        if not any(m["role"] == "user" for m in out[:-1]):
            raise DatasetError(f"{where}: the conversation needs a user message before the answer")
        return Example(out[:-1], out[-1]["content"])
    if "prompt" in item and "completion" in item:
        prompt, completion = item["prompt"], item["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise DatasetError(f"{where}: 'prompt' and 'completion' must be strings")
        if not completion.strip():
            raise DatasetError(f"{where}: the completion is empty")
        return Example([{"role": "user", "content": prompt}], completion, raw_prompt=prompt)
    raise DatasetError(f'{where}: expected {{"messages": [...]}} or {{"prompt", "completion"}}')


def read_examples(data: bytes, max_examples: int) -> Iterator[tuple[int, Example]]:
    """``(line number, example)`` for every non-blank line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"the file is not UTF-8 text (byte {exc.start})") from exc
    count = 0
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        count += 1
        if count > max_examples:
            raise DatasetError(
                f"line {line}: more than {max_examples} examples (TAILOR_TRAINING__MAX_EXAMPLES)"
            )
        yield line, parse_line(raw, line)


def validate(data: bytes, max_examples: int) -> int:
    """Check a whole file; return how many examples it holds."""
    n = sum(1 for _ in read_examples(data, max_examples))
    if n == 0:
        raise DatasetError("the file holds no examples")
    return n
