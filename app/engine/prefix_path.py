"""Prefix tuning served with transformers: per-layer key/value prefixes as the cache's first entries.

vLLM has no way to put learned key/values into its paged cache on this build (prompt adapters
were removed, KV connectors transfer computed caches between instances and are not built for the
CPU backend), so requests with a prefix-tuning prompt run here instead, behind the same engine
interface: the backbone loaded once with transformers (fp32 on CPU), batches of waiting requests
prefilled together (left-padded; each row gets its own prefix, all of one length), then decoded
step by step with per-row sampling, stops and streaming. It is slower than vLLM (no paged
attention, no continuous batching: a batch runs to its end before the next starts); the cost is
measured in ``bench/soft_prompts.py``.

Positions follow training (PEFT): the prefix takes positions 0..n-1, the prompt starts at n, and
prefix keys carry no rotary position.

The same path serves PEFT adapters vLLM cannot serve faithfully (an AdaLoRA / LoHa / LoKr / IA3
adapter whose LoRA conversion fell below the agreement bar, ``app.adapters.service``): PEFT's own
model, one copy of the backbone per PEFT method in use with every adapter of that method loaded
into it, the batch's adapter switched on before it runs. Batches never mix adapters or prefix
lengths. One lock owns the models: a batch, a load and an unload never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from app.engine.base import AdapterRef, EngineRequest, InvalidEngineRequest, OutputDelta, SamplingOptions
from soft_prompts.prefix_tuning import to_past_key_values

log = logging.getLogger(__name__)


@dataclass
class _Row:
    """One choice of one request while it decodes."""

    request: EngineRequest
    index: int
    out: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    generator: Any = None
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    done: bool = False
    cancelled: bool = False


@dataclass
class _Pending:
    request: EngineRequest
    rows: list[_Row]


class PrefixPath:
    """Generation for prefix-tuning requests; one batch runs at a time in a worker thread."""

    def __init__(
        self,
        model_path: str,
        tokenizer: Any,
        max_batch: int = 8,
        config_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.model_path = model_path
        #: The engine's RoPE scaling and window, so prefixes see the positions vLLM serves.
        self.config_overrides = dict(config_overrides or {})
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self._model: Any = None
        self._load_lock = threading.RLock()
        #: PEFT method → PeftModel over its own copy of the backbone; adapter id → (method, name)
        self._peft: dict[str, Any] = {}
        self._adapters: dict[int, tuple[str, str]] = {}
        self._queue: list[_Pending] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.running = 0

    # -- model -------------------------------------------------------------------------------------
    def _load(self) -> Any:
        with self._load_lock:
            if self._model is None:
                import torch
                from transformers import AutoModelForCausalLM

                model = AutoModelForCausalLM.from_pretrained(
                    self.model_path, dtype=torch.float32, **self.config_overrides
                )
                model.eval()
                self._model = model
                log.info("prefix-tuning path loaded %s", self.model_path)
        return self._model

    # -- PEFT adapters (blocking: call in a thread) -----------------------------------------------
    def add_adapter(self, ref: AdapterRef) -> None:
        """Load ``ref``'s PEFT folder (safetensors, checked by the adapter service) under its id."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        assert ref.peft_path is not None
        with open(f"{ref.peft_path}/adapter_config.json", encoding="utf-8") as f:
            method = json.load(f)["peft_type"]
        name = f"a{ref.id}"
        with self._load_lock:
            if ref.id in self._adapters:
                return
            model = self._peft.get(method)
            if model is None:
                base = AutoModelForCausalLM.from_pretrained(
                    self.model_path, dtype=torch.float32, **self.config_overrides
                )
                model = PeftModel.from_pretrained(base, ref.peft_path, adapter_name=name)
                model.eval()
                self._peft[method] = model
            else:
                model.load_adapter(ref.peft_path, adapter_name=name)
            self._adapters[ref.id] = (method, name)
            log.info("transformers path loaded adapter %s (%s)", ref.name, method)

    def remove_adapter(self, ref: AdapterRef) -> None:
        with self._load_lock:
            method, name = self._adapters.pop(ref.id, (None, None))
            if method is None:
                return
            model = self._peft[method]
            if not any(m == method for m, _ in self._adapters.values()):
                del self._peft[method]  # the last adapter of its method: free the backbone copy
            else:
                model.delete_adapter(name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self._model = None

    # -- requests ----------------------------------------------------------------------------------
    async def generate(self, request: EngineRequest, request_id: str) -> AsyncIterator[list[OutputDelta]]:
        o = request.options
        adapter, soft = request.adapter, request.prompt.soft_prompt
        if adapter is not None and adapter.peft_path is None:
            raise InvalidEngineRequest("a prefix-tuning soft prompt cannot be combined with a LoRA adapter")
        if adapter is not None and soft is not None:
            raise InvalidEngineRequest(
                f"the adapter '{adapter.name}' is served by PEFT on the transformers path, where soft "
                "prompts are not available"
            )
        if o.constraint is not None or o.logprobs is not None:
            what = "structured outputs (response_format, tools)" if o.constraint is not None else "logprobs"
            who = (
                f"the adapter '{adapter.name}' (served by PEFT: its LoRA conversion disagreed)"
                if adapter is not None
                else "a prefix-tuning soft prompt"
            )
            raise InvalidEngineRequest(
                f"{what} are not available with {who}: it is served by the transformers path, which "
                "has no grammar-constrained decoding or log-probabilities"
            )
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()
        rows = [_Row(request, i, out, loop) for i in range(o.n)]
        if adapter is not None:
            await asyncio.to_thread(self.add_adapter, adapter)  # loaded already, unless just restarted
        else:
            await asyncio.to_thread(self._load)
        self._queue.append(_Pending(request, rows))
        self._ensure_worker()
        self._wake.set()
        self.running += 1
        finished = 0
        try:
            while finished < len(rows):
                delta = await out.get()
                if isinstance(delta, BaseException):
                    raise delta
                if delta.finish_reason is not None:
                    finished += 1
                yield [delta]
        finally:
            self.running -= 1
            for r in rows:
                r.cancelled = True

    def _ensure_worker(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._worker(), name="prefix-path")

    async def _worker(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._take()
                try:
                    await asyncio.to_thread(self._run, batch)
                except Exception as exc:  # noqa: BLE001 - reported to each waiting request
                    log.exception("prefix-tuning batch failed")
                    for r in batch:
                        if not r.done:
                            r.loop.call_soon_threadsafe(r.out.put_nowait, exc)

    @staticmethod
    def _group(request: EngineRequest) -> tuple[int, int | None]:
        """Rows of one batch share this: the prefix length and the adapter."""
        soft, adapter = request.prompt.soft_prompt, request.adapter
        return (
            soft.num_virtual_tokens if soft is not None else 0,
            adapter.id if adapter is not None else None,
        )

    def _take(self) -> list[_Row]:
        """Up to ``max_batch`` rows of the first waiting request's group (prefix length, adapter)."""
        group = self._group(self._queue[0].request)
        rows: list[_Row] = []
        keep: list[_Pending] = []
        for p in self._queue:
            fits = self._group(p.request) == group
            if fits and (not rows or len(rows) + len(p.rows) <= self.max_batch):
                rows += p.rows
            else:
                keep.append(p)
        self._queue = keep
        return [r for r in rows if not r.cancelled]

    # -- the batch, in a worker thread -------------------------------------------------------------
    def _run(self, rows: list[_Row]) -> None:
        if not rows:
            return
        with self._load_lock:
            adapter = rows[0].request.adapter
            if adapter is None:
                self._decode(self._model, rows)
                return
            method, name = self._adapters[adapter.id]
            model = self._peft[method]
            model.set_adapter(name)
            self._decode(model, rows)

    def _decode(self, model: Any, rows: list[_Row]) -> None:
        import torch
        from transformers import DynamicCache

        cfg = model.config
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        layers = cfg.num_hidden_layers
        soft = rows[0].request.prompt.soft_prompt
        n_virtual = soft.num_virtual_tokens if soft is not None else 0
        prompts = [r.request.prompt.token_ids for r in rows]
        width = max(len(p) for p in prompts)
        b = len(rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((b, width), pad, dtype=torch.long)
        mask = torch.zeros((b, n_virtual + width), dtype=torch.long)
        mask[:, :n_virtual] = 1
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, n_virtual + width - len(p) :] = 1
        # each row's prefix as per-layer (key, value), concatenated over the batch
        per_row = [
            to_past_key_values(
                r.request.prompt.soft_prompt.tensor.to(torch.float32), layers, kv_heads, head_dim
            )
            for r in rows
            if n_virtual
        ]
        cache = DynamicCache()
        for layer in range(layers if n_virtual else 0):
            keys = torch.cat([kv[layer][0] for kv in per_row])
            values = torch.cat([kv[layer][1] for kv in per_row])
            cache.update(keys, values, layer)
        for r in rows:
            seed = r.request.options.seed
            if seed is not None:
                r.generator = torch.Generator().manual_seed(seed + r.index)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, n_virtual:]
        counts = torch.zeros((b, len(self.tokenizer)), dtype=torch.float32)
        prompt_seen = torch.zeros_like(counts)
        for i, p in enumerate(prompts):
            prompt_seen[i, p] = 1
        max_steps = max(r.request.options.max_tokens for r in rows)
        next_ids = ids
        with torch.inference_mode():
            for step in range(max_steps):
                logits = (
                    model(
                        input_ids=next_ids,
                        attention_mask=mask,
                        position_ids=positions,
                        past_key_values=cache,
                        use_cache=True,
                    )
                    .logits[:, -1, :]
                    .float()
                )
                chosen = torch.empty(b, dtype=torch.long)
                for i, r in enumerate(rows):
                    chosen[i] = self._sample(logits[i], r, step, counts[i], prompt_seen[i])
                for i, r in enumerate(rows):
                    if not r.done and not r.cancelled:
                        counts[i, chosen[i]] += 1
                        self._advance(r, int(chosen[i]))
                if all(r.done or r.cancelled for r in rows):
                    break
                next_ids = chosen.unsqueeze(1)
                mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long)], dim=1)
                positions = positions[:, -1:] + 1

    def _sample(self, logits: Any, row: _Row, step: int, counts: Any, prompt_seen: Any) -> int:
        import torch

        o: SamplingOptions = row.request.options
        if row.done or row.cancelled:
            return self.tokenizer.pad_token_id or 0
        if o.repetition_penalty != 1.0:
            seen = (counts > 0) | (prompt_seen > 0)
            penalised = torch.where(logits > 0, logits / o.repetition_penalty, logits * o.repetition_penalty)
            logits = torch.where(seen, penalised, logits)
        if o.frequency_penalty or o.presence_penalty:
            logits = logits - o.frequency_penalty * counts - o.presence_penalty * (counts > 0).float()
        eos = self._stop_ids(o)
        if step < o.min_tokens and eos:
            logits[list(eos)] = float("-inf")
        if o.temperature == 0:
            return int(torch.argmax(logits))
        logits = logits / o.temperature
        if o.top_k and o.top_k > 0:
            kth = torch.topk(logits, min(o.top_k, logits.numel())).values[-1]
            logits = torch.where(logits < kth, torch.full_like(logits, float("-inf")), logits)
        probs = torch.softmax(logits, dim=-1)
        if o.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            cutoff = sorted_p.cumsum(0) - sorted_p > o.top_p
            sorted_p[cutoff] = 0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        if o.min_p > 0:
            probs = torch.where(probs < o.min_p * probs.max(), torch.zeros_like(probs), probs)
        return int(torch.multinomial(probs / probs.sum(), 1, generator=row.generator))

    def _stop_ids(self, o: SamplingOptions) -> set[int]:
        ids = set(o.stop_token_ids)
        if not o.ignore_eos and self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _advance(self, row: _Row, token: int) -> None:
        """Append a token, decide whether the row is finished and send its new text."""
        o = row.request.options
        finish = stop_reason = None
        stopped_by_token = 0
        if token in self._stop_ids(o) and len(row.tokens) >= o.min_tokens:
            finish, stopped_by_token = "stop", 1  # counted as generated, not shown (as vLLM does)
            stop_reason = None if token == self.tokenizer.eos_token_id else token
        else:
            row.tokens.append(token)
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        if finish is None and o.stop:
            for s in o.stop:
                at = text.find(s, max(0, len(row.text) - len(s)))
                if at >= 0:
                    text, finish, stop_reason = text[:at], "stop", s
                    break
        if finish is None and len(row.tokens) >= o.max_tokens:
            finish = "length"
        if finish is None and text.endswith("\ufffd"):
            return  # half a character: wait for the rest of it
        delta = text[len(row.text) :]
        if finish is not None:
            row.done = True
        if delta or finish is not None:  # tokens that add no text are counted with the next delta
            counted = len(row.tokens) - row.sent + stopped_by_token
            row.text, row.sent = text, len(row.tokens)
            event = OutputDelta(row.index, delta, counted, finish, stop_reason)
            row.loop.call_soon_threadsafe(row.out.put_nowait, event)
