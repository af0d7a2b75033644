"""One Milvus client per process, with every call bounded in time and outages named.

The URI is either a local path ending in ``.db`` (Milvus Lite, embedded: pymilvus starts it inside
this process) or ``http(s)://host:19530`` (a Milvus standalone or cluster; ``token`` is its
``user:password`` or API key). Every call carries ``timeout_s``: an unreachable server fails the
call in bounded time instead of hanging a request, and the failure becomes ``StoreUnavailable``
naming the URI (a 503 for clients, ``unavailable`` in /health). After an outage the client is
rebuilt on the next call, so a server that comes back is used again without a Tailor restart.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from indexers.store.errors import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class _QuietIterator(logging.Filter):
    """Milvus Lite has no MVCC timestamps; pymilvus warns about it on every paged query."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


class _QuietLite(logging.Filter):
    """...and embedded Milvus Lite's gRPC server logs a traceback for the timestamp call it lacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], NotImplementedError))


#: Connections of this process to each embedded Milvus Lite path (its server stops with the last).
_EMBEDDED_USERS: dict[str, int] = {}
_EMBEDDED_LOCK = threading.Lock()

logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_QuietIterator())
logging.getLogger("grpc._server").addFilter(_QuietLite())

#: Words in a pymilvus error that mean the server was not reached (as opposed to a bad request).
_OUTAGE = (
    "fail connecting",
    "unavailable",
    "deadline",
    "timeout",
    "timed out",
    "connection",
    "socket closed",
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the server did not answer (not that it refused the request)."""
    try:
        import grpc

        if isinstance(exc, grpc.RpcError) and exc.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ):
            return True
    except ImportError:  # pragma: no cover - grpc comes with pymilvus
        pass
    text = str(exc).lower()
    return any(word in text for word in _OUTAGE)


