"""Template optimization on the backbone: score candidate templates on held-out examples.

Label tasks (the expected outputs are a few labels) are scored by the label the backbone finds
most likely after each prompt (prompt log-probabilities through vLLM): accuracy, plus a vote of the
best templates. Other tasks compare greedy answers by exact match or token F1. The training part
of the split supplies few-shot examples when asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.catalog import Target
from app.config import Settings
from app.domains.prompt import assemble, domain_parts
from app.engine import Engine, EngineError, EngineInput, EngineRequest, SamplingOptions
from app.knowledge.base import KnowledgeBase
from app.protocol.domains import CandidateScore, OptimizeRequest, OptimizeResult
from app.protocol.profiles import Example
from app.serving.generation import collect
from app.serving.pipeline import reserve_for
from app.serving.rag import retrieve
from prompts.optimize import ensemble_predict, exact_match, f1, label_set, split
from prompts.template import PromptTemplate

CONCURRENCY = 16


def describe_engine_failure(exc: BaseException) -> str:
    """A job's error when the engine failed under it (it restarts by itself; the job does not)."""
    if isinstance(exc, EngineError):
        return f"the engine stopped while the job ran ({exc}); it restarts by itself: resubmit the job"
    return f"{type(exc).__name__}: {exc}"


class Optimizer:
    def __init__(
        self,
        engine: Engine,
        knowledge: KnowledgeBase,
        settings: Settings,
        target: Target,
        req: OptimizeRequest,
        on_progress: Callable[[int, int], None],
    ) -> None:
        self.engine = engine
        self.knowledge = knowledge
        self.settings = settings
        assert target.profile is not None
        self.profile = target.profile
        self.adapter = target.adapter
        self.soft_prompt = target.soft_prompt
        self.req = req
        self.on_progress = on_progress
        self.templates = [PromptTemplate.parse(t) for t in req.candidates]
        self._sem = asyncio.Semaphore(CONCURRENCY)
        self._done = 0
        self._ids = 0

    def _prompt(self, template: PromptTemplate, question: str, shots: list[Example], hits) -> EngineInput:
        """The prompt chat would send for ``question``, with the candidate template and shots."""
        parts = domain_parts(
            self.profile, question, hits, template=template, examples=[(e.input, e.output) for e in shots]
        )
        reserve = reserve_for(self.req.max_tokens, None, self.engine.max_model_len, self.settings)
        virtual = self.soft_prompt.num_virtual_tokens if self.soft_prompt is not None else 0
        assembled = assemble("chat", self.engine, parts, reserve, "examples", virtual)
        return EngineInput(assembled.prompt.token_ids, self.soft_prompt)

    def _rid(self) -> str:
        self._ids += 1
        return f"opt-{id(self)}-{self._ids}"

    def _tick(self, total: int) -> None:
        self._done += 1
        self.on_progress(self._done, total)

    async def run(self) -> OptimizeResult:
        req = self.req
        examples = req.examples
        train_idx, held_idx = split(len(examples), req.holdout, req.seed)
        shots = [examples[i] for i in train_idx[: req.few_shot]]
        held = [examples[i] for i in held_idx]
        labels = label_set([e.output for e in examples]) if req.metric in ("auto", "label_loglik") else None
        if req.metric == "label_loglik" and labels is None:
            labels = sorted({e.output.strip() for e in examples})
        metric = "label_loglik" if labels else ("f1" if req.metric == "auto" else req.metric)
        hits = {}
        if req.use_retrieval:
            for e in held:
                hits[e.input] = await retrieve(self.knowledge, self.profile, None, e.input)
        total = len(self.templates) * len(held)
        tok = self.engine.tokenizer
        label_ids = await self.engine.tokens.run(lambda: [tok.literal_ids(label) for label in labels or []])

        async def score_label(t: PromptTemplate, e: Example) -> list[float]:
            async with self._sem:
                prompt = await self.engine.tokens.run(self._prompt, t, e.input, shots, hits.get(e.input, []))
                scores = [
                    await self.engine.continuation_logprob(prompt, ids, self._rid(), self.adapter)
                    for ids in label_ids
                ]
            self._tick(total)
            return scores

        async def score_answer(t: PromptTemplate, e: Example) -> float:
            async with self._sem:
                prompt = await self.engine.tokens.run(self._prompt, t, e.input, shots, hits.get(e.input, []))
                options = SamplingOptions(max_tokens=req.max_tokens, temperature=0.0)
                gen = await collect(self.engine, [EngineRequest(prompt, options, self.adapter)], self._rid())
            self._tick(total)
            answer = gen.choices[0].text
            return exact_match(answer, e.output) if metric == "exact" else f1(answer, e.output)

        results: list[CandidateScore] = []
        per_template_scores: list[list[list[float]]] = []
        for index, (text, t) in enumerate(zip(req.candidates, self.templates, strict=True)):
            if labels:
                scores = await asyncio.gather(*(score_label(t, e) for e in held))
                per_template_scores.append(scores)
                correct = sum(
                    labels[max(range(len(labels)), key=s.__getitem__)] == e.output.strip()
                    for s, e in zip(scores, held, strict=True)
                )
                value = correct / len(held)
            else:
                values = await asyncio.gather(*(score_answer(t, e) for e in held))
                correct = sum(v == 1.0 for v in values)
                value = sum(values) / len(values)
            results.append(
                CandidateScore(
                    index=index, template=text, score=round(value, 4), correct=correct, total=len(held)
                )
            )
        best = max(results, key=lambda r: (r.score, -r.index)).index
        ensemble = None
        if labels and req.ensemble >= 2 and len(results) >= 2:
            top = [r.index for r in sorted(results, key=lambda r: (-r.score, r.index))[: req.ensemble]]
            correct = 0
            for j, e in enumerate(held):
                vote = ensemble_predict([per_template_scores[i][j] for i in top])
                correct += labels[vote] == e.output.strip()
            ensemble = {
                "templates": top,
                "score": round(correct / len(held), 4),
                "correct": correct,
                "total": len(held),
            }
        return OptimizeResult(
            metric=metric,
            labels=labels,
            train_size=len(train_idx),
            heldout_size=len(held),
            scores=results,
            best=best,
            ensemble=ensemble,
        )
