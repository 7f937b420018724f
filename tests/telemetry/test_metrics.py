"""GET /metrics after a scripted mix of requests: exact counts and labels for every metric."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.fakes import FakeUpstream, GatewayServer
from tests.telemetry._support import (
    AUTH,
    Samples,
    bad_key_model,
    chat,
    config_text,
    labels,
    running_gateway,
    scrape,
    series,
)


@pytest.fixture(scope="module")
def mixed(fake_openai: FakeUpstream) -> Iterator[tuple[GatewayServer, Samples, dict[str, int]]]:
    """One gateway, one scripted mix of requests, one scrape at the end."""
    text = config_text(
        observability="budget_refresh_s: 0.1", extra_models=bad_key_model(fake_openai.base_url)
    )
    with running_gateway(text) as gw:
        url = gw.url
        usage = {"input": 0, "output": 0}

        def count(response: httpx.Response) -> None:
            assert response.status_code == 200, response.text
            body = response.json()
            usage["input"] += body["usage"]["prompt_tokens"]
            usage["output"] += body["usage"]["completion_tokens"]

        count(chat(url, "echo"))
        count(chat(url, "echo-latest"))  # an alias: counted under its model
        streamed = httpx.post(
            url + "/v1/chat/completions",
            json={
                "model": "echo",
                "messages": [{"role": "user", "content": "stream me please"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            headers=AUTH,
            timeout=15,
        )
        assert streamed.status_code == 200
        for line in streamed.text.splitlines():
            if line.startswith("data: {") and '"usage":{' in line:
                chunk = orjson.loads(line[6:])
                if chunk.get("usage"):
                    usage["input"] += chunk["usage"]["prompt_tokens"]
                    usage["output"] += chunk["usage"]["completion_tokens"]
        messages = httpx.post(
            url + "/v1/messages",
            json={"model": "echo", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": AUTH["authorization"].split()[1], "anthropic-version": "2023-06-01"},
            timeout=15,
        )
        assert messages.status_code == 200, messages.text
        usage["input"] += messages.json()["usage"]["input_tokens"]
        usage["output"] += messages.json()["usage"]["output_tokens"]
        assert chat(url, "no-such-model").status_code == 404
        bad_body = httpx.post(
            url + "/v1/chat/completions",
            content=b"{not json",
            headers=AUTH | {"content-type": "application/json"},
        )
        assert bad_body.status_code == 400
        boom = chat(url, "boom")
        assert boom.status_code == 503, boom.text
        count(chat(url, "flaky"))
        count(chat(url, "primary-down"))
        assert chat(url, "echo", headers={"authorization": "Bearer myd_notarealkey"}).status_code == 401
        assert chat(url, "badkey").status_code == 502
        yield gw, scrape(url), usage


def test_requests_total(mixed: tuple[GatewayServer, Samples, dict[str, int]]) -> None:
    _, samples, _ = mixed
    got = series(samples, "modelyard_requests_total")
    assert got == {
        labels(operation="chat", dialect="openai", status="200", error_type="", model="echo"): 3,
        labels(operation="chat", dialect="anthropic", status="200", error_type="", model="echo"): 1,
        labels(operation="chat", dialect="openai", status="404", error_type="caller", model="_other"): 1,
        labels(operation="chat", dialect="openai", status="400", error_type="caller", model=""): 1,
        labels(operation="chat", dialect="openai", status="503", error_type="provider", model="boom"): 1,
        labels(operation="chat", dialect="openai", status="200", error_type="", model="flaky"): 1,
        labels(operation="chat", dialect="openai", status="200", error_type="", model="primary-down"): 1,
        labels(operation="chat", dialect="openai", status="401", error_type="policy", model=""): 1,
        labels(operation="chat", dialect="openai", status="502", error_type="provider", model="badkey"): 1,
    }


def test_attempts_retries_fallbacks_routes(mixed: tuple[GatewayServer, Samples, dict[str, int]]) -> None:
    _, samples, _ = mixed
    assert series(samples, "modelyard_attempts_total") == {
        labels(deployment="fake/echo", outcome="ok"): 6,  # 4 echo + flaky's second + the fallback
        labels(deployment="fake/error-503", outcome="retryable"): 2,  # boom + flaky's first
        labels(deployment="fake/error-429", outcome="retryable"): 1,
        labels(deployment="openai/rec-text", outcome="error"): 1,
    }
    latency_counts = {
        k: v for k, v in series(samples, "modelyard_upstream_latency_seconds_count").items() if v
    }
    assert latency_counts == series(samples, "modelyard_attempts_total")
    assert series(samples, "modelyard_retries_total") == {labels(model="flaky"): 1}
    assert series(samples, "modelyard_fallbacks_total") == {labels(model="primary-down"): 1}
    assert series(samples, "modelyard_route_decisions_total") == {
        labels(model="echo", reason="primary", local="false"): 4,
        labels(model="flaky", reason="primary", local="false"): 1,
        labels(model="primary-down", reason="fallback:echo", local="false"): 1,
    }


def test_genai_metrics(mixed: tuple[GatewayServer, Samples, dict[str, int]]) -> None:
    _, samples, usage = mixed
    duration = series(samples, "gen_ai_client_operation_duration_seconds_count")
    genai = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "fake"}
    assert duration == {
        labels(**genai, gen_ai_request_model="echo", gen_ai_response_model="echo", error_type=""): 3,
        labels(**genai, gen_ai_request_model="echo-latest", gen_ai_response_model="echo", error_type=""): 1,
        labels(**genai, gen_ai_request_model="flaky", gen_ai_response_model="echo", error_type=""): 1,
        labels(**genai, gen_ai_request_model="primary-down", gen_ai_response_model="echo", error_type=""): 1,
        labels(**genai, gen_ai_request_model="boom", gen_ai_response_model="", error_type="provider"): 1,
        labels(
            gen_ai_operation_name="chat",
            gen_ai_provider_name="",
            gen_ai_request_model="_other",
            gen_ai_response_model="",
            error_type="caller",
        ): 1,
        labels(
            gen_ai_operation_name="chat",
            gen_ai_provider_name="openai",
            gen_ai_request_model="badkey",
            gen_ai_response_model="",
            error_type="provider",
        ): 1,
    }
    tokens = series(samples, "gen_ai_client_token_usage_sum")
    by_type = {
        kind: sum(v for k, v in tokens.items() if ("gen_ai_token_type", kind) in k)
        for kind in ("input", "output")
    }
    assert by_type == {"input": usage["input"], "output": usage["output"]}
    token_counts = series(samples, "gen_ai_client_token_usage_count")
    assert sum(token_counts.values()) == 2 * 6  # six answers, input and output each
    # Buckets are the OpenTelemetry ones: 1, 4, 16, … 67108864.
    bounds = sorted(
        {float(dict(k)["le"]) for k in series(samples, "gen_ai_client_token_usage_bucket")} - {float("inf")}
    )
    assert bounds[:3] == [1.0, 4.0, 16.0] and bounds[-1] == 67108864.0
    ttft = series(samples, "gen_ai_server_time_to_first_token_seconds_count")
    assert sum(ttft.values()) == 1  # the one stream
    per_token = series(samples, "gen_ai_server_time_per_output_token_seconds_count")
    assert sum(per_token.values()) == 1


def test_tokens_cost_overhead_cache(mixed: tuple[GatewayServer, Samples, dict[str, int]]) -> None:
    _, samples, usage = mixed
    tokens = series(samples, "modelyard_tokens_total")
    assert sum(v for k, v in tokens.items() if ("type", "input") in k) == usage["input"]
    assert sum(v for k, v in tokens.items() if ("type", "output") in k) == usage["output"]
    assert {dict(k)["model"] for k in tokens} == {"echo", "flaky", "primary-down"}
    assert {dict(k)["deployment"] for k in tokens} == {"fake/echo"}
    # Every request but the scrape itself is measured for overhead.
    overhead = series(samples, "modelyard_gateway_overhead_seconds_count")
    assert overhead == {labels(operation="chat"): 11}
    fine = series(samples, "modelyard_gateway_overhead_seconds_bucket")
    assert labels(operation="chat", le="5e-05") in fine
    assert series(samples, "modelyard_cache_requests_total") == {}  # no response cache configured
    # The fake provider has no price: no cost series (never a zero-valued one per request).
    assert sum(series(samples, "modelyard_cost_usd_total").values()) == 0


def test_no_unbounded_labels(mixed: tuple[GatewayServer, Samples, dict[str, int]]) -> None:
    _, samples, _ = mixed
    values = {v for _, label_set in samples for _, v in label_set}
    assert "no-such-model" not in values
    assert not any(v.startswith("req_") for v in values)


def test_live_state_gauges(mixed: tuple[GatewayServer, Samples, dict[str, int]]) -> None:
    gw, samples, _ = mixed
    breaker = series(samples, "modelyard_deployment_breaker_state")
    assert breaker[labels(model="boom", deployment="fake/error-503")] == 2  # open
    assert breaker[labels(model="flaky", deployment="fake/error-503")] == 0  # one failure of five
    assert breaker[labels(model="echo", deployment="fake/echo")] == 0
    assert set(series(samples, "modelyard_deployment_in_flight").values()) == {0}

    # Two requests to a one-at-a-time model: one in flight, one queued, seen while they run.
    done: list[int] = []
    threads = [
        threading.Thread(target=lambda: done.append(chat(gw.url, "slow").status_code)) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    key = labels(model="slow", deployment="fake/slow-400")
    deadline = time.monotonic() + 5
    seen = None
    while time.monotonic() < deadline:
        now = scrape(gw.url)
        seen = (now[("modelyard_deployment_in_flight", key)], now[("modelyard_deployment_queue_depth", key)])
        if seen == (1, 1):
            break
        time.sleep(0.02)
    assert seen == (1, 1)
    for thread in threads:
        thread.join(10)
    assert done == [200, 200]
    after = scrape(gw.url)
    assert (
        after[("modelyard_deployment_in_flight", key)],
        after[("modelyard_deployment_queue_depth", key)],
    ) == (0, 0)


def test_budget_remaining(mixed: tuple[GatewayServer, Samples, dict[str, int]]) -> None:
    gw, _, _ = mixed
    created = httpx.post(
        gw.url + "/admin/keys",
        json={"name": "metrics-test", "budgets": [{"period": "monthly", "limit_usd": 7.5}]},
        headers=AUTH,
    )
    assert created.status_code == 201, created.text
    key_id = created.json()["id"]
    key = labels(scope="key", scope_id=key_id, period="monthly")
    deadline = time.monotonic() + 5
    value = None
    while time.monotonic() < deadline and value is None:
        value = scrape(gw.url).get(("modelyard_budget_remaining_usd", key))
        time.sleep(0.05)
    assert value == 7.5


def test_metrics_auth(fake_openai: FakeUpstream) -> None:
    with running_gateway(config_text(observability="metrics_auth: true")) as gw:
        assert httpx.get(gw.url + "/metrics").status_code == 401
        assert "modelyard_requests_total" in httpx.get(gw.url + "/metrics", headers=AUTH).text
        assert httpx.post(gw.url + "/metrics", headers=AUTH).status_code == 405
