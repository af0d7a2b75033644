"""Serve the console: ``/`` and its few assets, under a strict Content-Security-Policy.

The policy allows only this origin's scripts, styles and API (no inline script, no eval, no
framing), and the page renders all server text with ``textContent``: a document that contains
markup shows as text and cannot run in the console.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from app.protocol.errors import APIError

STATIC = Path(__file__).parent / "static"
ASSETS = {"console.js": "text/javascript", "console.css": "text/css", "favicon.svg": "image/svg+xml"}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def console() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/console")
async def console_alias() -> RedirectResponse:
    return RedirectResponse("/")


@router.get("/console/{asset}")
async def console_asset(asset: str) -> FileResponse:
    if asset not in ASSETS:
        raise APIError(404, f"No console asset '{asset}'.", code="not_found")
    return FileResponse(STATIC / asset, media_type=ASSETS[asset], headers=HEADERS)