def shown_uri(uri: str) -> str:
    """The URI as errors and /health show it (no credentials in it)."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return uri


class MilvusConnection:
    def __init__(
        self,
        uri: str,
        token: str = "",
        db_name: str = "",
        timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if "://" not in uri:
            path = Path(uri).expanduser().resolve()
            if path.suffix != ".db":
                raise ValueError(f"a Milvus Lite path must end in .db (got {uri!r})")
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = str(path)
        self.uri = uri
        self.shown = shown_uri(uri)
        self.embedded = "://" not in uri
        self._token = token
        self._db_name = db_name
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._client: Any = None
        self._holds_embedded = False
        self._lock = threading.Lock()
        #: When the last call failed for want of a server, and why (``None`` while it answers).
        self.down_since: float | None = None
        self.reason: str | None = None

    def _connect(self) -> Any:
        with self._lock:
            if self._client is None:
                from pymilvus import MilvusClient

                if self.embedded:
                    self._start_embedded()

                # dedicated: pymilvus otherwise shares one channel per address among clients, and
                # a channel that failed during an outage is handed to the next client as it is
                kwargs: dict[str, Any] = {
                    "timeout": self.connect_timeout_s,
                    "dedicated": True,
                    # and gRPC shares sub-channels (with their reconnect back-off) process-wide
                    "grpc_options": {"grpc.use_local_subchannel_pool": 1},
                }
                if self.embedded:
                    # Milvus Lite's gRPC server allows a keepalive ping every 5 minutes; pymilvus's 10 s
                    # gets the connection closed ("too_many_pings") now and then
                    kwargs["grpc_options"]["grpc.keepalive_time_ms"] = 300_000
                if self._token:
                    kwargs["token"] = self._token
                if self._db_name:
                    kwargs["db_name"] = self._db_name
                self._client = MilvusClient(self.uri, **kwargs)
            return self._client

    def _start_embedded(self) -> None:
        """Open the Milvus Lite path in this process (pymilvus would, but would hide why it failed)."""
        from milvus_lite import server_manager_instance

        if self._holds_embedded:
            return
        if server_manager_instance.start_and_get_uri(self.uri) is None:
            raise StoreUnavailable(
                self.shown,
                "Milvus Lite could not open it; another process may hold it (Milvus Lite serves one "
                "process per path: share a store between processes through a Milvus server URI)",
            )
        with _EMBEDDED_LOCK:
            _EMBEDDED_USERS[self.uri] = _EMBEDDED_USERS.get(self.uri, 0) + 1
        self._holds_embedded = True

    def _drop(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a dead connection may not close cleanly
                pass

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(*args, **kwargs)`` with the call's timeout (see ``run``)."""
        collection = args[0] if args and isinstance(args[0], str) else None
        return self.run(
            lambda client: getattr(client, method)(*args, timeout=self.timeout_s, **kwargs), collection
        )

    def run(self, fn: Callable[[Any], T], collection: str | None = None) -> T:
        """``fn(client)``; an outage (connecting or during the call) → ``StoreUnavailable``.

        A call refused at once is tried again once on a new client: pymilvus keeps a channel per
        address, and the first call after a server came back can fail on the dead one. A call that
        failed slowly (a timeout) is not repeated, so an outage costs one timeout, not two. A
        collection the server holds but has not loaded (a restarted server, or another client
        released it) is loaded and the call made again: the one the error names, else
        ``collection`` (a Milvus server names it by id).
        """
        fn = self._reloading(fn, collection)
        try:
            return self._once(fn)
        except _Refused as refused:
            if refused.elapsed > 1.0:
                raise refused.error from refused.__cause__
        try:
            return self._once(fn)
        except _Refused as refused:
            raise refused.error from refused.__cause__

    def _reloading(self, fn: Callable[[Any], T], collection: str | None) -> Callable[[Any], T]:
        def wrapped(client: Any) -> T:
            try:
                return fn(client)
            except Exception as exc:
                name = _released(exc, collection)
                if name is None:
                    raise
                log.warning("knowledge store at %s: loading collection %s again", self.shown, name)
                client.load_collection(name, timeout=self.timeout_s)
                return fn(client)

        return wrapped

    def _once(self, fn: Callable[[Any], T]) -> T:
        started = time.monotonic()
        try:
            result = fn(self._connect())
        except StoreUnavailable:
            raise
        except Exception as exc:
            if not is_outage(exc):
                raise
            if self.down_since is None:
                log.warning("knowledge store at %s unavailable: %s", self.shown, exc)
                self.down_since = time.monotonic()
            self.reason = _short(exc)
            self._drop()
            raise _Refused(StoreUnavailable(self.shown, self.reason), time.monotonic() - started) from exc
        if self.down_since is not None:
            log.warning("knowledge store at %s answers again", self.shown)
        self.down_since, self.reason = None, None
        return result

    def state(self) -> dict[str, Any]:
        """What /health shows: ``ok``, or ``unavailable`` with the reason, as the latest call found
        it (no call of its own: the backend's watcher calls every few seconds)."""
        if self.down_since is not None:
            return {
                "backend": "milvus",
                "uri": self.shown,
                "state": "unavailable",
                "reason": self.reason,
                "for_s": round(time.monotonic() - self.down_since, 1),
            }
        return {"backend": "milvus", "uri": self.shown, "state": "ok"}

    def close(self) -> None:
        """Close the client; an embedded Milvus Lite is shut too, so its path is free for another process."""
        self._drop()
        if not self._holds_embedded:
            return
        self._holds_embedded = False
        with _EMBEDDED_LOCK:
            users = _EMBEDDED_USERS[self.uri] = _EMBEDDED_USERS[self.uri] - 1
        if users == 0:  # the last connection to it in this process
            from milvus_lite import server_manager_instance

            server_manager_instance.release_server(self.uri)


class _Refused(Exception):
    """An outage seen by one attempt (``run`` decides whether to try again)."""

    def __init__(self, error: StoreUnavailable, elapsed: float) -> None:
        super().__init__(str(error))
        self.error = error
        self.elapsed = elapsed


_COLLECTION = re.compile(r"collection '([^']+)'", re.IGNORECASE)


def _released(exc: BaseException, default: str | None) -> str | None:
    """The collection an error says is not loaded (``default`` when it does not name it), or None
    for any other error."""
    text = str(exc)
    lowered = text.lower()
    if not ("load()" in lowered or "not loaded" in lowered or "released" in lowered):
        return None
    found = _COLLECTION.search(text)
    return found.group(1) if found else default


def _short(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return message.strip().splitlines()[0][:300]
