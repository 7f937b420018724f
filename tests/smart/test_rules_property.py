"""Property: a request carrying personal data or a confidential tag, anywhere, in either API, is
never sent to a cloud deployment — not as the routed choice, not to a cloud deployment of a mixed
model, not to a fallback. Checked where it matters: the fake cloud upstreams receive nothing, and
the ledger's attempt rows name only local deployments."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes import FakeUpstream, GatewayServer
from tests.smart.conftest import AUTH


def _luhn_complete(prefix: str) -> str:
    for check in "0123456789":
        digits = prefix + check
        total = 0
        for i, c in enumerate(reversed(digits)):
            v = int(c) * (2 if i % 2 else 1)
            total += v - 9 if v > 9 else v
        if total % 10 == 0:
            return digits
    raise AssertionError


words = st.lists(
    st.sampled_from(["please", "check", "the", "record", "for", "our", "client", "today"]), max_size=6
)
emails = st.builds(
    lambda user, host, tld: f"{user}@{host}.{tld}",
    st.from_regex(r"[a-z][a-z0-9._]{0,10}[a-z0-9]", fullmatch=True),
    st.from_regex(r"[a-z]{2,10}", fullmatch=True),
    st.sampled_from(["com", "org", "io", "co.uk", "de"]),
)
phones = st.one_of(
    st.builds(
        lambda a, b, c: f"+1 {a} {b} {c}",
        st.integers(201, 989),
        st.integers(200, 999),
        st.integers(1000, 9999),
    ),
    st.builds(
        lambda a, b, c: f"({a}) {b}-{c}",
        st.integers(201, 989),
        st.integers(200, 999),
        st.integers(1000, 9999),
    ),
    st.builds(lambda n: f"+44 {n}", st.integers(1000000000, 9999999999)),
)
cards = st.builds(
    lambda body, sep: sep.join(_luhn_complete("4" + body)[i : i + 4] for i in range(0, 16, 4)),
    st.from_regex(r"[0-9]{14}", fullmatch=True),
    st.sampled_from(["", " ", "-"]),
)
ibans = st.sampled_from(
    ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR1420041010050500013M02606"]
)
ssns = st.builds(
    lambda a, b, c: f"{a:03d}-{b:02d}-{c:04d}", st.integers(1, 665), st.integers(1, 99), st.integers(1, 9999)
)
pii = st.one_of(emails, phones, cards, ibans, ssns)

PLACES = ("system", "user", "user_block", "tool_call", "tool_result", "assistant")


def openai_body(route: str, place: str, secret: str, filler: list[str], stream: bool) -> dict[str, Any]:
    text = " ".join([*filler, secret, *filler])
    plain = " ".join(filler) or "hello"
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": text if place == "system" else "be brief"}
    ]
    if place in ("tool_call", "tool_result"):
        args = orjson.dumps({"query": text if place == "tool_call" else plain}).decode()
        messages += [
            {"role": "user", "content": plain},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": args}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": text if place == "tool_result" else "ok"},
        ]
    elif place == "assistant":
        messages += [
            {"role": "user", "content": plain},
            {"role": "assistant", "content": text},
            {"role": "user", "content": "go on"},
        ]
    elif place == "user_block":
        messages.append({"role": "user", "content": [
            {"type": "text", "text": plain},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "text", "text": text}]})  # fmt: skip
    else:
        messages.append({"role": "user", "content": text})
    return {"model": route, "messages": messages, "stream": stream, "max_tokens": 20}


def anthropic_body(route: str, place: str, secret: str, filler: list[str], stream: bool) -> dict[str, Any]:
    text = " ".join([*filler, secret, *filler])
    plain = " ".join(filler) or "hello"
    body: dict[str, Any] = {"model": route, "max_tokens": 20, "stream": stream}
    body["system"] = [{"type": "text", "text": text}] if place == "system" else "be brief"
    if place in ("tool_call", "tool_result"):
        body["messages"] = [
            {"role": "user", "content": plain},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "lookup",
                        "input": {"query": text if place == "tool_call" else plain},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": text if place == "tool_result" else "ok"}],
                    }
                ],
            },
        ]
    elif place == "assistant":
        body["messages"] = [
            {"role": "user", "content": plain},
            {"role": "assistant", "content": text},
            {"role": "user", "content": "go on"},
        ]
    elif place == "user_block":
        body["messages"] = [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                    },
                    {"type": "text", "text": text},
                ],
            }
        ]
    else:
        body["messages"] = [{"role": "user", "content": text}]
    return body


def _send(http: httpx.Client, api: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    if api == "openai":
        return http.post("/v1/chat/completions", json=body, headers=headers)
    return http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01", **headers})


def ledger_rows(http: httpx.Client, request_id: str) -> list[dict[str, Any]]:
    """The request's ledger rows, once settled (settlement is batched: wait for it)."""
    for _ in range(200):
        rows: list[dict[str, Any]] = (
            http.get("/admin/ledger", params={"request_id": request_id}, headers=AUTH).json().get("data")
            or []
        )
        if rows:
            return rows
        time.sleep(0.02)
    return []


