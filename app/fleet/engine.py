"""The backbone served by a fleet of plain ``vllm serve`` replicas (``TAILOR_ENGINE__BACKEND=remote``).

Tailor stays the owner of everything above the engine — domains, retrieval, templates, soft
prompts, the catalog and its leases — and renders and tokenizes as with the embedded engine; a
replica receives token ids (or server-built prompt embeddings) on its ``/v1/completions`` route.
This class is the fleet's one owner: it routes each request (``app.fleet.policy``), loads the
request's adapter where it is routed (``/v1/load_lora_adapter``; LRU eviction within each replica's
capacity), fails over before the first token, and keeps probing replicas that went away.

Start-up identifies every replica that answers (model name, window, tokenizer, greedy output on a
probe) and refuses a fleet whose replicas differ, or whose tokenizer is not the one Tailor renders
prompts with. A replica that joins later with another backbone is kept out (``mismatched``).

Prefix-tuning soft prompts run on Tailor's own transformers path (``app.engine.prefix_path``), as
with the embedded engine: vLLM has no way to take per-layer key/value prefixes over its API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from app.config import EngineSettings
from app.engine.base import (
    AdapterRef,
    Engine,
    EngineInput,
    EngineInterrupted,
    EngineOverloaded,
    EngineRequest,
    EngineStartError,
    EngineStats,
    EngineUnavailable,
    InvalidEngineRequest,
    OutputDelta,
    SamplingOptions,
    check_continuation,
    on_transformers,
)
from app.engine.embeds import embedding_table, prompt_embeds
from app.fleet.metrics import FleetMetrics
from app.fleet.policy import RouteKey, make_policy
from app.fleet.replica import Identity, Replica
from app.fleet.wire import completion_body, deltas, error_message, parse_event
from app.loading import loading
from prompts.tokenizer import PromptTokenizer

log = logging.getLogger(__name__)

#: Text whose token ids identify a tokenizer (specials, digits, accents, code, CJK, emoji).
PROBE_TEXT = "<|im_start|>user\nTailor 0123456789 naïve café — def f(x): return x**2 东京 🙂<|im_end|>"
#: Greedy continuation of this prompt identifies the weights (and their dtype).
PROBE_PROMPT = "The capital of France is"
PROBE_TOKENS = 8


class ReplicaDown(Exception):
    """The replica failed as a server (refused, timed out, 5xx, broken stream)."""


class AdapterUnavailable(Exception):
    """This replica cannot load the adapter (a path it cannot read, a rank it does not take)."""


class AdapterGone(Exception):
    """The replica no longer knows an adapter Tailor thought it held (it restarted, or another
    Tailor unloaded it): load it again."""


class Busy(Exception):
    """The replica answered 429/503-busy: try another."""


def served_adapter(ref: AdapterRef) -> str:
    """The adapter's name on the replicas: its name and a digest of its weights file.

    Stable across Tailor restarts and shared by several Tailors (the same weights keep the same
    name, so a replica's loaded copy stays usable), new when the weights are replaced.
    """
    folder = Path(ref.path)
    parts = [ref.path]
    for file in sorted(folder.glob("adapter_model*")) or [folder]:
        with contextlib.suppress(OSError):
            st = file.stat()
            parts.append(f"{file.name}:{st.st_size}:{st.st_mtime_ns}")
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=5).hexdigest()
    return f"{ref.name}@{digest}"


def _waiting(metrics: str) -> int:
    """``vllm:num_requests_waiting`` summed over the replica's engines."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("vllm:num_requests_waiting{") or line.startswith("vllm:num_requests_waiting "):
            with contextlib.suppress(ValueError):
                total += float(line.rsplit(" ", 1)[1])
    return int(total)


class RemoteEngine(Engine):
    """A fleet of vLLM OpenAI-compatible servers behind the ``Engine`` interface."""

    def __init__(self, settings: EngineSettings, model: str, adapters_root: str = "") -> None:
        self.settings = settings
        #: The adapters dir as Tailor sees it (mapped to ``replica_adapters_dir`` for the replicas).
        self.adapters_root = adapters_root
        self.model = model  # the local checkpoint: tokenizer, embedding table, prefix path, training
        self.max_model_len = 0
        self.max_lora_rank = settings.max_lora_rank if settings.max_loras > 0 else 0
        capacity = max(settings.max_cpu_loras, settings.max_loras) if self.max_lora_rank else 0
        self.replicas = [Replica(url, capacity) for url in settings.server_urls]
        self._by_url = {r.url: r for r in self.replicas}
        self.policy = make_policy(settings.routing)
        self.metrics = FleetMetrics()
        self._served_base = ""
        self._reference: Identity | None = None
        self._client: Any = None
        self._monitor: asyncio.Task | None = None
        self._tokenizer: Any = None
        self._decoder: Any = None
        self._table: Any = None
        self._prefix: Any = None
        self._overrides: dict[str, Any] = {}
        self._probe_ids: tuple[int, ...] = ()
        self._stopped = False
        #: Registered adapters' names on the replicas, by engine id (see ``served_adapter``).
        self._names: dict[int, str] = {}
        #: Their folders as the replicas see the shared volume, by replicas' name.
        self._paths: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        import httpx

        await asyncio.to_thread(loading, self._load_local)
        s = self.settings
        headers = {"Authorization": f"Bearer {s.server_api_key}"} if s.server_api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(s.replica_timeout_s, connect=s.replica_connect_timeout_s, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )
        deadline = time.monotonic() + s.fleet_wait_s
        found: dict[str, Identity] = {}
        problems: dict[str, str] = {}
        while not found and time.monotonic() < deadline:
            results = await asyncio.gather(
                *(self._identify(r) for r in self.replicas), return_exceptions=True
            )
            for replica, result in zip(self.replicas, results, strict=True):
                if isinstance(result, Identity):
                    found[replica.url] = result
                else:
                    problems[replica.url] = str(result) or type(result).__name__
            if not found:
                await asyncio.sleep(1.0)
        if not found:
            await self._close_client()
            listing = "; ".join(f"{url}: {why}" for url, why in problems.items())
            raise EngineStartError(
                f"no vLLM replica answered within {s.fleet_wait_s:g} s ({listing})", permanent=False
            )
        self._check_fleet(found)
        reference = next(found[r.url] for r in self.replicas if r.url in found)
        self._reference = reference
        self._served_base = reference.model
        self.max_model_len = reference.max_model_len
        for replica in self.replicas:
            if replica.url in found:
                replica.mark_up(found[replica.url])
            else:
                replica.mark_down(
                    problems.get(replica.url, "no answer"), s.probe_backoff_s, s.probe_backoff_max_s
                )
                log.warning("replica %s is not serving yet (%s); probing it", replica.url, replica.reason)
        self._monitor = asyncio.create_task(self._watch(), name="tailor-fleet-monitor")
        healthy = [r.url for r in self.replicas if r.healthy]
        log.info(
            "fleet ready: %s on %d/%d replicas (%s), window %d",
            reference.model,
            len(healthy),
            len(self.replicas),
            ", ".join(healthy),
            self.max_model_len,
        )

    def _load_local(self) -> None:
        """Tokenizers (markup and literal for prompts, a third for decoding) and the window plan."""
        from transformers import AutoTokenizer

        from app.window import model_config, plan_window

        self._tokenizer = PromptTokenizer(
            AutoTokenizer.from_pretrained(self.model),
            AutoTokenizer.from_pretrained(self.model, split_special_tokens=True),
        )
        self._decoder = AutoTokenizer.from_pretrained(self.model)
        self._probe_ids = tuple(self._decoder.encode(PROBE_TEXT, add_special_tokens=False))
        with contextlib.suppress(Exception):
            self._overrides = plan_window(self.settings, model_config(self.model)).transformers_overrides()

    def _check_fleet(self, found: dict[str, Identity]) -> None:
        """Every answering replica serves one backbone, the one Tailor tokenizes for."""
        local = self._probe_ids
        urls = list(found)
        first = found[urls[0]]
        lines = []
        for url in urls:
            if found[url].vocabulary != local:
                lines.append(f"{url} tokenizes differently from Tailor's backbone {self.model}")
        for url in urls[1:]:
            diff = first.differences(found[url])
            if diff:
                lines.append(f"{url} serves {', '.join(diff)} (compared with {urls[0]})")
        wanted = self.settings.context_length or self.settings.max_model_len
        if wanted and wanted != first.max_model_len:
            lines.append(
                f"the replicas' window is {first.max_model_len} tokens but Tailor is configured for {wanted} "
                "(start the replicas with the same --max-model-len, or drop TAILOR_ENGINE__MAX_MODEL_LEN)"
            )
        if lines:
            raise EngineStartError("mismatched fleet: " + "; ".join(lines), permanent=True)

    async def stop(self) -> None:
        self._stopped = True
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(BaseException):
                await monitor
        prefix, self._prefix = self._prefix, None
        if prefix is not None:
            await prefix.close()
        await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    #: Replicas that go away are probed and rejoin: the supervisor never restarts a fleet.
    self_healing = True

    @property
    def ready(self) -> bool:
        return self._client is not None and any(r.healthy for r in self.replicas)

    def not_ready_reason(self) -> str:
        down = "; ".join(f"{r.url} {r.state}: {r.reason}" for r in self.replicas)
        return f"no vLLM replica is healthy ({down}); probing them"

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def describe_window(self) -> dict[str, Any]:
        return {"max_model_len": self.max_model_len, "source": "the replicas' --max-model-len"}

    def transformers_overrides(self) -> dict[str, Any]:
        return self._overrides

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "remote",
            "policy": self.policy.name,
            "healthy": sum(r.healthy for r in self.replicas),
            "replicas": [r.describe() for r in self.replicas],
        }

    def metrics_text(self) -> bytes:
        return self.metrics.render(self.replicas)

    async def guard_status(self) -> dict[str, Any]:
        return {
            "active": None,
            "lora": bool(self.max_lora_rank),
            "reason": "the replicas run the guard themselves (a vLLM plugin in their environment); "
            "their API does not report it",
        }

    def stats(self) -> EngineStats:
        prefix = self._prefix.running if self._prefix is not None else 0
        return EngineStats(running_requests=sum(r.outstanding for r in self.replicas) + prefix)

    # -- talking to one replica ----------------------------------------------------------------
    async def _get(self, replica: Replica, path: str, timeout: float | None = None) -> Any:
        import httpx

        try:
            resp = await self._client.get(
                replica.url + path, timeout=timeout or self.settings.probe_timeout_s
            )
        except httpx.HTTPError as exc:
            raise ReplicaDown(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
        if resp.status_code != 200:
            raise ReplicaDown(f"{path} answered {resp.status_code}: {error_message(resp.content)}")
        return resp

    async def _post(
        self, replica: Replica, path: str, body: dict[str, Any], timeout: float | None = None
    ) -> Any:
        import httpx

        try:
            return await self._client.post(replica.url + path, json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            raise ReplicaDown(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc

    async def _identify(self, replica: Replica) -> Identity:
        """What the replica serves (its base model card, tokenizer probe and greedy probe) and the
        adapters it holds, from one listing of its models."""
        t = self.settings.probe_timeout_s
        models = (await self._get(replica, "/v1/models", t)).json()["data"]
        base = next((m for m in models if not m.get("parent")), models[0])
        name = base["id"]
        resp = await self._post(
            replica, "/tokenize", {"model": name, "prompt": PROBE_TEXT, "add_special_tokens": False}, t
        )
        if resp.status_code != 200:
            raise ReplicaDown(f"/tokenize answered {resp.status_code}: {error_message(resp.content)}")
        vocabulary = tuple(resp.json()["tokens"])
        body = {
            "model": name,
            "prompt": PROBE_PROMPT,
            "max_tokens": PROBE_TOKENS,
            "temperature": 0.0,
            "return_token_ids": True,
        }
        resp = await self._post(replica, "/v1/completions", body, max(t, 30.0))
        if resp.status_code != 200:
            raise ReplicaDown(f"probe completion answered {resp.status_code}: {error_message(resp.content)}")
        greedy = tuple(resp.json()["choices"][0].get("token_ids") or ())
        # adapters it already holds under Tailor's names (a replica that outlived a Tailor restart)
        held = tuple(m["id"] for m in models if m.get("parent") and "@" in m["id"])
        return Identity(name, int(base.get("max_model_len") or 0), vocabulary, greedy, held)

    def _down(self, replica: Replica, reason: str) -> None:
        if replica.healthy:
            log.warning("replica %s is down: %s", replica.url, reason)
        replica.mark_down(reason, self.settings.probe_backoff_s, self.settings.probe_backoff_max_s)
        self.metrics.error(replica.url, "down")

    # -- the monitor: queue depth of healthy replicas, probes of the others ---------------------
    async def _watch(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.settings.probe_interval_s)
            await asyncio.gather(*(self._check(r) for r in self.replicas), return_exceptions=True)

    async def _check(self, replica: Replica) -> None:
        if replica.healthy:
            try:
                replica.waiting = _waiting((await self._get(replica, "/metrics")).text)
            except ReplicaDown as exc:
                self._down(replica, str(exc))
            return
        if time.monotonic() < replica.retry_at:
            return
        try:
            await self._get(replica, "/health")
            identity = await self._identify(replica)
        except Exception as exc:  # noqa: BLE001 - any failure keeps it out, with its reason
            replica.mark_down(
                str(exc) or type(exc).__name__,
                self.settings.probe_backoff_s,
                self.settings.probe_backoff_max_s,
            )
            return
        assert self._reference is not None
        diff = self._reference.differences(identity)
        if diff:
            replica.mark_down(
                f"serves {', '.join(diff)}",
                self.settings.probe_backoff_s,
                self.settings.probe_backoff_max_s,
                state="mismatched",
            )
            log.error("replica %s kept out: it serves %s", replica.url, ", ".join(diff))
            return
        replica.mark_up(identity)
        self.metrics.rejoined(replica.url)
        log.info("replica %s rejoined", replica.url)

    # -- adapters ------------------------------------------------------------------------------
    def _replica_path(self, ref: AdapterRef) -> str:
        """The adapter's folder as the replicas see the shared adapters volume."""
        mapped = self.settings.replica_adapters_dir
        if not mapped:
            return ref.path
        root = os.path.realpath(self.adapters_root) if self.adapters_root else ""
        path = os.path.realpath(ref.path)
        if root and path.startswith(root + os.sep):
            return mapped.rstrip("/") + "/" + os.path.relpath(path, root)
        return ref.path

    async def _load_on(self, replica: Replica, ref: AdapterRef, name: str) -> None:
        path = self._paths.get(name) or ref.path
        resp = await self._post(replica, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        if resp.status_code == 200:
            self.metrics.adapter_load(replica.url)
            return
        message = error_message(resp.content)
        if resp.status_code == 400 and "already been loaded" in message:
            return
        if resp.status_code == 404 and "load_lora_adapter" in message.lower():
            raise AdapterUnavailable(
                f"{replica.url} does not allow loading adapters at run time (start it with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora)"
            )
        raise AdapterUnavailable(f"{replica.url} could not load adapter '{ref.name}' from {path}: {message}")

    async def _unload_on(self, replica: Replica, name: str) -> None:
        with contextlib.suppress(ReplicaDown):
            await self._post(replica, "/v1/unload_lora_adapter", {"lora_name": name})

    async def _ensure(self, replica: Replica, ref: AdapterRef, name: str) -> None:
        """The adapter loaded on this replica: resident, or loaded now (one load shared by every
        request that needs it), evicting the least recently used idle adapter when full."""
        if name in replica.resident:
            replica.touch(name)
            return
        pending = replica.loading.get(name)
        if pending is not None:
            await asyncio.shield(pending)
            return
        victim = replica.victim()
        future = asyncio.get_running_loop().create_future()
        replica.loading[name] = future
        if victim is not None:
            replica.resident.pop(victim, None)
        try:
            if victim is not None:
                await self._unload_on(replica, victim)
                self.metrics.adapter_eviction(replica.url)
            await self._load_on(replica, ref, name)
            if replica.healthy:
                replica.resident[name] = None
            future.set_result(None)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else AdapterUnavailable("load cancelled"))
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            replica.loading.pop(name, None)

    async def add_adapter(self, adapter: AdapterRef) -> None:
        """Load the adapter where requests for it will go first, so a bad one fails now."""
        if not self.max_lora_rank:
            raise InvalidEngineRequest("LoRA is turned off (TAILOR_ENGINE__MAX_LORAS=0)")
        if adapter.peft_path is not None:  # PEFT's own model, on Tailor's transformers path
            await asyncio.to_thread(self._prefix_path().add_adapter, adapter)
            return
        # both read the adapters volume: off the loop, once per registration
        name = await asyncio.to_thread(served_adapter, adapter)
        self._paths[name] = await asyncio.to_thread(self._replica_path, adapter)
        self._names[adapter.id] = name
        for replica in self.replicas:
            replica.refused.pop(name, None)
        errors = []
        for replica in self._ranked(RouteKey(name, None), set()):
            try:
                await self._ensure(replica, adapter, name)
                return
            except AdapterUnavailable as exc:
                replica.refused[name] = str(exc)
                errors.append(str(exc))
            except ReplicaDown as exc:
                self._down(replica, str(exc))
        if errors:
            raise InvalidEngineRequest("; ".join(errors))
        raise EngineUnavailable("no vLLM replica is serving")

    async def remove_adapter(self, adapter: AdapterRef) -> None:
        """Unload everywhere (the catalog calls this once no request holds the adapter)."""
        if adapter.peft_path is not None:
            if self._prefix is not None:
                await asyncio.to_thread(self._prefix.remove_adapter, adapter)
            return
        name = self._names.pop(adapter.id, None) or await asyncio.to_thread(served_adapter, adapter)
        self._paths.pop(name, None)
        for replica in self.replicas:
            pending = replica.loading.get(name)
            if pending is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pending)
            replica.refused.pop(name, None)
            if replica.resident.pop(name, 0) is None:
                await self._unload_on(replica, name)

    def _served(self, ref: AdapterRef) -> str:
        """The replicas' name of a registered adapter (named once, at registration: a request never
        reads the adapters volume on the event loop)."""
        name = self._names.get(ref.id)
        if name is None:
            raise InvalidEngineRequest(f"adapter '{ref.name}' is not registered with the engine")
        return name

    # -- routing -------------------------------------------------------------------------------
    def _ranked(self, key: RouteKey, tried: set[str]) -> list[Replica]:
        candidates = [
            r
            for r in self.replicas
            if r.healthy and r.url not in tried and not (key.adapter and key.adapter in r.refused)
        ]
        if not candidates:
            return []
        decision = self.policy.rank([r.view() for r in candidates], key)
        if decision.ranked:
            self.metrics.choice(decision.ranked[0].name, self.policy.name, decision.reason)
        return [self._by_url[v.name] for v in decision.ranked]

    async def _body(self, request: EngineRequest, model: str, request_id: str) -> dict[str, Any]:
        embeds = None
        if request.prompt.soft_prompt is not None:
            embeds = await asyncio.to_thread(self._embeds, request.prompt)
        return completion_body(request, model, embeds, request_id)

    def _embeds(self, prompt: EngineInput) -> Any:
        if self._table is None:
            import torch

            dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(
                self.settings.dtype, torch.float32
            )
            self._table = embedding_table(self.model, dtype)
        return prompt_embeds(self._table, prompt.token_ids, prompt.soft_prompt)

    async def _stream(
        self, replica: Replica, body: dict[str, Any], k: int | None
    ) -> AsyncIterator[list[OutputDelta]]:
        """One streamed completion on one replica; ``started`` errors become ``EngineInterrupted``."""
        import httpx

        started = False
        try:
            async with self._client.stream("POST", replica.url + "/v1/completions", json=body) as resp:
                if resp.status_code != 200:
                    message = error_message(await resp.aread())
                    if resp.status_code == 404 and "does not exist" in message:
                        raise AdapterGone(message)
                    if resp.status_code in (429, 503) and "overload" in message.lower():
                        raise Busy(message)
                    if resp.status_code >= 500:
                        raise ReplicaDown(f"{resp.status_code}: {message}")
                    raise InvalidEngineRequest(message)
                done = False
                async for line in resp.aiter_lines():
                    if line.strip() == "data: [DONE]":
                        done = True
                        break
                    payload = parse_event(line)
                    if payload is None:
                        continue
                    if "error" in payload and not payload.get("choices"):
                        # vLLM reports a failure of this request in the stream (the replica itself
                        # stays in routing: a dead engine fails its probes instead)
                        raise InvalidEngineRequest(
                            f"the replica reported: {error_message(line[5:].encode())}"
                        )
                    out = deltas(payload, k, self._decode)
                    if out:
                        started = True
                        yield out
                if not done:
                    raise ReplicaDown("the stream ended without [DONE]")
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            if started:
                raise EngineInterrupted(f"replica {replica.url} failed while generating ({reason})") from exc
            raise ReplicaDown(reason) from exc
        except ReplicaDown as exc:
            if started:
                raise EngineInterrupted(f"replica {replica.url} failed while generating ({exc})") from exc
            raise

    def _decode(self, token_id: int) -> str:
        return self._decoder.decode([token_id])

    async def _routed(
        self, request: EngineRequest, request_id: str, extra: dict[str, Any] | None = None
    ) -> AsyncIterator[list[OutputDelta]]:
        """Route, load the adapter, stream; fail over to the next replica before the first token."""
        if self._client is None:
            raise EngineUnavailable("the engine is not running")
        if request.adapter is not None and not self.max_lora_rank:
            raise InvalidEngineRequest("LoRA is turned off (TAILOR_ENGINE__MAX_LORAS=0)")
        adapter = self._served(request.adapter) if request.adapter is not None else None
        key = RouteKey(adapter, request.affinity or (request.adapter.name if request.adapter else None))
        k = request.options.logprobs
        tried: set[str] = set()
        errors: list[str] = []
        busy = False
        attempt = 0
        while True:
            ranked = self._ranked(key, tried)
            if not ranked:
                break
            replica = ranked[0]
            tried.add(replica.url)
            attempt += 1
            body = await self._body(request, adapter or self._served_base, f"{request_id}-{attempt}")
            if extra:
                body |= extra
            replica.outstanding += 1
            if adapter:
                replica.users[adapter] += 1
            self.metrics.request(replica.url)
            try:
                for reload in (False, True):
                    try:
                        if request.adapter is not None:
                            await self._ensure(replica, request.adapter, adapter)
                        async for out in self._stream(replica, body, k):
                            yield out
                        return
                    except AdapterGone:
                        replica.resident.pop(adapter, None)
                        if reload or adapter is None:
                            raise ReplicaDown("the replica lost the adapter twice") from None
            except AdapterUnavailable as exc:
                replica.refused[adapter] = str(exc)
                errors.append(str(exc))
            except Busy as exc:
                busy = True
                errors.append(f"{replica.url}: {exc}")
            except ReplicaDown as exc:
                self._down(replica, str(exc))
                errors.append(f"{replica.url}: {exc}")
            except EngineInterrupted:
                self.metrics.error(replica.url, "interrupted")
                self._down(replica, "failed while generating")
                raise
            finally:
                replica.outstanding -= 1
                if adapter:
                    replica.users[adapter] -= 1
        if busy:
            raise EngineOverloaded("every replica is busy: " + "; ".join(errors))
        if adapter and any(adapter in r.refused for r in self.replicas) and errors:
            raise EngineUnavailable(
                "no replica could load the adapter: "
                + "; ".join(errors)
                + " (every replica must read the shared adapters volume at the same path, "
                "or TAILOR_ENGINE__REPLICA_ADAPTERS_DIR must say where they mount it)"
            )
        raise EngineUnavailable(
            "no vLLM replica could serve the request"
            + (": " + "; ".join(errors) if errors else " (none is healthy)")
        )

    # -- the Engine interface ------------------------------------------------------------------
    def _prefix_path(self) -> Any:
        if self._prefix is None:
            from app.engine.prefix_path import PrefixPath

            self._prefix = PrefixPath(
                self.model, self._decoder, self.settings.prefix_max_batch, self._overrides
            )
        return self._prefix

    async def generate(self, request: EngineRequest, request_id: str) -> AsyncIterator[list[OutputDelta]]:
        if on_transformers(request):
            async for out in self._prefix_path().generate(request, request_id):
                yield out
            return
        async for out in self._routed(request, request_id):
            yield out

    async def continuation_logprob(
        self, prompt: EngineInput, continuation: list[int], request_id: str, adapter: AdapterRef | None = None
    ) -> float:
        """Token by token, each forced with ``allowed_token_ids`` (as the embedded engine scores)."""
        check_continuation(prompt, continuation, self.max_model_len)
        total = 0.0
        options = SamplingOptions(max_tokens=1, temperature=0.0, logprobs=0)
        for j, token in enumerate(continuation):
            step = EngineRequest(
                EngineInput(prompt.token_ids + continuation[:j], prompt.soft_prompt), options, adapter
            )
            logprob = None
            async for out in self._routed(step, f"{request_id}-{j}", {"allowed_token_ids": [token]}):
                for d in out:
                    if d.logprobs:
                        logprob = d.logprobs[0].logprob
            if logprob is None:
                raise EngineUnavailable("a replica returned no log-probability")
            total += float(logprob)
        return total
