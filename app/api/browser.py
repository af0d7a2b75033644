"""Browser safety for a server without keys: the Host it answers to, and who may change state.

A keyless server on loopback trusts whoever can reach it — but a web page the user opens can reach
it too. Two checks close that, as Jupyter and Ollama do:

- **Host**: a DNS-rebinding page reaches 127.0.0.1 under its own name (``Host: attacker.example``).
  Requests must name a host the server answers to: localhost, 127.0.0.1, [::1], the bind address,
  or ``TAILOR_ALLOWED_HOSTS`` (``*`` turns the check off); otherwise 400. Checked when no keys are
  configured or when allowed hosts are set.
- **Origin**: a cross-site page can POST a form or a ``fetch`` without reading the answer; that is
  enough to ingest documents, load adapters or start jobs. A state-changing request (POST, PUT,
  PATCH, DELETE) whose ``Origin`` is neither the server's own nor in ``TAILOR_ALLOWED_ORIGINS`` is
  refused with 403, unless it carries an ``Authorization`` header on a server with keys (the key
  then decides; browsers cannot send one cross-site without a CORS preflight, which only allowed
  origins pass). Requests without ``Origin`` (curl, SDKs, same-origin GETs) are not browsers'
  cross-site writes and pass.

CORS headers are sent only for ``TAILOR_ALLOWED_ORIGINS`` (``app.main``), never by default.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.middleware import _send_error
from app.config import Settings
from app.protocol.errors import APIError

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def _host_name(value: str) -> str:
    """``example.com:8000`` / ``[::1]:8000`` → ``example.com`` / ``::1`` (lower case)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class BrowserGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.keys = settings.auth_enabled
        hosts = {_host_name(h) for h in settings.allowed_hosts}
        self.any_host = "*" in hosts
        bind = _host_name(settings.host)
        self.hosts = _LOOPBACK | hosts | ({bind} if bind not in ("0.0.0.0", "::", "") else set())
        self.check_host = not self.any_host and (not self.keys or bool(settings.allowed_hosts))
        origins = {o.strip().rstrip("/").lower() for o in settings.allowed_origins}
        self.any_origin = "*" in origins
        self.origins = origins

    def _host_refused(self, host: str) -> bool:
        return self.check_host and bool(host) and _host_name(host) not in self.hosts

    def _origin_refused(self, origin: str, host: str, authorized: bool) -> bool:
        if self.any_origin or (self.keys and authorized):
            return False
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins:
            return False
        parts = urlsplit(origin)
        # same origin: the page was served by this server under the Host it is now talking to
        return not (parts.scheme in ("http", "https") and host and parts.netloc == host.strip().lower())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self._host_refused(host):
            await _send_error(
                send,
                APIError(
                    400,
                    f"This server does not answer to the host '{host}'. Use localhost or 127.0.0.1, or "
                    "add the name to TAILOR_ALLOWED_HOSTS.",
                    code="host_not_allowed",
                ),
            )
            return
        origin = headers.get("origin")
        if (
            origin is not None
            and scope["method"] in _WRITES
            and self._origin_refused(origin, host, "authorization" in headers)
        ):
            await _send_error(
                send,
                APIError(
                    403,
                    f"Cross-origin request from '{origin}' refused: a web page may not change this "
                    "server's state. Allow the origin with TAILOR_ALLOWED_ORIGINS, or configure API keys.",
                    code="origin_not_allowed",
                ),
            )
            return
        await self.app(scope, receive, send)
