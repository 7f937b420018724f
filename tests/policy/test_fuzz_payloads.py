"""Payload fuzzing of the public endpoints: never a 5xx, every error in the caller's API shape, and
the gateway stays up.

Two sources of requests, both sent over real HTTP to a real gateway (fake-provider models, so an
accepted request is answered, streamed or not):

* **schemathesis**, from the gateway's own OpenAPI description (``GET /openapi.json``,
  :mod:`modelyard.api.openapi`): bodies that fit the schema (positive) and bodies that break it
  (negative: wrong types, missing fields, out-of-range numbers);
* **hypothesis**, free-form: any JSON value (deep, unicode, huge numbers), non-JSON bytes, and
  valid-looking chat bodies with one field replaced by junk.

Bounded: a fixed number of examples per operation, no deadline per example; about 20-30 s on a
shared 2-core machine. What each kind of bad input gets is asserted by tests/e2e/test_bad_input.py;
here the contract is the invariant itself (DESIGN invariant 7).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from modelyard.api.openapi import Limits, openapi_document
from tests.fakes.gateway import GatewayServer

MASTER = "mk-fuzz-0a9b8c7d6e"
CHAT_MODELS = ["echo", "echo-an", "emb"]
EMBEDDING_MODELS = CHAT_MODELS  # the fake provider serves both
CONFIG = """\
server: {master_key: env:MK, max_body_bytes: 65536, max_messages: 64, max_output_tokens: 4096,
         request_timeout_s: 5}
embedded_models: false
cloud_models_from_env: false
storage: {database: "sqlite:///%s"}
request_log: {enabled: false}
models:
  - name: echo
    deployments: [{provider: fake, model: echo}]
  - name: echo-an
    deployments: [{provider: fake, model: echo, protocol: anthropic}]
  - name: emb
    deployments: [{provider: fake, model: echo}]
"""
AUTH = {"authorization": f"Bearer {MASTER}"}
ANTHROPIC_PATHS = ("/v1/messages", "/v1/messages/count_tokens")
LIMITS = Limits(max_messages=64, max_output_tokens=4096)
SCHEMA = schemathesis.openapi.from_dict(openapi_document(CHAT_MODELS, EMBEDDING_MODELS, LIMITS))
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    db = tmp_path_factory.mktemp("fuzz") / "ledger.db"
    server = GatewayServer(CONFIG % db, {"MK": MASTER}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def http(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30, headers=AUTH) as client:
        yield client


def check_answer(path: str, status: int, body: bytes, content_type: str) -> None:
    """The invariant for one answer: no 5xx; an error is JSON in the route's own API shape."""
    assert status < 500, f"{path} answered {status}: {body[:500]!r}"
    if status < 400:
        return
    assert content_type.startswith("application/json"), (status, content_type, body[:200])
    error = orjson.loads(body)
    if path in ANTHROPIC_PATHS:
        assert error["type"] == "error", error
        assert isinstance(error["error"]["type"], str) and isinstance(error["error"]["message"], str), error
        assert error["error"]["message"], error
    else:
        assert isinstance(error["error"]["message"], str) and error["error"]["message"], error
        assert isinstance(error["error"]["type"], str), error


def _fuzz_operation(path: str, method: str, mode: GenerationMode, gateway: GatewayServer) -> None:
    operation = SCHEMA[path][method]

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=gateway.url, headers=AUTH, timeout=30)
        check_answer(
            path, response.status_code, response.content, response.headers.get("content-type", [""])[0]
        )

    run()


OPERATIONS = [
    ("/v1/chat/completions", "POST"),
    ("/v1/messages", "POST"),
    ("/v1/messages/count_tokens", "POST"),
    ("/v1/embeddings", "POST"),
]


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_schema_driven_requests(path: str, method: str, mode: GenerationMode, gateway: GatewayServer) -> None:
    _fuzz_operation(path, method, mode, gateway)


def test_models_listing(gateway: GatewayServer) -> None:
    _fuzz_operation("/v1/models", "GET", GenerationMode.POSITIVE, gateway)


def test_the_fuzzed_description_is_the_one_served(http: httpx.Client) -> None:
    served = http.get("/openapi.json")
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    document = served.json()
    assert set(document["paths"]) == {p for p, _ in OPERATIONS} | {"/v1/models"}
    assert document == orjson.loads(orjson.dumps(openapi_document(CHAT_MODELS, EMBEDDING_MODELS, LIMITS)))
    assert schemathesis.openapi.from_dict(document)  # loads as a valid OpenAPI document


# -- free-form bodies ------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)
FIELDS = st.sampled_from(
    ["model", "messages", "max_tokens", "stream", "temperature", "tools", "system", "input", "stop", "n"]
)


@st.composite
def mutated_chat(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(CHAT_MODELS)),
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello"}],
    }
    body[draw(FIELDS)] = draw(JSON_VALUES)
    if draw(st.booleans()):
        body["messages"] = [draw(JSON_VALUES) for _ in range(draw(st.integers(0, 3)))]
    return body


PATHS = st.sampled_from([*ANTHROPIC_PATHS, "/v1/chat/completions", "/v1/embeddings"])


@settings(max_examples=120, deadline=None, derandomize=True, database=None)
@given(path=PATHS, body=st.one_of(JSON_VALUES, mutated_chat()))
def test_any_json_body(gateway: GatewayServer, http: httpx.Client, path: str, body: Any) -> None:
    # The standard library's encoder: big integers and infinities go out as they are (the latter is
    # not JSON at all), for the gateway to refuse cleanly.
    response = http.post(path, content=json.dumps(body).encode())
    check_answer(path, response.status_code, response.content, response.headers.get("content-type", ""))


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(path=PATHS, raw=st.binary(max_size=300))
def test_any_bytes(gateway: GatewayServer, http: httpx.Client, path: str, raw: bytes) -> None:
    response = http.post(path, content=raw, headers={"content-type": "application/json"})
    check_answer(path, response.status_code, response.content, response.headers.get("content-type", ""))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "echo", "messages": [{"role": {"a": 1}, "content": "x"}]}),
        (
            "/v1/chat/completions",
            {"model": "echo", "messages": [{"role": "user", "content": [{"type": []}]}]},
        ),
        (
            "/v1/messages",
            {"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": {}}]}]},
        ),
        (
            "/v1/messages/count_tokens",
            {"model": "echo", "messages": [{"role": "user", "content": [{"type": {}}]}]},
        ),
    ],
)
def test_unhashable_types_and_roles_are_a_400(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    """Found by the schema fuzzing: a list or object where a type name goes was a 500."""
    response = http.post(path, json=body)
    assert response.status_code == 400
    check_answer(path, response.status_code, response.content, response.headers["content-type"])


def test_the_gateway_is_still_up(http: httpx.Client) -> None:
    """Last in the module: after everything above, it still serves."""
    assert http.get("/healthz").status_code == 200
    answer = http.post(
        "/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "x"}]}
    )
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "echo: x"
