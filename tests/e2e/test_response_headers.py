"""Every answer carries ``x-request-id`` and ``x-modelyard-overhead-ms``; every answer a deployment
gave (streams, errors and the other routes included) names it in ``x-modelyard-deployment``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import GatewayServer
from tests.fakes.bodies import anthropic_messages, openai_chat
from tests.fakes.config import MASTER_KEY

OA = {"authorization": f"Bearer {MASTER_KEY}"}
AN = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}

# (name, method, path, json body, headers, expected status, expected deployment or None)
ANSWERS: list[tuple[str, str, str, Any, dict[str, str], int, str | None]] = [
    ("openai-chat", "POST", "/v1/chat/completions", openai_chat("oa-rec-text"), OA, 200, "openai/rec-text"),
    (
        "openai-stream",
        "POST",
        "/v1/chat/completions",
        openai_chat("an-rec-text", stream=True),
        OA,
        200,
        "anthropic/rec-text",
    ),
    (
        "anthropic-message",
        "POST",
        "/v1/messages",
        anthropic_messages("an-rec-text"),
        AN,
        200,
        "anthropic/rec-text",
    ),
    (
        "anthropic-stream",
        "POST",
        "/v1/messages",
        anthropic_messages("oa-rec-text", stream=True),
        AN,
        200,
        "openai/rec-text",
    ),
    (
        "count-tokens",
        "POST",
        "/v1/messages/count_tokens",
        {"model": "fake-an-echo", "messages": [{"role": "user", "content": "hi"}]},
        AN,
        200,
        "fake/echo",
    ),
    ("embeddings", "POST", "/v1/embeddings", {"model": "fake-echo", "input": "hi"}, OA, 200, "fake/echo"),
    ("models", "GET", "/v1/models", None, OA, 200, None),
    ("healthz", "GET", "/healthz", None, {}, 200, None),
    ("readyz", "GET", "/readyz", None, {}, 200, None),
    ("bad-input", "POST", "/v1/chat/completions", {"model": 1}, OA, 400, None),
    ("unknown-model", "POST", "/v1/messages", anthropic_messages("nope"), AN, 404, None),
    ("no-key", "POST", "/v1/chat/completions", openai_chat("fake-echo"), {}, 401, None),
    ("no-route", "GET", "/v1/nothing", None, OA, 404, None),
    ("wrong-method", "GET", "/v1/messages", None, AN, 405, None),
    ("too-large", "POST", "/v1/chat/completions", openai_chat("fake-echo", user="x" * 70000), OA, 413, None),
    ("upstream-429", "POST", "/v1/chat/completions", openai_chat("oa-err-429"), OA, 429, "openai/err-429"),
    ("upstream-529", "POST", "/v1/messages", anthropic_messages("an-err-529"), AN, 529, "anthropic/err-529"),
    (
        "upstream-529-openai-caller",
        "POST",
        "/v1/chat/completions",
        openai_chat("an-err-529"),
        OA,
        503,
        "anthropic/err-529",
    ),
    (
        "upstream-cut-stream",
        "POST",
        "/v1/chat/completions",
        openai_chat("oa-drop-mid", stream=True),
        OA,
        200,
        "openai/drop-mid",
    ),
]


@pytest.fixture(scope="module")
def raw(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


@pytest.mark.parametrize("answer", ANSWERS, ids=[a[0] for a in ANSWERS])
def test_every_answer_carries_the_gateway_headers(
    raw: httpx.Client, answer: tuple[str, str, str, Any, dict[str, str], int, str | None]
) -> None:
    _, method, path, body, headers, status, deployment = answer
    response = raw.request(method, path, json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"].startswith("req_")
    overhead = float(response.headers["x-modelyard-overhead-ms"])
    assert 0 <= overhead < 1000
    if deployment is not None:
        assert response.headers["x-modelyard-deployment"] == deployment
    else:
        assert "x-modelyard-deployment" not in response.headers
    if path.startswith("/v1/messages"):
        assert response.headers["request-id"] == response.headers["x-request-id"]


def test_request_ids_are_unique(raw: httpx.Client) -> None:
    ids = {raw.get("/healthz").headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20
