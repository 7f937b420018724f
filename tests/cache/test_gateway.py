"""The exact cache through a real gateway, driven by the official SDKs over loopback.

Bad input: a ``cache`` body field that is not true/false/"no-cache"/"no-store" gets a 400 in the
client's own error shape (OpenAI ``invalid_request_error`` with ``param: cache``; Anthropic
``invalid_request_error``), before any upstream call.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fakes import FakeUpstream

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def prompt(text: str = "Hello") -> list[Any]:
    return [{"role": "user", "content": f"{text} {uuid.uuid4().hex}"}]


def ask(oa: openai.OpenAI, model: str, messages: list[Any], **kw: Any) -> tuple[str, Any]:
    raw = oa.chat.completions.with_raw_response.create(model=model, messages=messages, **kw)
    return raw.headers.get("x-modelyard-cache", ""), raw


def cache_entries(admin: httpx.Client) -> int:
    return int(admin.get("/admin/cache").json()["entries"])


def wait_for_write(admin: httpx.Client, before: int) -> None:
    """Cache writes happen just after the answer was sent: wait (bounded) until it landed."""
    deadline = time.monotonic() + 10
    while cache_entries(admin) <= before:
        assert time.monotonic() < deadline, "the answer was never written to the cache"
        time.sleep(0.01)


def openai_stream_content(raw: Any) -> dict[str, Any]:
    text, calls, finish = "", {}, None
    for chunk in raw.parse():
        for choice in chunk.choices:
            delta = choice.delta
            text += delta.content or ""
            for call in delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = call.id or entry["id"]
                if call.function is not None:
                    entry["name"] += call.function.name or ""
                    entry["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    return {"text": text, "tool_calls": [calls[i] for i in sorted(calls)], "finish": finish}


def openai_plain_content(completion: Any) -> dict[str, Any]:
    message = completion.choices[0].message
    calls = [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in message.tool_calls or []
    ]
    return {"text": message.content or "", "tool_calls": calls, "finish": completion.choices[0].finish_reason}


def anthropic_stream_content(raw: Any) -> dict[str, Any]:
    blocks: dict[int, dict[str, Any]] = {}
    stop = None
    for event in raw.parse():
        if event.type == "content_block_start":
            block = event.content_block
            blocks[event.index] = {
                "type": block.type,
                "text": "",
                "json": "",
                "name": getattr(block, "name", None),
            }
        elif event.type == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                blocks[event.index]["text"] += delta.text
            elif delta.type == "input_json_delta":
                blocks[event.index]["json"] += delta.partial_json
            elif delta.type == "thinking_delta":
                blocks[event.index]["text"] += delta.thinking
        elif event.type == "message_delta":
            stop = event.delta.stop_reason
    import json

    out = []
    for i in sorted(blocks):
        b = blocks[i]
        out.append(
            {
                "type": b["type"],
                "text": b["text"],
                "input": json.loads(b["json"]) if b["json"] else None,
                "name": b["name"],
            }
        )
    return {"blocks": out, "stop": stop}


def anthropic_plain_content(message: Any) -> dict[str, Any]:
    out = []
    for block in message.content:
        if block.type == "text":
            out.append({"type": "text", "text": block.text, "input": None, "name": None})
        elif block.type == "tool_use":
            out.append({"type": "tool_use", "text": "", "input": block.input, "name": block.name})
        elif block.type == "thinking":
            out.append({"type": "thinking", "text": block.thinking, "input": None, "name": None})
    return {"blocks": out, "stop": message.stop_reason}


def test_a_repeat_is_a_hit_with_a_fresh_id_and_no_upstream_call(
    oa: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    fake_openai, _ = upstreams
    messages = prompt()
    first_state, first = ask(oa, "oa-text", messages)
    second_state, second = ask(oa, "oa-text", messages, user="someone-else")  # `user` is not in the key
    assert (first_state, second_state) == ("miss", "hit")
    assert len(fake_openai.requests) == 1
    one, two = first.parse(), second.parse()
    assert one.choices[0].message.content == two.choices[0].message.content
    assert one.id != two.id
    assert second.headers["x-modelyard-deployment"] == "cache:exact"
    # Output-changing parameters are other entries.
    assert ask(oa, "oa-text", messages, temperature=0.3)[0] == "miss"
    assert ask(oa, "oa-text", messages, max_tokens=7)[0] == "miss"
    assert len(fake_openai.requests) == 3


@pytest.mark.parametrize("model", ["oa-text", "oa-tools"])
def test_openai_stream_replay_equals_the_original_stream(
    oa: openai.OpenAI, admin: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream], model: str
) -> None:
    fake_openai, _ = upstreams
    messages = prompt("Stream me")
    tools = (
        [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        if model == "oa-tools"
        else openai.NOT_GIVEN
    )
    before = cache_entries(admin)
    state, raw = ask(oa, model, messages, stream=True, tools=tools)
    original = openai_stream_content(raw)  # the SDK closes the connection right after [DONE]
    assert state == "miss" and original["finish"]
    wait_for_write(admin, before)
    state, raw = ask(oa, model, messages, stream=True, tools=tools, stream_options={"include_usage": True})
    assert state == "hit"
    assert openai_stream_content(raw) == original
    state, raw = ask(oa, model, messages, tools=tools)  # the same entry answers a plain request
    assert state == "hit"
    assert openai_plain_content(raw.parse()) == original
    assert len(fake_openai.requests) == 1


@pytest.mark.parametrize("model", ["an-text", "an-tools"])
def test_anthropic_stream_replay_equals_the_original_stream(
    an: anthropic.Anthropic, admin: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream], model: str
) -> None:
    _, fake_anthropic = upstreams
    kw: dict[str, Any] = {"model": model, "max_tokens": 200, "messages": prompt("Stream me")}
    if model == "an-tools":
        kw["tools"] = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    before = cache_entries(admin)
    raw = an.messages.with_raw_response.create(stream=True, **kw)
    assert raw.headers["x-modelyard-cache"] == "miss"
    original = anthropic_stream_content(raw)
    assert original["stop"]
    wait_for_write(admin, before)
    raw = an.messages.with_raw_response.create(stream=True, **kw)
    assert raw.headers["x-modelyard-cache"] == "hit"
    assert anthropic_stream_content(raw) == original
    plain = an.messages.with_raw_response.create(**kw)
    assert plain.headers["x-modelyard-cache"] == "hit"
    message = plain.parse()
    assert anthropic_plain_content(message) == original and message.id.startswith("msg_")
    assert len(fake_anthropic.requests) == 1


def test_cache_control_no_cache_and_no_store(
    oa: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    fake_openai, _ = upstreams
    messages = prompt()
    assert ask(oa, "oa-text", messages, extra_headers={"cache-control": "no-store"})[0] == "bypass"
    assert ask(oa, "oa-text", messages)[0] == "miss"  # no-store stored nothing
    assert ask(oa, "oa-text", messages)[0] == "hit"
    assert ask(oa, "oa-text", messages, extra_headers={"cache-control": "no-cache"})[0] == "miss"  # fresh
    assert ask(oa, "oa-text", messages)[0] == "hit"
    assert len(fake_openai.requests) == 3
    fresh = prompt()
    assert ask(oa, "oa-text", fresh, extra_headers={"cache-control": "no-cache"})[0] == "miss"
    assert ask(oa, "oa-text", fresh)[0] == "hit"  # no-cache still stores


def test_the_cache_body_field_is_honoured_checked_and_never_forwarded(
    oa: openai.OpenAI, an: anthropic.Anthropic, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    fake_openai, fake_anthropic = upstreams
    messages = prompt()
    assert ask(oa, "oa-text", messages, extra_body={"cache": False})[0] == "bypass"
    assert "cache" not in fake_openai.last().json
    assert ask(oa, "oa-text", messages, extra_body={"cache": "no-cache"})[0] == "miss"
    assert ask(oa, "oa-text", messages, extra_body={"cache": True})[0] == "hit"
    with pytest.raises(openai.BadRequestError) as caught:
        ask(oa, "oa-text", messages, extra_body={"cache": "sometimes"})
    assert caught.value.body["param"] == "cache"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as refused:
        an.messages.create(model="an-text", max_tokens=5, messages=prompt(), extra_body={"cache": 3})
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    raw = an.messages.with_raw_response.create(
        model="an-text", max_tokens=5, messages=prompt(), extra_body={"cache": "no-store"}
    )
    assert raw.headers["x-modelyard-cache"] == "bypass" and "cache" not in fake_anthropic.last().json


def test_errors_and_cut_streams_are_never_cached(
    oa: openai.OpenAI, an: anthropic.Anthropic, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    fake_openai, fake_anthropic = upstreams
    messages = prompt()
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            oa.chat.completions.create(model="oa-err", messages=messages)
    assert len(fake_openai.requests) == 2
    for model in ("oa-drop", "cut"):
        for _ in range(2):
            state, raw = ask(oa, model, messages, stream=True)
            assert state == "miss"
            with pytest.raises(openai.APIError):
                openai_stream_content(raw)
    assert len(fake_openai.requests) == 4
    kw: dict[str, Any] = {"model": "an-drop", "max_tokens": 20, "messages": messages, "stream": True}
    for _ in range(2):
        raw = an.messages.with_raw_response.create(**kw)
        assert raw.headers["x-modelyard-cache"] == "miss"
        with pytest.raises(anthropic.APIError):
            anthropic_stream_content(raw)
    assert len(fake_anthropic.requests) == 2


def _ledger(admin: httpx.Client, request_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = admin.get("/admin/ledger", params={"request_id": request_id}).json()["data"]
        if rows:
            return list(rows)
        time.sleep(0.05)
    raise AssertionError(f"no ledger row for {request_id}")


def test_hits_are_in_the_ledger_at_zero_upstream_cost(oa: openai.OpenAI, admin: httpx.Client) -> None:
    messages = prompt()
    _, miss = ask(oa, "oa-text", messages)
    _, hit = ask(oa, "oa-text", messages, stream=True)
    hit.parse().close()
    (miss_row,) = _ledger(admin, miss.headers["x-request-id"])
    (hit_row,) = _ledger(admin, hit.headers["x-request-id"])
    assert miss_row["deployment"] == "openai/rec-text" and miss_row["tokens_out"] > 0
    assert hit_row["deployment"] == "cache:exact" and hit_row["route_reason"] == "cache:exact"
    assert (hit_row["cost_nano"], hit_row["tokens_in"], hit_row["tokens_out"]) == (0, 0, 0)
    assert hit_row["status"] == "ok"


def test_a_model_without_cache_says_bypass(oa: openai.OpenAI) -> None:
    messages = prompt()
    assert ask(oa, "uncached", messages)[0] == "bypass"
    assert ask(oa, "uncached", messages)[0] == "bypass"


def test_no_answer_crosses_tenants(cached_gateway: Any, admin: httpx.Client) -> None:
    """1,000 identical prompts from two teams: the second team never gets the first one's answer;
    each team's own repeats hit."""
    keys = []
    for team in ("red", "blue"):
        response = admin.post("/admin/keys", json={"name": f"cache-{team}", "team_id": f"team-{team}"})
        assert response.status_code == 201, response.text
        keys.append(response.json()["key"])
    red, blue = (
        openai.OpenAI(base_url=cached_gateway.url + "/v1", api_key=k, max_retries=0, timeout=20) for k in keys
    )
    raw_red, raw_blue = (
        httpx.Client(base_url=cached_gateway.url, headers={"authorization": f"Bearer {k}"}, timeout=20)
        for k in keys
    )
    run = uuid.uuid4().hex
    prompts = [[{"role": "user", "content": f"question {i} of {run}"}] for i in range(1000)]
    cross = 0
    with red, blue, raw_red, raw_blue:
        # The bulk over plain HTTP/1.1 (fast); the SDKs below for the repeats.
        for messages in prompts:
            body = {"model": "echo", "messages": messages}
            first = raw_red.post("/v1/chat/completions", json=body)
            assert first.status_code == 200 and first.headers["x-modelyard-cache"] == "miss"
            second = raw_blue.post("/v1/chat/completions", json=body)
            assert second.status_code == 200
            cross += second.headers["x-modelyard-cache"] == "hit"
            assert second.headers["x-modelyard-deployment"] == "fake/echo"
        assert cross == 0
        for messages in prompts[:50]:
            assert ask(red, "echo", messages)[0] == "hit"
            assert ask(blue, "echo", messages)[0] == "hit"


