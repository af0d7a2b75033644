"""Property-based requests generated from the app's own OpenAPI schema (schemathesis), against
the real app and the real engine over HTTP: every route, no 5xx, every response as documented.

``TAILOR_FUZZ_EXAMPLES`` sets the examples per operation (a short run in ``make test``, a long
one in ``make fuzz``). Generated bodies keep their shape, but the amounts of work they ask for
are clamped (tokens to generate, choices, optimization examples), so a run stays bounded on CPU.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.config import Settings
from app.main import create_app

EXAMPLES = int(os.environ.get("TAILOR_FUZZ_EXAMPLES", "8"))


STATUSES: Counter[tuple[str, str, int]] = Counter()


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """With TAILOR_FUZZ_REPORT=path, write how many requests got which status, per operation."""
    yield
    path = os.environ.get("TAILOR_FUZZ_REPORT")
    if path:
        rows = [
            {"operation": o, "mode": m, "status": s, "count": n} for (o, m, s), n in sorted(STATUSES.items())
        ]
        Path(path).write_text(json.dumps({"examples_per_operation": EXAMPLES, "responses": rows}, indent=1))


@pytest.fixture(scope="module")
def fuzz_server(make_server, base_settings: Settings, tmp_path_factory):
    """An app of its own, on its own data dir: fuzzed deletes cannot touch other tests' domains."""
    return make_server(base_settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("fuzz")}))


# the schema of the app as built (building it starts nothing and touches no files)
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(data_dir=Path("unused"))).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
# negative cases need something to break: a body or query parameters (any string is a valid name)
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in OPERATIONS if len(op.body) or len(op.query)
]


def _bounded(body: object) -> None:
    """Cap the work a generated body asks of a 2-core machine; every other field stays as drawn."""
    if not isinstance(body, dict):
        return
    for key in ("max_tokens", "max_completion_tokens", "min_tokens"):
        if isinstance(body.get(key), int) and body[key] > 4:
            body[key] = 4
    if isinstance(body.get("n"), int) and body["n"] > 2:
        body["n"] = 2
    if isinstance(body.get("examples"), list):
        del body["examples"][8:]
    if isinstance(body.get("candidates"), list):
        del body["candidates"][2:]


@pytest.mark.parametrize("operation, mode", CASES, ids=[f"{op.label} {mode.value}" for op, mode in CASES])
def test_no_route_answers_5xx_or_off_schema(operation, mode, fuzz_server, model_name: str) -> None:
    """Positive cases must get a documented answer; negative (schema-violating) ones a 4xx."""

    @given(
        case=operation.as_strategy(generation_mode=mode),
        model=st.sampled_from([None, model_name, "legal"]),
        domain=st.sampled_from([None, "legal", "medical"]),
    )
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case, model: str | None, domain: str | None) -> None:
        # steer part of the cases onto names that exist, so they reach the engine and the stores
        if model and isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
            case.body["model"] = model
        for key in ("domain", "name"):
            if domain and isinstance((case.path_parameters or {}).get(key), str):
                case.path_parameters[key] = domain
        _bounded(case.body)
        # every check but "schema-valid data must be accepted": a valid shape can still name an
        # unknown model or ask for more than the window holds, and that is a documented 400/404
        response = case.call_and_validate(
            base_url=fuzz_server.url, timeout=300, excluded_checks=[positive_data_acceptance]
        )
        STATUSES[(operation.label, mode.value, response.status_code)] += 1

    check()
