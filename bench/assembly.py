"""Prompt assembly cost at long windows: incremental counting against whole renders per bisection step.

A domain request fits as many ranked passages as the window holds. The earlier assembly rendered
and tokenized the whole prompt at every bisection step (about log2(passages) full renders, each
tokenizing every passage again); ``prompts.assemble`` now tokenizes each passage block once,
guesses the count from those counts and confirms it with one or two whole renders. Both are run
here in the same process on the same parts and must choose the same passages and the same token
ids (the new one is exact, not approximate). Also measured: the cost of one hop to the tokenizer's
owner thread (``indexers.owner.OwnerThread``), which every request now pays.

Run: ``.venv/bin/python -m bench.assembly`` (about a minute on 2 cores); results go to
``bench/results/assembly.json`` and docs/benchmarks.md ("Prompt assembly").
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

from app.checkpoints.prepare import prepare_backbone
from indexers.owner import OwnerThread
from prompts.assemble import Assembled, PromptParts, _largest, assemble_chat, messages_for
from prompts.chat import render_chat
from prompts.rag import Passage
from prompts.template import DEFAULT_TEMPLATE, PromptTemplate
from prompts.tokenizer import PromptTokenizer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "assembly.json"
WORDS = "tenant landlord notice arrears clause court statute appeal deposit repair lease term".split()


def whole_renders(tokenizer, parts: PromptParts, window: int, reserve: int) -> Assembled:
    """The earlier way: bisection over the passage count, one whole render per step."""
    cache: dict[int, object] = {}

    def render(k: int):
        if k not in cache:
            cache[k] = render_chat(tokenizer, messages_for(parts, k, 0))
        return cache[k]

    def fits(k: int) -> bool:
        return len(render(k).token_ids) + reserve <= window

    n = len(parts.passages)
    k = n if fits(n) else _largest(0, n, fits)
    return Assembled(render(k), k, n - k, 0)


def passages(n: int, words: int) -> list[Passage]:
    return [
        Passage(
            " ".join(WORDS[(i * 7 + j) % len(WORDS)] + ("." if j % 17 == 16 else "") for j in range(words)),
            f"memo-{i}.txt, page {i % 9 + 1}",
        )
        for i in range(n)
    ]


def timed(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    from transformers import AutoTokenizer

    path = str(prepare_backbone(ROOT / "data").path)
    tok = PromptTokenizer(
        AutoTokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(path, split_special_tokens=True)
    )
    rows = []
    for window, n_passages, words in ((4096, 40, 200), (8192, 80, 200), (32768, 200, 300)):
        parts = PromptParts(
            template=PromptTemplate.parse(DEFAULT_TEMPLATE),
            question="Which notice period applies when the tenant is in arrears?",
            system="You are a careful legal assistant.",
            domain="legal",
            passages=passages(n_passages, words),
        )
        reserve = 512
        args = (tok, parts, window, reserve)
        t_old, old = timed(lambda a=args: whole_renders(*a), 3)
        t_new, new = timed(lambda a=args: assemble_chat(*a), 3)
        assert new.passages_used == old.passages_used and new.prompt.token_ids == old.prompt.token_ids
        rows.append(
            {
                "window": window,
                "passages": n_passages,
                "passages_used": new.passages_used,
                "prompt_tokens": len(new.prompt.token_ids),
                "whole_renders_ms": round(t_old * 1000, 1),
                "incremental_ms": round(t_new * 1000, 1),
                "speedup": round(t_old / t_new, 2),
            }
        )
        print(rows[-1], flush=True)

    owner = OwnerThread("bench-tokenizer")
    short = [{"role": "user", "content": "What is the capital of France?"}]
    direct, _ = timed(lambda: [render_chat(tok, short) for _ in range(200)], 3)

    async def hops() -> None:
        for _ in range(200):
            await owner.run(render_chat, tok, short)

    hopped, _ = timed(lambda: asyncio.run(hops()), 3)
    owner.close()
    hop = {
        "render_ms": round(direct / 200 * 1000, 3),
        "render_on_owner_ms": round(hopped / 200 * 1000, 3),
        "hop_overhead_ms": round((hopped - direct) / 200 * 1000, 3),
    }
    print(hop)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"assembly": rows, "owner_thread": hop}, indent=2))


if __name__ == "__main__":
    main()
