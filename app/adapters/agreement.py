"""The agreement check: a converted adapter must decode as PEFT's own model does.

The conversion process decodes a fixed set of prompts greedily with PEFT's model (the reference, in
``tailor_conversion.json``); once vLLM has loaded the converted LoRA, the same prompts are decoded
greedily through the engine and compared token by token (``convert.agreement``). Below
``TAILOR_CONVERSION__MIN_AGREEMENT`` the load is refused with the numbers: Tailor has no second
serving path for these methods, and an adapter that answers differently from the one trained is
worse than none. The prompts are a fixed set of everyday requests (the same for every adapter)
plus, for a fine-tuning job, the first prompts of its own training data, so the check also looks
where the adapter was meant to act.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from app.adapters.convert import agreement
from app.engine import AdapterRef, Engine, EngineInput, EngineRequest, SamplingOptions
from prompts import render_chat

#: Everyday requests: the backbone's general behaviour must survive the conversion too.
FIXED_PROMPTS = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Explain what a contract is in two sentences.",
    "List three symptoms of the flu.",
    "What does an interest rate measure?",
    "Translate 'good morning' into Spanish.",
    "How many days are in a leap year?",
    "Give a short definition of bandwidth.",
)


def fixed_prompt_ids(engine: Engine, count: int) -> list[list[int]]:
    """The first ``count`` fixed prompts as chat-template token ids (on the tokenizer's thread)."""

    def render() -> list[list[int]]:
        tok = engine.tokenizer
        return [render_chat(tok, [{"role": "user", "content": p}]).token_ids for p in FIXED_PROMPTS[:count]]

    return engine.tokens.call(render)


async def served_tokens(
    engine: Engine, adapter: AdapterRef, prompts: list[list[int]], max_new_tokens: int
) -> list[list[int]]:
    """vLLM's greedy continuations of ``prompts`` with ``adapter`` (all at once: one batch)."""
    options = SamplingOptions(max_tokens=max_new_tokens, temperature=0.0, ignore_eos=True, logprobs=0)

    async def one(ids: list[int]) -> list[int]:
        out: list[int] = []
        request = EngineRequest(EngineInput(list(ids)), options, adapter=adapter)
        async for deltas in engine.generate(request, f"agreement-{uuid.uuid4().hex[:12]}"):
            for d in deltas:
                out += [t.token_id for t in d.logprobs]
        return out

    return list(await asyncio.gather(*(one(p) for p in prompts)))


async def check(engine: Engine, adapter: AdapterRef, report: dict[str, Any]) -> dict[str, Any]:
    """Agreement of the loaded ``adapter`` with the reference in ``report``."""
    ref = report.get("reference") or {}
    prompts, tokens = ref.get("prompts") or [], ref.get("tokens") or []
    if not prompts:
        return {"agreement": None, "tokens_equal": 0, "tokens_total": 0, "prompts": 0, "prompts_identical": 0}
    served = await served_tokens(engine, adapter, prompts, int(ref["max_new_tokens"]))
    return agreement(tokens, served)
