"""Session fixtures: one real vLLM engine on the real SmolLM2 checkpoint, served over real HTTP."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.checkpoints.prepare import prepare_backbone  # noqa: E402
from app.config import Settings  # noqa: E402
from app.engine import Engine, build_engine  # noqa: E402
from app.main import create_app  # noqa: E402
from tests.harness import LoopThread, Server, serve  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("TAILOR_TEST_MODELS_DIR", ROOT / "data"))


@pytest.fixture(scope="session")
def model_path() -> str:
    return str(prepare_backbone(DATA_DIR).path)


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        model=model_path,
        engine={"max_model_len": 2048, "kv_cache_space_gib": 1, "max_num_seqs": 16, "max_loras": 2},
        # a lighter agreement check than the default 8 x 24 tokens: every conversion in the suite runs it
        conversion={"prompts": 4, "tokens": 12},
    )


@pytest.fixture(scope="session")
def engine(loop: LoopThread, base_settings: Settings, model_path: str) -> Iterator[Engine]:
    eng = build_engine(base_settings, model_path)
    loop.run(eng.start(), timeout=600)
    yield eng
    loop.run(eng.stop(), timeout=120)


@pytest.fixture(scope="session")
def make_server(
    loop: LoopThread, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[Settings], Server]]:
    """Serve an app built from the given settings on the session's engine.

    One server per data dir, as in production (the app locks it): settings whose data dir a
    running server holds get a fresh one. A restart test stops its first server before it starts
    the second on the same dir.
    """
    servers: list[Server] = []

    def make(settings: Settings) -> Server:
        if any(s.data_dir == settings.data_dir and not s.stopped for s in servers):
            settings = settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("app")})
        server = serve(loop, create_app(settings, engine=engine))
        server.data_dir = settings.data_dir
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def server(make_server: Callable[[Settings], Server], base_settings: Settings) -> Server:
    return make_server(base_settings)


@pytest.fixture(scope="session")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def oai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def model_name(http: httpx.Client) -> str:
    return http.get("/v1/models").json()["data"][0]["id"]