@pytest.fixture
def clean(fake_openai: FakeUpstream, fake_anthropic: FakeUpstream) -> tuple[FakeUpstream, FakeUpstream]:
    fake_openai.clear()
    fake_anthropic.clear()
    return fake_openai, fake_anthropic


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    api=st.sampled_from(["openai", "anthropic"]),
    route=st.sampled_from(["auto", "mixy", "cloudy"]),
    place=st.sampled_from(PLACES),
    secret=st.one_of(pii, st.just("")),
    tagged=st.sampled_from(["none", "header", "metadata"]),
    filler=words,
    stream=st.booleans(),
)
def test_restricted_requests_never_reach_a_cloud_deployment(
    smart_gateway: GatewayServer,
    clean: tuple[FakeUpstream, FakeUpstream],
    api: str,
    route: str,
    place: str,
    secret: str,
    tagged: str,
    filler: list[str],
    stream: bool,
) -> None:
    if not secret and tagged == "none":
        tagged = "header"  # every example is restricted one way or the other
    if route == "cloudy" and not secret:
        secret = "jane@example.org"  # cloudy's only rule is personal data
    build = openai_body if api == "openai" else anthropic_body
    body = build(route, place, secret, filler, stream)
    headers = dict(AUTH)
    if tagged == "header":
        headers["x-modelyard-tags"] = "internal, confidential"
    elif tagged == "metadata" and api == "openai":
        body["metadata"] = {"tags": "confidential"}
    elif tagged == "metadata":
        headers["x-modelyard-tags"] = "confidential"
    for upstream in clean:
        upstream.clear()
    with httpx.Client(base_url=smart_gateway.url, timeout=10) as http:
        response = _send(http, api, body, headers)
        text = response.read()
        attempts = ledger_rows(http, response.headers["x-request-id"])
    # The attempt log: every attempt went to a local deployment (a refusal has only its
    # "refused" row, attempt 0, no deployment).
    assert attempts, "no ledger row for the request"
    assert all(
        row["local"] and row["deployment"].startswith("fake/") for row in attempts if row["attempt"]
    ), attempts
    assert [r.path for r in clean[0].requests] == [] and [r.path for r in clean[1].requests] == [], (
        f"a restricted request reached a cloud upstream: {body}"
    )
    if route == "cloudy":
        # No local candidate at all: refused, in the caller's shape, naming the rule.
        assert response.status_code == 403, text
        error = response.json()
        assert "personal-data" in (error["error"]["message"])
        assert (
            (error["type"] == "error") if api == "anthropic" else (error["error"]["code"] == "routing_rule")
        )
        return
    assert response.status_code == 200, text
    assert response.headers["x-modelyard-deployment"].startswith("fake/"), response.headers
    decision = response.headers["x-modelyard-decision"]
    assert "+rule:" in decision, decision


def test_local_failures_never_fall_back_to_the_cloud(
    smart_gateway: GatewayServer, clean: tuple[FakeUpstream, FakeUpstream]
) -> None:
    """``mixy`` → ``mixed``: its local deployment is the only one allowed. Even with its cloud
    deployment first in priority and a cloud fallback model, the ledger shows local attempts only."""
    body = openai_body("mixy", "user", "4111 1111 1111 1111", ["pay"], False)
    with httpx.Client(base_url=smart_gateway.url, timeout=10, headers=AUTH) as http:
        response = http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        rows: list[dict[str, Any]] = []
        for _ in range(100):
            rows = http.get("/admin/ledger", params={"request_id": request_id}).json().get("data") or []
            if rows:
                break
            time.sleep(0.05)
    assert rows, "no ledger row for the request"
    assert {row["deployment"] for row in rows} == {"fake/echo"}
    assert all(row["local"] for row in rows)
    assert clean[0].requests == [] and clean[1].requests == []
