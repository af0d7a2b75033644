"""Training examples as token ids, laid out exactly as inference will lay them out.

For the base model the conversation goes through the backbone's chat template (as ``/v1/chat/
completions`` does); for a domain, through the domain's system prompt and template
(``app.domains.prompt``), without retrieved passages. Tokenizing runs on the backbone tokenizer's
owner thread, a batch of examples at a time, so validating a large file never holds up chats. The answer's ids are what the template
renders after the prompt, up to and including the end-of-turn token, so the adapter learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.domains.prompt import assemble, domain_parts
from app.engine import Engine
from app.finetune.dataset import DatasetError, Example, read_examples
from app.protocol.profiles import DomainProfile
from prompts import render_chat


@dataclass(frozen=True)
class Tokenized:
    prompt_ids: list[int]
    answer_ids: list[int]


def _messages(example: Example, engine: Engine, profile: DomainProfile | None, answer_tokens: int):
    if profile is None:
        return example.messages
    system = "\n\n".join(m["content"] for m in example.messages if m["role"] == "system")
    turns = [m for m in example.messages if m["role"] != "system"]
    if turns[-1]["role"] != "user":
        raise DatasetError("the answer must follow a user message when training for a domain")
    parts = domain_parts(profile, turns[-1]["content"], history=turns[:-1], client_system=system)
    return assemble("chat", engine, parts, answer_tokens, "training_file").messages


def tokenize(example: Example, engine: Engine, profile: DomainProfile | None) -> Tokenized:
    tok = engine.tokenizer
    answer_guess = len(tok(example.answer, add_special_tokens=False)["input_ids"]) + 8
    messages = _messages(example, engine, profile, answer_guess)
    prompt = render_chat(tok, messages).token_ids
    full = render_chat(tok, [*messages, {"role": "assistant", "content": example.answer}], False).token_ids
    if full[: len(prompt)] != prompt:
        raise DatasetError("the chat template does not render the answer after the prompt")
    answer = full[len(prompt) :]
    eos = tok.eos_token_id
    if eos is not None and eos in answer:
        answer = answer[: answer.index(eos) + 1]
    return Tokenized(prompt, answer)


#: Examples tokenized per turn on the owner thread (chats queued behind wait for one batch at most).
BATCH = 16


def _tokenize_batch(
    batch: list[tuple[int, Example]], engine: Engine, profile: DomainProfile | None, max_tokens: int
) -> list[Tokenized]:
    out: list[Tokenized] = []
    for line, example in batch:
        try:
            t = tokenize(example, engine, profile)
        except DatasetError as exc:
            raise DatasetError(f"line {line}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - e.g. a domain prompt that cannot fit
            raise DatasetError(f"line {line}: {getattr(exc, 'message', exc)}") from exc
        if len(t.prompt_ids) + len(t.answer_ids) > max_tokens:
            raise DatasetError(
                f"line {line}: the example has {len(t.prompt_ids) + len(t.answer_ids)} tokens; the limit is "
                f"{max_tokens} (TAILOR_TRAINING__MAX_EXAMPLE_TOKENS)"
            )
        out.append(t)
    return out


def tokenize_file(
    data: bytes, engine: Engine, profile: DomainProfile | None, max_examples: int, max_tokens: int
) -> list[Tokenized]:
    """Parse and tokenize a training file (blocking: call from a worker thread, not the loop)."""
    items = list(read_examples(data, max_examples))
    out: list[Tokenized] = []
    for start in range(0, len(items), BATCH):
        out += engine.tokens.call(_tokenize_batch, items[start : start + BATCH], engine, profile, max_tokens)
    return out
