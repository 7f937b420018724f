"""Upstream errors reach the caller with the right status, in the caller's own error shape.

Every vendor error of the recordings, through both client dialects, streaming or not (before the
first byte a stream's error is an ordinary HTTP error: the commit point). No upstream API key, nor
the gateway's master key, appears in any answer or in the gateway's log output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
import pytest

from tests.fakes import FakeUpstream
from tests.fakes.bodies import anthropic_messages, openai_chat
from tests.fakes.config import SECRETS

Fakes = tuple[FakeUpstream, FakeUpstream]


@dataclass(frozen=True)
class Case:
    model: str
    status: int
    openai_type: str
    anthropic_type: str
    says: str
    """A fragment of the upstream's message that must reach the caller."""
    retry_after: str | None = None
    openai_code: str | None = None


CASES = [
    Case(
        "oa-err-400",
        400,
        "invalid_request_error",
        "invalid_request_error",
        "maximum context length",
        openai_code="context_length_exceeded",
    ),
    Case("oa-err-401", 502, "api_error", "api_error", "credentials"),
    Case(
        "oa-err-429",
        429,
        "rate_limit_error",
        "rate_limit_error",
        "Rate limit reached",
        retry_after="2",
        openai_code="rate_limit_exceeded",
    ),
    Case("oa-err-500", 500, "api_error", "api_error", "The server had an error"),
    Case("oa-err-503", 503, "api_error", "overloaded_error", "overloaded"),
    Case("oa-missing", 502, "api_error", "api_error", "does not exist"),
    Case("an-err-400", 400, "invalid_request_error", "invalid_request_error", "prompt is too long"),
    Case("an-err-401", 502, "api_error", "api_error", "credentials"),
    Case(
        "an-err-429", 429, "rate_limit_error", "rate_limit_error", "exceed the rate limit", retry_after="17"
    ),
    Case("an-err-500", 500, "api_error", "api_error", "Internal server error"),
    Case("an-missing", 502, "api_error", "api_error", "model: missing"),
    Case("oa-badkey", 502, "api_error", "api_error", "credentials"),
    Case("an-badkey", 502, "api_error", "api_error", "credentials"),
    Case("fake-429", 429, "rate_limit_error", "rate_limit_error", "429", retry_after="1"),
    Case("fake-500", 500, "api_error", "api_error", "500"),
    Case("fake-503", 503, "api_error", "overloaded_error", "503"),
]


def call(
    oa_http: httpx.Client, an_http: httpx.Client, dialect: str, model: str, stream: bool
) -> httpx.Response:
    if dialect == "openai":
        return oa_http.post("/v1/chat/completions", json=openai_chat(model, stream=stream))
    return an_http.post("/v1/messages", json=anthropic_messages(model, stream=stream))


def assert_error_shape(response: httpx.Response, dialect: str, error_type: str) -> str:
    """The caller's own error shape; returns the message."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if dialect == "openai":
        assert set(body) == {"error"}
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == error_type
        return str(body["error"]["message"])
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == error_type
    assert body["request_id"] == response.headers["x-request-id"] == response.headers["request-id"]
    return str(body["error"]["message"])


def assert_no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, "a secret leaked"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("case", CASES, ids=[c.model for c in CASES])
def test_upstream_error_reaches_the_caller(
    oa_http: httpx.Client, an_http: httpx.Client, upstreams: Fakes, case: Case, dialect: str, stream: bool
) -> None:
    response = call(oa_http, an_http, dialect, case.model, stream)
    assert response.status_code == case.status, response.text
    message = assert_error_shape(
        response, dialect, case.openai_type if dialect == "openai" else case.anthropic_type
    )
    assert case.says in message
    assert response.headers.get("retry-after") == case.retry_after
    if dialect == "openai" and case.openai_code is not None:
        assert response.json()["error"]["code"] == case.openai_code
    assert response.headers["x-request-id"].startswith("req_")
    assert float(response.headers["x-modelyard-overhead-ms"]) >= 0
    assert_no_secrets(response.text + repr(response.headers))


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("model", ["oa-err-500", "an-err-429", "fake-503"])
def test_upstream_error_names_the_deployment_that_failed(
    oa_http: httpx.Client, an_http: httpx.Client, model: str, dialect: str
) -> None:
    response = call(oa_http, an_http, dialect, model, False)
    assert response.status_code >= 400
    expected = {
        "oa-err-500": "openai/err-500",
        "an-err-429": "anthropic/err-429",
        "fake-503": "fake/error-503",
    }
    assert response.headers.get("x-modelyard-deployment") == expected[model]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_overload_reaches_an_anthropic_caller_as_529(an_http: httpx.Client, stream: bool) -> None:
    response = an_http.post("/v1/messages", json=anthropic_messages("an-err-529", stream=stream))
    assert response.status_code == 529
    assert assert_error_shape(response, "anthropic", "overloaded_error").endswith("Overloaded")


def test_anthropic_overload_reaches_an_openai_caller_as_503(oa_http: httpx.Client) -> None:
    response = oa_http.post("/v1/chat/completions", json=openai_chat("an-err-529"))
    assert_error_shape(response, "openai", "api_error")
    assert response.status_code == 503


def test_no_secret_in_the_gateway_log(
    oa_http: httpx.Client, an_http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for model in ("oa-badkey", "an-badkey", "oa-err-401", "an-err-401", "oa-err-500", "fake-500"):
        for dialect in ("openai", "anthropic"):
            for stream in (False, True):
                call(oa_http, an_http, dialect, model, stream)
    for model in ("oa-drop-mid", "an-drop-mid", "an-rec-error-mid", "fake-cut"):
        call(oa_http, an_http, "openai", model, True)
        call(oa_http, an_http, "anthropic", model, True)
    assert any(r.name.startswith("modelyard") for r in caplog.records), "the gateway logged nothing to check"
    for record in caplog.records:
        assert_no_secrets(record.getMessage() + (record.exc_text or "") + repr(record.args))
    assert_no_secrets(caplog.text)
