"""Canary secrets driven through error paths never reach JSON logs, traces or /metrics; the JSON
request log itself (one line per request, its fields); and the telemetry redactor on its own."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from modelyard.redact import Redactor
from modelyard.telemetry.redaction import TelemetryRedactor
from tests.fakes import FakeUpstream
from tests.fakes.config import MASTER_KEY, OPENAI_KEY, WRONG_KEY
from tests.telemetry._support import AUTH, bad_key_model, chat, config_text, running_gateway
from tests.telemetry.test_tracing import CAPTURE, add_tracer, wait_spans

QUERY_CANARY = "canary-query-secret-5c1d"
HEADER_CANARY = "canary-authz-value-77aa31"
PRICED = """
  - name: oa-text
    deployments:
      - {provider: openai, model: rec-text, base_url: '%s', api_key: env:TEST_OPENAI_KEY}
  - name: priced
    deployments:
      - {provider: fake, model: echo, pricing: {input_per_mtok: 1000000, output_per_mtok: 1000000}}
"""


def test_canaries_never_leave_the_gateway(fake_openai: FakeUpstream, tmp_path: Path) -> None:
    log_file = tmp_path / "requests.jsonl"
    text = (
        config_text(
            observability=f"log_format: json\nlog_file: {log_file}",
            extra_models=bad_key_model(fake_openai.base_url) + PRICED % fake_openai.base_url,
        )
        + CAPTURE
    )
    with running_gateway(text) as gw:
        spans = add_tracer(gw, capture=True)
        url = gw.url
        created = httpx.post(
            url + "/admin/keys",
            json={"name": "canary", "budgets": [{"period": "total", "limit_usd": 0.000001}]},
            headers=AUTH,
        )
        assert created.status_code == 201
        budgeted_key = created.json()["key"]
        as_key = {"authorization": f"Bearer {budgeted_key}"}
        other = httpx.post(url + "/admin/keys", json={"name": "canary-2"}, headers=AUTH)
        assert other.status_code == 201
        virtual_key = other.json()["key"]
        # An upstream 401 echoing the (wrong) provider key it was sent.
        assert chat(url, "badkey").status_code == 502
        # A bad key in the Authorization header, and one in the query string.
        assert chat(url, "echo", headers={"authorization": f"Bearer {HEADER_CANARY}"}).status_code == 401
        assert chat(url, "echo", headers={"authorization": f"Basic {HEADER_CANARY}"}).status_code == 401
        query = httpx.post(
            url + f"/v1/chat/completions?key={QUERY_CANARY}",
            json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
            headers=AUTH,
        )
        assert query.status_code == 200
        # Over budget with a virtual key, and secrets pasted into a captured prompt.
        assert chat(url, "priced", headers=as_key).status_code == 429
        pasted = httpx.post(
            url + "/v1/chat/completions",
            json={
                "model": "echo",
                "messages": [
                    {"role": "user", "content": f"my keys: {virtual_key} {OPENAI_KEY} {MASTER_KEY}"}
                ],
            },
            headers={"authorization": f"Bearer {virtual_key}"},
        )
        assert pasted.status_code == 200
        assert virtual_key in pasted.text  # the echo answers with it: the caller may see their own text
        # An upstream error and a bad body.
        assert chat(url, "boom").status_code == 503
        assert httpx.post(url + "/v1/chat/completions", content=b"{", headers=AUTH).status_code == 400
        metrics = httpx.get(url + "/metrics").text
        recorded = wait_spans(spans, 14)
        time.sleep(0.1)
    logged = log_file.read_text()
    span_text = "\n".join(f"{s.name} {dict(s.attributes or {})} {s.status.description}" for s in recorded)
    lines = [orjson.loads(line) for line in logged.splitlines()]
    assert len(lines) == 10  # one per request (the admin call included, /metrics not)
    for output in (logged, span_text, metrics):
        for canary in (
            OPENAI_KEY,
            WRONG_KEY,
            MASTER_KEY,
            virtual_key,
            budgeted_key,
            QUERY_CANARY,
            HEADER_CANARY,
        ):
            assert canary not in output
    assert "[REDACTED]" in logged and "[REDACTED]" in span_text
    statuses = [(line["model"], line["status"], line["error_type"]) for line in lines]
    assert ("badkey", 502, "provider") in statuses
    assert ("priced", 429, "policy") in statuses


@pytest.mark.parametrize("capture", [False, True])
def test_json_request_log(tmp_path: Path, capture: bool) -> None:
    log_file = tmp_path / "requests.jsonl"
    text = config_text(observability=f"log_format: json\nlog_file: {log_file}") + (CAPTURE if capture else "")
    with running_gateway(text) as gw:
        response = chat(gw.url, "flaky")
        assert response.status_code == 200
        time.sleep(0.05)
    (line,) = [orjson.loads(x) for x in log_file.read_text().splitlines()]
    assert line["event"] == "request"
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["key"] == "master"
    assert (line["model"], line["deployment"], line["route"]) == ("flaky", "fake/echo", "primary")
    assert (line["status"], line["outcome"], line["error_type"]) == (200, "ok", None)
    assert [(a["deployment"], a["outcome"], a["status"]) for a in line["attempts"]] == [
        ("fake/error-503", "retryable", 503),
        ("fake/echo", "ok", 200),
    ]
    usage = response.json()["usage"]
    assert line["tokens"]["input"] == usage["prompt_tokens"]
    assert line["tokens"]["output"] == usage["completion_tokens"]
    assert line["cost_usd"] == 0.0
    assert line["duration_ms"] > 0 and line["overhead_ms"] >= 0
    assert line["ts"].endswith("Z")
    assert ("prompt" in line) is capture


def test_redactor_covers_the_base_and_the_redaction_set() -> None:
    base = Redactor(["configured-secret-1234"])
    mine = TelemetryRedactor(["configured-secret-1234"])
    for text in (
        "sk-abcdefgh12345678 and sk-ant-api03-abcdefghij",
        "key myd_ABCDEFGH12345678xyz in text",
        "AKIAABCDEFGHIJKLMNOP",
        "Authorization: bearer abc.def-ghi_jkl",
        "the configured-secret-1234 leaked",
        "nothing to hide here",
    ):
        assert mine(text) == base(text)
    assert mine("GET https://x/v1/models?key=AIzaSyD-secret&alt=sse") == (
        "GET https://x/v1/models?key=[REDACTED]&alt=sse"
    )
    assert "s3cr3t" not in mine("headers: {'Cookie': 'session=s3cr3t', 'Accept': '*/*'}")
    assert "dXNlcjpw" not in mine('{"authorization": "Basic dXNlcjpw"}')
    assert "zzz" not in mine("x-api-key=zzz; api-key: zzz; proxy-authorization: zzz; set-cookie: a=zzz")
    assert mine.headers({"Authorization": "x", "accept": "json"}) == {
        "Authorization": "[REDACTED]",
        "accept": "json",
    }
