"""The one domain pipeline: resolve target → profile → retrieval → budgeted assembly → engine request.

Chat, completions and the template optimizer all build their prompts here, so a domain's system
prompt, template, examples and passages are laid out the same way wherever the backbone sees them
(fine-tuning formats its training examples with the same functions). Responses are built by
``chat`` and ``completions`` from the prepared requests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from app.catalog import Catalog, CatalogError, Lease, Target
from app.config import Settings
from app.domains.prompt import assemble, domain_parts
from app.engine import Engine, EngineInput, EngineRequest
from app.gate.service import AUTO
from app.knowledge.base import KnowledgeBase
from app.protocol.documents import Source
from app.protocol.errors import APIError
from app.protocol.openai import ChatCompletionRequest, CompletionRequest, ContextReport
from app.protocol.profiles import DomainProfile
from app.serving.generation import check_prompt_fits, reject_unsupported, sampling_options
from app.serving.messages import check_template_text, schema_note, template_message, with_note
from app.serving.rag import retrieve, sources
from app.serving.structured import ToolPlan, request_constraint, tool_plan
from indexers.store import SearchHit
from prompts import render_chat
from prompts.assemble import Assembled
from prompts.chat import renders_tools

if TYPE_CHECKING:
    from app.gate import Gate
    from app.serving.metrics import Metrics


@dataclass
class PreparedChat:
    model: str
    request: EngineRequest
    sources: list[Source] | None = None
    context: ContextReport | None = None
    prompt_text: str | None = None
    tools: ToolPlan | None = None
    #: The request's hold on its adapter and soft prompt: released after the last token.
    lease: Lease | None = None
    #: The gate's decision (``model: "auto"`` or a routing domain): reported in the response.
    gate: dict[str, Any] | None = None
    gate_header: str | None = None


@dataclass
class PreparedCompletion:
    model: str
    requests: list[EngineRequest]
    texts: list[str]
    echo: bool
    sources: list[Source] | None = None
    context: ContextReport | None = None
    prompt_text: str | None = None
    lease: Lease | None = None
    gate: dict[str, Any] | None = None
    gate_header: str | None = None


def reserve_for(requested: int | None, profile: DomainProfile | None, window: int, settings: Settings) -> int:
    """Tokens kept free for the completion while fitting the prompt."""
    if requested is not None:
        return requested
    if profile is not None and profile.generation.max_tokens is not None:
        return min(profile.generation.max_tokens, window // 2)
    return min(settings.default_max_tokens, window // 4)


def context_report(assembled: Assembled, window: int, reserve: int, virtual: int = 0) -> ContextReport:
    return ContextReport(
        window=window,
        prompt_tokens=len(assembled.prompt.token_ids) + virtual,
        reserved_tokens=reserve,
        passages_used=assembled.passages_used,
        passages_dropped=assembled.passages_dropped,
        history_turns_dropped=assembled.turns_dropped,
    )


def _virtual(target: Target) -> int:
    return target.soft_prompt.num_virtual_tokens if target.soft_prompt is not None else 0


# -- chat ------------------------------------------------------------------------------------------
def last_user_text(req: ChatCompletionRequest) -> str:
    return next((m.text() for m in reversed(req.messages) if m.role == "user"), "")


def _split_conversation(messages: list[dict[str, str]]) -> tuple[str, list[dict[str, str]], str]:
    """Client system text, earlier turns and the final question of a domain conversation."""
    if messages[-1]["role"] != "user":
        raise APIError(
            400, "A request to a domain must end with a user message.", param="messages", code="invalid_value"
        )
    client_system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [m for m in messages[:-1] if m["role"] != "system"]
    return client_system, turns, messages[-1]["content"]


def prepare_chat(
    req: ChatCompletionRequest,
    target: Target,
    engine: Engine,
    settings: Settings,
    hits: list[SearchHit] | None = None,
) -> PreparedChat:
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true.", param="top_logprobs", code="invalid_value")
    reject_unsupported(req)
    native = renders_tools(engine.tokenizer)
    plan = tool_plan(req, native)
    constraint = request_constraint(req, plan)
    profile = target.profile
    # a domain lays the conversation out with its own template: calls and results go as text
    native_messages = native and profile is None
    if native and plan.tools:
        check_template_text(engine.tokenizer, req)
    messages = [template_message(m, native_messages) for m in req.messages]
    tool_specs = [t.model_dump(exclude_none=True) for t in plan.tools] if native and plan.tools else None
    if plan.forced and not native:
        messages = with_note(messages, plan.note())
    elif constraint is not None and settings.schema_in_prompt and (note := schema_note(constraint)):
        messages = with_note(messages, note)
    window = engine.max_model_len
    virtual = _virtual(target)
    used: list[SearchHit] = []
    report = None
    if profile is not None:
        reserve = reserve_for(req.requested_max_tokens, profile, window, settings)
        hits = list(hits or [])
        client_system, turns, question = _split_conversation(messages)
        parts = domain_parts(profile, question, hits, history=turns, client_system=client_system)
        parts.tools = tool_specs or ()
        assembled = assemble("chat", engine, parts, reserve, "messages", virtual)
        rendered = assembled.prompt
        used = hits[: assembled.passages_used]
        report = context_report(assembled, window, reserve, virtual)
    else:
        rendered = render_chat(engine.tokenizer, messages, tools=tool_specs)
    prompt = EngineInput(rendered.token_ids, target.soft_prompt)
    check_prompt_fits(prompt.length, window, "messages")
    options = sampling_options(
        req,
        req.requested_max_tokens,
        prompt.length,
        window,
        settings,
        profile.generation if profile else None,
    )
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    options = replace(options, logprobs=logprobs, constraint=constraint)
    return PreparedChat(
        target.model,
        EngineRequest(prompt, options, target.adapter, affinity=target.domain),
        sources(used) if profile is not None else None,
        report,
        rendered.text if req.return_prompt else None,
        plan,
    )


# -- completions -----------------------------------------------------------------------------------
def _tokenize_prompts(req: CompletionRequest, tokenizer) -> tuple[list[list[int]], list[str]]:
    p = req.prompt
    if isinstance(p, str):
        p = [p]
    if p and isinstance(p[0], int):
        p = [p]  # a single prompt given as token ids
    ids: list[list[int]] = []
    texts: list[str] = []
    vocab = len(tokenizer)
    for item in p:
        if isinstance(item, str):
            ids.append(tokenizer(item, add_special_tokens=True)["input_ids"])
            texts.append(item)
        else:
            bad = [t for t in item if not 0 <= t < vocab]
            if bad:
                raise APIError(
                    400,
                    f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1}).",
                    param="prompt",
                    code="invalid_value",
                )
            ids.append(list(item))
            texts.append(tokenizer.decode(item))
    return ids, texts


def domain_prompt_text(req: CompletionRequest) -> str:
    """The text to retrieve for: a domain request takes exactly one text prompt."""
    p = req.prompt
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if not isinstance(p, str):
        raise APIError(
            400, "A request to a domain takes one text prompt.", param="prompt", code="invalid_value"
        )
    return p


def prepare_completion(
    req: CompletionRequest,
    target: Target,
    engine: Engine,
    settings: Settings,
    hits: list[SearchHit] | None = None,
) -> PreparedCompletion:
    reject_unsupported(req, {"suffix": bool(req.suffix), "best_of": req.best_of not in (None, 1, req.n)})
    if req.echo and req.logprobs is not None:
        raise APIError(
            400,
            "logprobs with echo (log-probabilities of the prompt) are not supported; drop echo.",
            param="echo",
            code="unsupported_parameter",
        )
    window = engine.max_model_len
    profile = target.profile
    virtual = _virtual(target)
    used: list[SearchHit] = []
    report = None
    if profile is not None:
        # the domain's template around the prompt, passages as literal text, fitted to the window
        question = domain_prompt_text(req)
        reserve = reserve_for(req.requested_max_tokens, profile, window, settings)
        hits = list(hits or [])
        parts = domain_parts(profile, question, hits, with_system=False)
        assembled = assemble("text", engine, parts, reserve, "prompt", virtual)
        ids, texts = [assembled.prompt.token_ids], [question]
        rendered_texts = [assembled.prompt.text]
        used = hits[: assembled.passages_used]
        report = context_report(assembled, window, reserve, virtual)
    else:
        ids, texts = _tokenize_prompts(req, engine.tokenizer)
        rendered_texts = texts
    prompts = [EngineInput(i, target.soft_prompt) for i in ids]
    longest = max(p.length for p in prompts)
    for p in prompts:
        check_prompt_fits(p.length, window, "prompt")
    options = sampling_options(
        req, req.requested_max_tokens, longest, window, settings, profile.generation if profile else None
    )
    options = replace(options, logprobs=req.logprobs, constraint=request_constraint(req))
    return PreparedCompletion(
        target.model,
        [EngineRequest(p, options, target.adapter, affinity=target.domain) for p in prompts],
        texts,
        req.echo,
        sources(used) if profile is not None else None,
        report,
        "\n\n".join(rendered_texts) if req.return_prompt else None,
    )


# -- the whole path --------------------------------------------------------------------------------
@dataclass
class Pipeline:
    """Everything a request needs, gathered once per request by the API layer.

    The target is leased first (held until the response's last token: the caller releases
    ``prep.lease``); the prompt is built on the backbone tokenizer's own thread, never on the loop.
    """

    engine: Engine
    catalog: Catalog
    knowledge: KnowledgeBase
    settings: Settings
    gate: Gate | None = None
    metrics: Metrics | None = None

    async def _lease(
        self, req: ChatCompletionRequest | CompletionRequest, query: str
    ) -> tuple[Lease, dict | None, str | None]:
        """Hold what serves the request: ``req.model`` itself, or the gate's choice for ``auto`` and
        for a routing domain (the base model, or the routing domain, when nothing clears the bar).

        The choice is made before the hold (scoring awaits): a chosen domain deleted in between
        is reported and the fallback serves, rather than a 404 for a domain the client never named.
        """
        model, fallback, gate, header = await self._route(req.model, query)
        try:
            return self.catalog.acquire(model, req.adapter, req.soft_prompt), gate, header
        except CatalogError as exc:
            if gate is None or fallback is None or exc.status != 404 or model == fallback:
                raise
        assert gate is not None
        gate = {**gate, "served": fallback, "domain": None, "decision": "domain_removed"}
        return self.catalog.acquire(fallback, req.adapter, req.soft_prompt), gate, header

    async def _route(
        self, model: str, query: str
    ) -> tuple[str, str | None, dict[str, Any] | None, str | None]:
        """(model that serves, its fallback, the gate's decision, its header); no gate: ``model``."""
        if self.gate is None:
            return model, None, None, None
        if model == AUTO:
            among, threshold, fallback = None, None, self.catalog.base_name
        else:
            profile = self.catalog.profile(model) if self.catalog.owner(model) == "domain" else None
            if profile is None or profile.route is None:
                return model, None, None, None
            among, threshold, fallback = profile.route.domains, profile.route.threshold, model
        decision = await self.gate.decide(query, among, threshold)
        served = decision.domain or fallback
        if self.metrics is not None:
            self.metrics.gate.labels(served, decision.decision, decision.method).inc()
            self.metrics.gate_seconds.observe(decision.seconds)
        return served, fallback, decision.public(served), decision.header(served)

    async def chat(self, req: ChatCompletionRequest) -> PreparedChat:
        lease, gate, header = await self._lease(req, last_user_text(req))
        try:
            hits = await self._hits(lease.target, req.retrieval, last_user_text(req))
            prep = await self.engine.tokens.run(
                prepare_chat, req, lease.target, self.engine, self.settings, hits
            )
        except BaseException:
            lease.release()
            raise
        prep.lease, prep.gate, prep.gate_header = lease, gate, header
        return prep

    async def completion(self, req: CompletionRequest) -> PreparedCompletion:
        gated = req.model == AUTO or self.catalog.owner(req.model) == "domain"
        lease, gate, header = await self._lease(req, domain_prompt_text(req) if gated else "")
        try:
            target = lease.target
            query = domain_prompt_text(req) if target.profile is not None else ""
            hits = await self._hits(target, req.retrieval, query)
            prep = await self.engine.tokens.run(
                prepare_completion, req, target, self.engine, self.settings, hits
            )
        except BaseException:
            lease.release()
            raise
        prep.lease, prep.gate, prep.gate_header = lease, gate, header
        return prep

    async def _hits(self, target: Target, override, query: str) -> list[SearchHit] | None:
        if target.profile is None:
            return None
        return await retrieve(self.knowledge, target.profile, override, query)
