"""Rules of the code base checked on the code itself: admin scope on every admin route (walked
from ``app.routes``, so a new route cannot forget it), and the import walls between packages.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from app.api.deps import require_admin
from app.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
#: Writes that a query key may make: generation, embeddings and search. Every other write is an admin route.
QUERY_WRITES = {
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/domains/{domain}/search"),
    ("POST", "/v1/gate/score"),  # what model: "auto" would choose: a read, like search
}


#: Reads that need an admin key: training files are the domain teams' data.
ADMIN_READS = {("GET", "/v1/files"), ("GET", "/v1/files/{file_id}"), ("GET", "/v1/files/{file_id}/content")}


def _needs_admin(dependant) -> bool:
    return any(d.call is require_admin or _needs_admin(d) for d in dependant.dependencies)


def _v1_routes(app) -> list[tuple[str, APIRoute]]:
    return [
        (method, route)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/v1/")
        for method in sorted(route.methods - {"HEAD", "OPTIONS"})
    ]


def _expects_admin(method: str, path: str) -> bool:
    if path.startswith("/v1/admin/") or (method, path) in ADMIN_READS:
        return True
    return method != "GET" and (method, path) not in QUERY_WRITES


def test_every_admin_route_requires_the_admin_scope(tmp_path: Path) -> None:
    routes = _v1_routes(create_app(Settings(data_dir=tmp_path)))
    assert len(routes) >= 12
    wrong = [
        f"{method} {route.path}"
        for method, route in routes
        if _needs_admin(route.dependant) != _expects_admin(method, route.path)
    ]
    assert not wrong, f"admin scope missing or misplaced on: {wrong}"


def test_a_query_key_gets_403_on_every_admin_route(make_server, base_settings: Settings) -> None:
    server = make_server(base_settings.model_copy(update={"api_keys": ["q-key"], "admin_keys": ["a-key"]}))
    checked = 0
    for method, route in _v1_routes(create_app(base_settings)):
        if not _expects_admin(method, route.path):
            continue
        path = re.sub(r"\{[^}]+\}", "legal", route.path)
        resp = httpx.request(
            method, f"{server.url}{path}", json={}, headers={"Authorization": "Bearer q-key"}, timeout=30
        )
        assert resp.status_code == 403, f"{method} {path}: {resp.status_code} {resp.text}"
        assert resp.json()["error"]["code"] == "admin_required"
        checked += 1
    assert checked >= 5


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["indexers", "prompts", "soft_prompts"])
def test_libraries_never_import_the_service(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offenders = [str(f.relative_to(ROOT)) for f in files if "app" in _imports(f)]
    assert not offenders, f"{package}/ must work without the service, but these import app: {offenders}"


def test_only_the_engine_package_imports_vllm() -> None:
    files = sorted((ROOT / "app").rglob("*.py"))
    engine = ROOT / "app" / "engine"
    offenders = [str(f.relative_to(ROOT)) for f in files if engine not in f.parents and "vllm" in _imports(f)]
    assert not offenders, f"routes reach vLLM only through app/engine: {offenders}"
    assert "vllm" in _imports(engine / "vllm_engine.py")  # the check looks at real imports


def _modules(path: Path) -> set[str]:
    """Full names of the modules a file imports (``from a.b import c`` gives ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


#: Web frameworks: only the routes (app/api, app/console, app/main) speak HTTP.
HTTP = ("fastapi", "starlette")


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("app/domains", ("app.serving", "app.api", "app.catalog", *HTTP)),
        ("app/knowledge", ("app.api", "app.serving", "app.catalog", *HTTP)),
        (
            "app/engine",
            (
                "app.api",
                "app.serving",
                "app.domains",
                "app.adapters",
                "app.soft_prompt_registry",
                "app.catalog",
            ),
        ),
        ("app/adapters", ("app.api", "app.serving", *HTTP)),
        ("app/soft_prompt_registry", ("app.api", "app.serving", "app.finetune", *HTTP)),
        ("app/catalog", ("app.api", "app.serving", "app.finetune", *HTTP)),
        ("app/jobs", ("app.api", "app.serving", *HTTP)),
        ("app/serving", ("app.api",)),
        ("app/finetune", ("app.api", "app.serving", *HTTP)),
        ("app/gate", ("app.api", "app.serving", "app.finetune", *HTTP)),
        ("app/protocol", ("app.api", "app.serving", "app.domains", "app.catalog", "app.knowledge")),
        ("app/checkpoints", ("app.api", "app.serving", *HTTP)),
    ],
)
def test_lower_layers_never_import_upper_ones(package: str, forbidden: tuple[str, ...]) -> None:
    """A request reads top-down (api → serving → catalog → domains/knowledge/adapters → engine); no
    layer reaches up, and below the routes none speaks HTTP (they raise ``app.errors.ServiceError``)."""
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offenders = [
        f"{f.relative_to(ROOT)} imports {m}"
        for f in files
        for m in sorted(_modules(f))
        if any(m == x or m.startswith(x + ".") for x in forbidden)
    ]
    assert not offenders, offenders


def test_names_say_what_they_are() -> None:
    """One package per meaning: no second ``softprompts`` beside ``soft_prompts``, one ``models``-free
    service (the catalog owns model names; checkpoints are prepared in ``app.checkpoints``)."""
    assert not (ROOT / "app" / "softprompts").exists() and not (ROOT / "app" / "models").exists()
    assert not (ROOT / "app" / "serving" / "models.py").exists()
    assert not (ROOT / "soft_prompts" / "train.py").exists()  # the shared loop is app/finetune/loop.py
    assert (ROOT / "app" / "finetune" / "loop.py").is_file()
