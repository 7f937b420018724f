"""Every bad input gets its exact status and the caller's own error shape; none gets a 500.

The gateway under test has ``max_body_bytes`` 65536, ``max_messages`` 64 and ``max_output_tokens``
100000 (tests/fakes/config.py) and a master key.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from tests.fakes import GatewayServer
from tests.fakes.config import MASTER_KEY, MAX_BODY_BYTES, MAX_MESSAGES, MAX_OUTPUT_TOKENS

OPENAI_AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
ANTHROPIC_AUTH = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}
USER = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True)
class Bad:
    name: str
    dialect: str
    """``openai`` or ``anthropic``: whose error shape the answer must have."""
    status: int
    body: Any = None
    """A JSON value to send, or raw bytes."""
    path: str = ""
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True
    param: str | None = None
    """The OpenAI ``param`` the error must name, where the field is known."""

    def url_path(self) -> str:
        return self.path or ("/v1/chat/completions" if self.dialect == "openai" else "/v1/messages")

    def content(self) -> bytes | None:
        if self.body is None:
            return None
        return self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)


def oa(**fields: Any) -> dict[str, Any]:
    return {"model": "fake-echo", "messages": USER, **fields}


def an(**fields: Any) -> dict[str, Any]:
    return {"model": "fake-an-echo", "max_tokens": 64, "messages": USER, **fields}


def without(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != name}


TOO_MANY = [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)
DEEP = b"[" * 5000 + b"]" * 5000

CASES = [
    # -- the body is not a JSON object
    *(
        Bad(f"{d}-malformed-json", d, 400, b'{"model": "fake-echo", "messages": [')
        for d in ("openai", "anthropic")
    ),
    *(Bad(f"{d}-invalid-utf8", d, 400, b'{"model": "\xff\xfe"}') for d in ("openai", "anthropic")),
    *(Bad(f"{d}-too-deeply-nested", d, 400, DEEP) for d in ("openai", "anthropic")),
    *(Bad(f"{d}-empty-body", d, 400, b"") for d in ("openai", "anthropic")),
    *(Bad(f"{d}-array-body", d, 400, [1, 2]) for d in ("openai", "anthropic")),
    *(Bad(f"{d}-string-body", d, 400, "hello") for d in ("openai", "anthropic")),
    *(Bad(f"{d}-null-body", d, 400, b"null") for d in ("openai", "anthropic")),
    # -- wrong types
    Bad("openai-model-not-string", "openai", 400, oa(model=42), param="model"),
    Bad("anthropic-model-not-string", "anthropic", 400, an(model=["a"])),
    Bad("openai-messages-not-list", "openai", 400, oa(messages="hi"), param="messages"),
    Bad("anthropic-messages-not-list", "anthropic", 400, an(messages={"role": "user"})),
    Bad("openai-message-not-object", "openai", 400, oa(messages=["hi"]), param="messages[0]"),
    Bad("anthropic-message-not-object", "anthropic", 400, an(messages=[7])),
    Bad(
        "openai-bad-role",
        "openai",
        400,
        oa(messages=[{"role": "robot", "content": "x"}]),
        param="messages[0].role",
    ),
    Bad(
        "anthropic-system-role-in-messages",
        "anthropic",
        400,
        an(messages=[{"role": "system", "content": "x"}]),
    ),
    Bad(
        "anthropic-unknown-block",
        "anthropic",
        400,
        an(messages=[{"role": "user", "content": [{"type": "x"}]}]),
    ),
    Bad("openai-max-tokens-string", "openai", 400, oa(max_tokens="100"), param="max_tokens"),
    Bad("anthropic-max-tokens-string", "anthropic", 400, an(max_tokens="100")),
    Bad("openai-max-tokens-zero", "openai", 400, oa(max_tokens=0), param="max_tokens"),
    Bad("anthropic-max-tokens-negative", "anthropic", 400, an(max_tokens=-5)),
    Bad("openai-temperature-too-high", "openai", 400, oa(temperature=2.5), param="temperature"),
    Bad("openai-temperature-negative", "openai", 400, oa(temperature=-0.1), param="temperature"),
    Bad("openai-temperature-string", "openai", 400, oa(temperature="hot"), param="temperature"),
    Bad("anthropic-temperature-too-high", "anthropic", 400, an(temperature=1.5)),
    Bad("openai-top-p-too-high", "openai", 400, oa(top_p=1.5), param="top_p"),
    Bad("openai-stream-not-bool", "openai", 400, oa(stream="yes"), param="stream"),
    Bad("anthropic-stream-not-bool", "anthropic", 400, an(stream=1)),
    Bad("openai-n-zero", "openai", 400, oa(n=0), param="n"),
    Bad("openai-tools-not-list", "openai", 400, oa(tools={"type": "function"}), param="tools"),
    Bad("anthropic-tools-not-list", "anthropic", 400, an(tools="get_weather")),
    Bad("openai-bad-tool-choice", "openai", 400, oa(tool_choice="sometimes"), param="tool_choice"),
    Bad("anthropic-bad-tool-choice", "anthropic", 400, an(tool_choice="auto")),
    Bad(
        "openai-bad-response-format",
        "openai",
        400,
        oa(response_format={"type": "yaml"}),
        param="response_format",
    ),
    Bad(
        "openai-stream-options-without-stream",
        "openai",
        400,
        oa(stream_options={"include_usage": True}),
        param="stream_options",
    ),
    Bad("anthropic-bad-thinking", "anthropic", 400, an(thinking={"type": "sometimes"})),
    # -- missing fields
    Bad("openai-missing-model", "openai", 400, without(oa(), "model"), param="model"),
    Bad("anthropic-missing-model", "anthropic", 400, without(an(), "model")),
    Bad("openai-missing-messages", "openai", 400, without(oa(), "messages"), param="messages"),
    Bad("anthropic-missing-messages", "anthropic", 400, without(an(), "messages")),
    Bad("openai-empty-messages", "openai", 400, oa(messages=[]), param="messages"),
    Bad("anthropic-empty-messages", "anthropic", 400, an(messages=[])),
    Bad("anthropic-missing-max-tokens", "anthropic", 400, without(an(), "max_tokens")),
    Bad(
        "openai-user-without-content",
        "openai",
        400,
        oa(messages=[{"role": "user"}]),
        param="messages[0].content",
    ),
    # -- limits
    Bad("openai-absurd-max-tokens", "openai", 400, oa(max_tokens=MAX_OUTPUT_TOKENS + 1), param="max_tokens"),
    Bad(
        "openai-absurd-max-completion-tokens",
        "openai",
        400,
        oa(max_completion_tokens=10**12),
        param="max_completion_tokens",
    ),
    Bad("anthropic-absurd-max-tokens", "anthropic", 400, an(max_tokens=MAX_OUTPUT_TOKENS + 1)),
    Bad("openai-too-many-messages", "openai", 400, oa(messages=TOO_MANY), param="messages"),
    Bad("anthropic-too-many-messages", "anthropic", 400, an(messages=TOO_MANY)),
    Bad(
        "openai-oversize-body",
        "openai",
        413,
        oa(messages=[{"role": "user", "content": "x" * MAX_BODY_BYTES}]),
    ),
    Bad(
        "anthropic-oversize-body",
        "anthropic",
        413,
        an(messages=[{"role": "user", "content": "x" * MAX_BODY_BYTES}]),
    ),
    # -- models
    Bad("openai-unknown-model", "openai", 404, oa(model="no-such-model"), param="model"),
    Bad("anthropic-unknown-model", "anthropic", 404, an(model="no-such-model")),
    Bad("openai-unknown-model-stream", "openai", 404, oa(model="no-such-model", stream=True), param="model"),
    Bad("anthropic-unknown-model-stream", "anthropic", 404, an(model="no-such-model", stream=True)),
    # -- other routes
    Bad(
        "embeddings-missing-input",
        "openai",
        400,
        {"model": "fake-echo"},
        path="/v1/embeddings",
        param="input",
    ),
    Bad(
        "embeddings-token-input",
        "openai",
        400,
        {"model": "fake-echo", "input": [1, 2]},
        path="/v1/embeddings",
        param="input",
    ),
    Bad(
        "embeddings-empty-string",
        "openai",
        400,
        {"model": "fake-echo", "input": [""]},
        path="/v1/embeddings",
        param="input",
    ),
    Bad(
        "embeddings-bad-encoding",
        "openai",
        400,
        {"model": "fake-echo", "input": "x", "encoding_format": "hex"},
        path="/v1/embeddings",
        param="encoding_format",
    ),
    Bad("embeddings-unknown-model", "openai", 404, {"model": "nope", "input": "x"}, path="/v1/embeddings"),
    Bad(
        "embeddings-chat-only-model",
        "openai",
        404,
        {"model": "oa-rec-text", "input": "x"},
        path="/v1/embeddings",
    ),
    Bad(
        "count-tokens-missing-messages",
        "anthropic",
        400,
        {"model": "fake-an-echo"},
        path="/v1/messages/count_tokens",
    ),
    Bad(
        "count-tokens-unknown-model",
        "anthropic",
        404,
        {"model": "nope", "messages": USER},
        path="/v1/messages/count_tokens",
    ),
    Bad("openai-unknown-route", "openai", 404, oa(), path="/v1/chat/complete"),
    Bad(
        "anthropic-unknown-route",
        "anthropic",
        404,
        an(),
        path="/v1/message",
        headers={"anthropic-version": "x"},
    ),
    Bad("openai-get-unknown-route", "openai", 404, path="/v2/everything", method="GET"),
    Bad("openai-wrong-method", "openai", 405, method="GET"),
    Bad("openai-wrong-method-put", "openai", 405, oa(), method="PUT"),
    Bad("anthropic-wrong-method", "anthropic", 405, method="GET"),
    Bad("anthropic-wrong-method-delete", "anthropic", 405, method="DELETE"),
    Bad("embeddings-wrong-method", "openai", 405, path="/v1/embeddings", method="GET"),
    # -- credentials
    Bad("openai-missing-key", "openai", 401, oa(), auth=False),
    Bad(
        "anthropic-missing-key",
        "anthropic",
        401,
        an(),
        auth=False,
        headers={"anthropic-version": "2023-06-01"},
    ),
    Bad("openai-invalid-key", "openai", 401, oa(), auth=False, headers={"authorization": "Bearer wrong-key"}),
    Bad("openai-empty-bearer", "openai", 401, oa(), auth=False, headers={"authorization": "Bearer"}),
    Bad(
        "openai-basic-auth", "openai", 401, oa(), auth=False, headers={"authorization": "Basic " + MASTER_KEY}
    ),
    Bad("anthropic-invalid-key", "anthropic", 401, an(), auth=False, headers={"x-api-key": "wrong-key"}),
    Bad("openai-models-without-key", "openai", 401, path="/v1/models", method="GET", auth=False),
    Bad("openai-unknown-route-without-key", "openai", 401, path="/v1/nothing", method="GET", auth=False),
]


@pytest.fixture(scope="module")
def raw(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


def assert_error_shape(response: httpx.Response, dialect: str) -> dict[str, Any]:
    assert response.status_code != 500
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"].startswith("req_")
    assert float(response.headers["x-modelyard-overhead-ms"]) >= 0
    body: dict[str, Any] = response.json()
    if dialect == "openai":
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        assert isinstance(body["error"]["type"], str)
        message = body["error"]["message"]
    else:
        assert set(body) == {"type", "error", "request_id"} and body["type"] == "error"
        assert set(body["error"]) == {"type", "message"}
        assert body["request_id"] == response.headers["x-request-id"] == response.headers["request-id"]
        message = body["error"]["message"]
    assert isinstance(message, str) and len(message) > 10, "the message says what is wrong"
    assert MASTER_KEY not in response.text
    return body


EXPECTED_TYPES = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("authentication_error", "authentication_error"),
    404: (None, "not_found_error"),  # OpenAI: invalid_request_error for models, not_found_error for routes
    405: ("invalid_request_error", "invalid_request_error"),
    413: ("invalid_request_error", "request_too_large"),
}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(raw: httpx.Client, case: Bad) -> None:
    headers = {**(OPENAI_AUTH if case.dialect == "openai" else ANTHROPIC_AUTH), **case.headers}
    if not case.auth:
        headers = {k: v for k, v in headers.items() if k not in ("authorization", "x-api-key")} | case.headers
    response = raw.request(case.method, case.url_path(), content=case.content(), headers=headers)
    assert response.status_code == case.status, response.text
    body = assert_error_shape(response, case.dialect)
    openai_type, anthropic_type = EXPECTED_TYPES[case.status]
    if case.dialect == "anthropic":
        assert body["error"]["type"] == anthropic_type
    elif openai_type is not None:
        assert body["error"]["type"] == openai_type
    if case.param is not None:
        assert case.dialect == "openai"
        assert body["error"]["param"] == case.param
    if case.status == 413:
        assert str(MAX_BODY_BYTES) in str(body), "the message names the limit"


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_unknown_model_names_what_is_served(raw: httpx.Client, dialect: str) -> None:
    case = Bad("x", dialect, 404, oa(model="gpt-99") if dialect == "openai" else an(model="gpt-99"))
    headers = OPENAI_AUTH if dialect == "openai" else ANTHROPIC_AUTH
    body = raw.post(case.url_path(), content=case.content(), headers=headers).json()
    message = body["error"]["message"]
    assert "gpt-99" in message and "fake-echo" in message
    if dialect == "openai":
        assert body["error"]["code"] == "model_not_found"


def chunks(total: int, size: int = 8192) -> Iterator[bytes]:
    yield b'{"model": "fake-echo", "messages": [{"role": "user", "content": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}]}'


@pytest.mark.parametrize(
    ("dialect", "path"), [("openai", "/v1/chat/completions"), ("anthropic", "/v1/messages")]
)
def test_oversize_chunked_body_without_content_length(raw: httpx.Client, dialect: str, path: str) -> None:
    headers = OPENAI_AUTH if dialect == "openai" else ANTHROPIC_AUTH
    request = raw.build_request("POST", path, content=chunks(4 * MAX_BODY_BYTES), headers=headers)
    assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
    response = raw.send(request)
    assert response.status_code == 413
    assert_error_shape(response, dialect)


def test_small_chunked_body_is_accepted(raw: httpx.Client) -> None:
    response = raw.post("/v1/chat/completions", content=chunks(100, 10), headers=OPENAI_AUTH)
    assert response.status_code == 200, response.text


def send_raw(gateway: GatewayServer, head: str, body: bytes) -> bytes:
    """Send bytes on a fresh connection; the whole answer (the server closes or we stop reading)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # the server may close hard after answering a broken request; the answer came first
    assert received, "no answer at all"
    return received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_declared_oversize_is_refused_before_the_body_is_read(gateway: GatewayServer) -> None:
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: {MASTER_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {MAX_BODY_BYTES * 100}\r\n\r\n"
    )
    answer = send_raw(gateway, head, b"")  # not one byte of the announced body
    assert status_of(answer) == 413
    assert b'"request_too_large"' in answer


def test_lying_short_content_length(gateway: GatewayServer) -> None:
    body = orjson.dumps(oa(messages=[{"role": "user", "content": "x" * 2000}]))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nauthorization: Bearer {MASTER_KEY}\r\n"
        "content-type: application/json\r\ncontent-length: 20\r\n\r\n"
    )
    answer = send_raw(gateway, head, body)
    # Only the 20 announced bytes are the body (half a JSON object: the gateway's 400); the rest is
    # not a request (the HTTP server's 400, which may win the race and close the connection).
    assert status_of(answer) == 400
    assert b" 500 " not in answer


def test_content_length_with_chunked_encoding_is_refused(gateway: GatewayServer) -> None:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nauthorization: Bearer {MASTER_KEY}\r\n"
        "content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    answer = send_raw(gateway, head, b"4\r\nabcd\r\n0\r\n\r\n")
    assert status_of(answer) == 400  # refused by the HTTP server: request smuggling shape


def test_non_numeric_content_length_is_refused(gateway: GatewayServer) -> None:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nauthorization: Bearer {MASTER_KEY}\r\n"
        "content-length: lots\r\n\r\n"
    )
    assert status_of(send_raw(gateway, head, b"{}")) == 400
