"""The one owner of every name a client may pass as ``model``: one namespace, one lock.

The backbone, the domains (configured profiles and knowledge stores), the LoRA adapters, the soft
prompts and the embedder share one namespace. The stores keep their records on disk; the catalog
decides who may take, use and drop a name, and every such decision is made under its one lock,
never across an ``await``:

- **create** reserves the name first (``creating``), so inspection, the engine load and the write
  happen while no one else can take it; a failure releases it;
- **resolve** (``acquire``) hands out a ``Lease`` on the adapter and soft prompt it names, held
  until the request's last token;
- **delete** (``remove``) refuses a member a domain profile names (409 naming the profiles, unless
  ``force`` detaches them), stops new leases, waits for the running ones up to a bounded timeout
  and then either finishes (engine removal, folder deletion) or gives the member back and answers
  409 ``*_in_use`` — it never pulls a folder from under a running request.

vLLM's ``OpenAIServingModels`` plays the same part for vLLM's server; this one also knows the
domains and the soft prompts.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from app.adapters.registry import AdapterRegistry
from app.domains.store import ProfileStore
from app.engine import AdapterRef, SoftPromptRef
from app.errors import ServiceError
from app.protocol.openai import ModelCard, ModelList
from app.protocol.profiles import DomainProfile, DomainProfileIn, default_profile

if TYPE_CHECKING:
    from app.knowledge.base import KnowledgeBase
    from app.soft_prompt_registry.service import SoftPromptService

Kind = Literal["adapter", "soft_prompt"]
_WHAT = {
    "base": "the base model",
    "domain": "a domain",
    "adapter": "an adapter",
    "soft_prompt": "a soft prompt",
    "embedder": "the embedding model",
    "gate": "the domain gate",
}
#: ``model: "auto"``: the gate picks the domain (``app.gate``); no domain or adapter may take it.
GATE_NAME = "auto"
_LABEL = {"adapter": "adapter", "soft_prompt": "soft prompt"}


class CatalogError(ServiceError):
    """A refused name operation (unknown, taken, referenced, in use)."""


def served_name(model: str, override: str) -> str:
    """The public name of the backbone: the override, else the checkpoint folder's name."""
    if override:
        return override
    path = Path(model)
    return path.name if path.name else model


@dataclass(frozen=True)
class Target:
    """What a request's ``model`` (and ``adapter`` / ``soft_prompt``) resolved to.

    It carries the profile itself, so a domain deleted after resolving is never served as the
    bare backbone.
    """

    model: str
    domain: str | None = None
    profile: DomainProfile | None = None
    adapter: AdapterRef | None = None
    soft_prompt: SoftPromptRef | None = None


class Lease:
    """A request's hold on the adapter and soft prompt it resolved to; ``release`` is idempotent.

    A lease dropped without ``release`` (a cancelled stream the server never iterated) is released
    when it is collected, so a lost lease can delay an unload but never block it for good.
    """

    def __init__(self, catalog: Catalog, target: Target, keys: tuple[tuple[str, str], ...]) -> None:
        self.target = target
        self._catalog = catalog
        self._keys = keys
        self._released = not keys

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._catalog._release(self._keys)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