def test_cache_metrics_and_request_log(oa: openai.OpenAI, cached_gateway: Any, admin: httpx.Client) -> None:
    messages = prompt()
    ask(oa, "oa-text", messages)
    _, hit = ask(oa, "oa-text", messages)
    ask(oa, "uncached", messages)
    metrics = httpx.get(cached_gateway.url + "/metrics").text
    assert 'modelyard_cache_requests_total{kind="exact",model="oa-text",result="hit"}' in metrics
    assert 'modelyard_cache_requests_total{kind="exact",model="oa-text",result="miss"}' in metrics
    assert 'model="uncached"' not in "\n".join(
        line for line in metrics.splitlines() if line.startswith("modelyard_cache_requests_total")
    )
    assert 'modelyard_cache_lookup_seconds_count{kind="exact"}' in metrics
    request_id = hit.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = admin.get(f"/admin/requests/{request_id}")
        if response.status_code == 200:
            break
        time.sleep(0.1)
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["request"]["cache"] == "hit"
    assert [row["deployment"] for row in detail["ledger"]] == ["cache:exact"]


def test_admin_cache_stats_and_clear(oa: openai.OpenAI, cached_gateway: Any, admin: httpx.Client) -> None:
    messages = prompt()
    ask(oa, "oa-text", messages)
    stats = admin.get("/admin/cache").json()
    assert stats["enabled"] and stats["backend"] == "memory" and stats["entries"] >= 1
    assert "uncached" not in stats["models"] and stats["models"]["sem"]["threshold"] == 0.96
    viewer = admin.post("/admin/keys", json={"name": "cache-viewer", "role": "viewer"}).json()["key"]
    refused = httpx.post(
        cached_gateway.url + "/admin/cache/clear", headers={"authorization": f"Bearer {viewer}"}
    )
    assert refused.status_code == 403
    assert (
        httpx.get(
            cached_gateway.url + "/admin/cache", headers={"authorization": f"Bearer {viewer}"}
        ).status_code
        == 200
    )
    assert ask(oa, "oa-text", messages)[0] == "hit"
    cleared = admin.post("/admin/cache/clear")
    assert cleared.status_code == 200 and cleared.json()["cleared"] >= 1
    assert ask(oa, "oa-text", messages)[0] == "miss"
    assert admin.get("/admin/cache/clear").status_code == 405