@dataclass
class Catalog:
    profiles: ProfileStore
    knowledge: KnowledgeBase
    adapters: AdapterRegistry
    soft_prompts: SoftPromptService
    #: The backbone's name before the engine has started (``bind`` sets the served one).
    base_name: str
    #: Longest wait of a delete for the requests using a member, before it answers 409 in use.
    drain_timeout_s: float = 30.0
    base_root: str = ""
    context_window: int = 0
    created: int = field(default_factory=lambda: int(time.time()))
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _reserved: dict[str, str] = field(default_factory=dict, repr=False)
    #: Domains whose profile is being written: a second write of one waits for the first.
    _writing: set[str] = field(default_factory=set, repr=False)
    #: Signalled when a domain write ends (on the one lock).
    _written: threading.Condition = field(init=False, repr=False)
    _claimed: set[str] = field(default_factory=set, repr=False)
    _users: Counter = field(default_factory=Counter, repr=False)
    _closing: set[tuple[str, str]] = field(default_factory=set, repr=False)
    #: Members named by a profile that is being written (a delete treats them as referenced).
    _pinned: Counter = field(default_factory=Counter, repr=False)

    def __post_init__(self) -> None:
        self._written = threading.Condition(self._lock)

    # -- the engine ----------------------------------------------------------------------------
    def bind(self, base_name: str, base_root: str, context_window: int) -> None:
        """The started engine's backbone: its served name, checkpoint and window."""
        with self._lock:
            self.base_name, self.base_root, self.context_window = base_name, base_root, context_window

    # -- the namespace -------------------------------------------------------------------------
    def _owner(self, name: str) -> str | None:
        if name == self.base_name:
            return "base"
        if name == GATE_NAME:
            return "gate"
        if name in self._reserved:
            return self._reserved[name]
        if name in self._writing:
            return "domain"
        if self.adapters.get(name) is not None:
            return "adapter"
        if self.soft_prompts.get(name) is not None:
            return "soft_prompt"
        if name in self._claimed or self.profiles.get(name) is not None or self.knowledge.has(name):
            return "domain"
        if name == self.knowledge.embedder_name:
            return "embedder"
        return None

    def owner(self, name: str) -> str | None:
        """What answers to ``name``: 'base', 'domain', 'adapter', 'soft_prompt', 'embedder' or None."""
        with self._lock:
            return self._owner(name)

    def _taken(self, name: str, kind: str, owner: str) -> CatalogError:
        if owner == kind and name not in self._reserved:
            label = _LABEL.get(kind, kind)
            return CatalogError(
                409,
                f"{'An' if label[0] in 'aeiou' else 'A'} {label} named '{name}' already exists; delete it first.",
                code=f"{kind}_exists",
                param="name",
            )
        if name in self._reserved:
            return CatalogError(
                409,
                f"'{name}' is being created or changed by another request; retry.",
                code="name_taken",
                param="name",
            )
        return CatalogError(
            409, f"'{name}' is already the name of {_WHAT[owner]}.", code="name_taken", param="name"
        )

    @contextlib.contextmanager
    def creating(self, name: str, kind: str) -> Iterator[None]:
        """Hold ``name`` for a create of ``kind`` while it validates, loads and writes.

        The record must be written inside the block; leaving it (success or failure) drops the
        reservation, after which the store's record (if written) owns the name.
        """
        with self._lock:
            owner = self._owner(name)
            if owner is not None:
                raise self._taken(name, kind, owner)
            self._reserved[name] = kind
        try:
            yield
        finally:
            with self._lock:
                self._reserved.pop(name, None)

    def claim_domain(self, name: str) -> None:
        """A domain name about to get a knowledge store (ingestion): refused if another kind owns it."""
        with self._lock:
            owner = self._owner(name)
            if owner not in (None, "domain"):
                raise self._taken(name, "domain", owner)
            self._claimed.add(name)

    # -- domains -------------------------------------------------------------------------------
    def domain_names(self) -> list[str]:
        return sorted(set(self.profiles.names()) | set(self.knowledge.domains()))

    def profile(self, name: str) -> DomainProfile | None:
        """A domain's profile: its configured one, a default one for a bare knowledge store, or None."""
        found = self.profiles.get(name)
        if found is None and self.knowledge.has(name):
            return default_profile(name)
        return found

    def _missing_reference(self, kind: Kind, name: str) -> bool:
        exists = (self.adapters if kind == "adapter" else self.soft_prompts).get(name) is not None
        return not exists or (kind, name) in self._closing

    def _wait_for_writes(self, name: str) -> None:
        """Under the lock: wait until no other write of domain ``name`` runs (they queue)."""
        deadline = time.monotonic() + self.drain_timeout_s
        while name in self._writing:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CatalogError(
                    409, f"The domain '{name}' is being written; retry.", code="domain_busy", param="name"
                )
            self._written.wait(left)

    def _end_write(self, name: str) -> None:
        with self._lock:
            self._writing.discard(name)
            self._written.notify_all()

    def put_domain(self, name: str, body: DomainProfileIn) -> tuple[DomainProfile, bool]:
        """Create or replace a profile (blocking: call in a thread); what it names must exist.

        Writes of one domain run one after the other: the first of two concurrent creates answers
        created, the second replaces it.
        """
        refs = [(k, n) for k, n in (("soft_prompt", body.soft_prompt), ("adapter", body.adapter)) if n]
        if body.route is not None and name in body.route.domains:
            raise CatalogError(
                422, f"Domain '{name}' cannot route to itself.", param="route.domains", code="invalid_route"
            )
        with self._lock:
            self._wait_for_writes(name)
            owner = self._owner(name)
            if owner not in (None, "domain") or name in self._reserved:
                raise self._taken(name, "domain", owner or "domain")
            for kind, ref in refs:
                if self._missing_reference(kind, ref):
                    raise CatalogError(
                        422,
                        f"No {_LABEL[kind]} named '{ref}'"
                        + (
                            " is loaded (see GET /v1/adapters)."
                            if kind == "adapter"
                            else " (see GET /v1/soft-prompts)."
                        ),
                        param=kind,
                        code=f"unknown_{kind}",
                    )
            self._writing.add(name)
            self._pinned.update(refs)
        try:
            return self.profiles.put(name, body)
        finally:
            with self._lock:
                self._pinned.subtract(refs)
                self._pinned += Counter()  # drop zero counts
            self._end_write(name)

    def delete_profile(self, name: str) -> bool:
        """Drop a domain's profile (blocking); the caller drops its knowledge store after."""
        with self._lock:
            self._wait_for_writes(name)
            self._claimed.discard(name)
            self._writing.add(name)
        try:
            return self.profiles.delete(name)
        finally:
            self._end_write(name)

    def referencing(self, kind: Kind, name: str) -> list[str]:
        """The domains whose profile names the adapter or soft prompt ``name``."""
        field_name = "adapter" if kind == "adapter" else "soft_prompt"
        return sorted(
            p.name
            for n in self.profiles.names()
            if (p := self.profiles.get(n)) is not None and getattr(p, field_name) == name
        )

    # -- resolving -----------------------------------------------------------------------------
    def _adapter(self, name: str, why: str = "") -> AdapterRef:
        entry = self.adapters.get(name)
        if entry is None:
            raise CatalogError(
                404, f"The adapter '{name}' does not exist{why}.", param="adapter", code="adapter_not_found"
            )
        if ("adapter", name) in self._closing:
            raise CatalogError(
                404,
                f"The adapter '{name}' is being unloaded{why}.",
                param="adapter",
                code="adapter_not_found",
            )
        return entry.ref(self.adapters.root)

    def _soft(self, name: str, why: str = "") -> SoftPromptRef:
        entry = self.soft_prompts.get(name)
        gone = entry is None or ("soft_prompt", name) in self._closing
        if gone:
            state = "does not exist" if entry is None else "is being deleted"
            raise CatalogError(
                404,
                f"The soft prompt '{name}' {state}{why}.",
                param="soft_prompt",
                code="soft_prompt_not_found",
            )
        return entry.ref

    def _resolve(self, name: str, adapter: str | None, soft_prompt: str | None) -> Target:
        profile: DomainProfile | None = None
        domain: str | None = None
        ada: AdapterRef | None = None
        soft: SoftPromptRef | None = None
        if name == self.base_name:
            pass
        elif (entry := self.adapters.get(name)) is not None:
            profile = self.profile(entry.domain) if entry.domain else None
            domain, ada = (entry.domain if profile else None), self._adapter(name)
        elif (sp := self.soft_prompts.get(name)) is not None:
            profile = self.profile(sp.domain) if sp.domain else None
            domain, soft = (sp.domain if profile else None), self._soft(name)
        elif (profile := self.profile(name)) is not None:
            domain = name
            if profile.adapter:
                ada = self._adapter(profile.adapter, f" (domain '{name}' names it)")
            if profile.soft_prompt:
                soft = self._soft(profile.soft_prompt, f" (domain '{name}' names it)")
        else:
            raise CatalogError(
                404,
                f"The model '{name}' does not exist. Available: {', '.join(self.names())}.",
                param="model",
                code="model_not_found",
            )
        if adapter is not None:
            ada = self._adapter(adapter)
        if soft_prompt is not None:
            soft = self._soft(soft_prompt)
        if ada is not None and soft is not None and soft.kind == "prefix":
            raise CatalogError(
                400,
                f"The prefix-tuning soft prompt '{soft.name}' cannot be combined with a LoRA adapter "
                f"('{ada.name}'): prefix tuning is served beside vLLM, without LoRA.",
                param="soft_prompt",
                code="unsupported_combination",
            )
        return Target(name, domain, profile, ada, soft)

    def resolve(self, name: str, adapter: str | None = None, soft_prompt: str | None = None) -> Target:
        """The target alone, without a lease (listings, validation)."""
        with self._lock:
            return self._resolve(name, adapter, soft_prompt)

    def acquire(self, name: str, adapter: str | None = None, soft_prompt: str | None = None) -> Lease:
        """Resolve and hold: the adapter and soft prompt stay loaded until the lease is released."""
        with self._lock:
            target = self._resolve(name, adapter, soft_prompt)
            keys = []
            if target.adapter is not None:
                keys.append(("adapter", target.adapter.name))
            if target.soft_prompt is not None:
                keys.append(("soft_prompt", target.soft_prompt.name))
            self._users.update(keys)
            return Lease(self, target, tuple(keys))

    def _release(self, keys: tuple[tuple[str, str], ...]) -> None:
        with self._lock:
            self._users.subtract(keys)
            for key in keys:
                if self._users[key] <= 0:
                    del self._users[key]

    def users(self, kind: Kind, name: str) -> int:
        with self._lock:
            return self._users.get((kind, name), 0)

    # -- deleting ------------------------------------------------------------------------------
    async def remove(
        self,
        kind: Kind,
        name: str,
        finish: Callable[[], Awaitable[None]],
        *,
        force: bool = False,
        timeout: float | None = None,
    ) -> list[str]:
        """Delete an adapter or soft prompt: refuse if referenced, drain, then ``finish``.

        ``finish`` drops the member (engine, record, folder) while no request holds it and no new
        one can take it. Returns the domains ``force`` detached it from.
        """
        key = (kind, name)
        label = _LABEL[kind]
        with self._lock:
            exists = (self.adapters if kind == "adapter" else self.soft_prompts).get(name) is not None
            if not exists:
                raise CatalogError(404, f"No {label} named '{name}'.", param="name", code=f"{kind}_not_found")
            if key in self._closing:
                raise CatalogError(
                    409,
                    f"The {label} '{name}' is already being removed.",
                    param="name",
                    code=f"{kind}_in_use",
                )
            refs = self.referencing(kind, name)
            if self._pinned.get(key):
                raise CatalogError(
                    409,
                    f"A domain profile naming the {label} '{name}' is being saved; retry.",
                    param="name",
                    code=f"{kind}_referenced",
                )
            if refs and not force:
                raise CatalogError(
                    409,
                    f"The {label} '{name}' is named by the domain profile(s) {', '.join(refs)}; change "
                    "them first (PUT /v1/domains/{name}) or delete with force=true to detach it from them.",
                    param="name",
                    code=f"{kind}_referenced",
                )
            self._closing.add(key)
        try:
            wait = self.drain_timeout_s if timeout is None else timeout
            deadline = time.monotonic() + wait
            while self.users(kind, name) > 0:
                if time.monotonic() >= deadline:
                    raise CatalogError(
                        409,
                        f"The {label} '{name}' is still used by {self.users(kind, name)} running "
                        f"request(s) after {wait:g} s; it stays loaded. Retry when they finish.",
                        param="name",
                        code=f"{kind}_in_use",
                    )
                await asyncio.sleep(0.02)
            detached = await asyncio.to_thread(self._detach, kind, name) if force else []
            await finish()
            return detached
        finally:
            with self._lock:
                self._closing.discard(key)

    def _detach(self, kind: Kind, name: str) -> list[str]:
        field_name = "adapter" if kind == "adapter" else "soft_prompt"
        detached = []
        for domain in self.referencing(kind, name):
            profile = self.profiles.get(domain)
            if profile is None:
                continue
            body = DomainProfileIn.model_validate(
                {**profile.model_dump(include=set(DomainProfileIn.model_fields)), field_name: None}
            )
            self.profiles.put(domain, body)
            detached.append(domain)
        return detached

    # -- listing -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [self.base_name, *self.domain_names(), *self.adapters.names(), *self.soft_prompts.names()]

    def listing(self) -> ModelList:
        def card(name: str, kind: str) -> ModelCard:
            return ModelCard(
                id=name,
                created=self.created,
                root=self.base_root,
                max_model_len=self.context_window,
                parent=None if kind == "base" else self.base_name,
                kind=kind,
            )

        cards = [card(self.base_name, "base")]
        domains = self.domain_names()
        cards += [card(n, "domain") for n in domains]
        if domains:  # the gate chooses among them
            cards.append(card(GATE_NAME, "gate"))
        cards += [card(n, "adapter") for n in self.adapters.names()]
        cards += [card(n, "soft_prompt") for n in self.soft_prompts.names()]
        window = self.knowledge.embedder_window()
        if window is not None:
            name = self.knowledge.embedder_name
            cards.append(
                ModelCard(id=name, created=self.created, root=name, kind="embedding", max_model_len=window)
            )
        return ModelList(data=cards)
