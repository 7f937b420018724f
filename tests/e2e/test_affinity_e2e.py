"""Prompt-cache affinity and cache pricing through a real gateway, with the official SDKs.

Three fake Anthropic deployments of one model, each with its own prompt cache
(tests/fakes/prefix_cache.py: a prefix marked with ``cache_control`` is written on a miss and read
on a hit, reported in the usage block as Anthropic does). The gateway routes with
``affinity: {mode: prefix}``; its ledger is a real SQLite file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.fakes.gateway import GatewayServer
from tests.fakes.prefix_cache import PrefixCacheUpstream

MASTER = "mk-affinity-7d1e0c9b"
UPSTREAM_KEY = "an-upstream-affinity-31f0"
# claude-sonnet-4-5 in the shipped catalog, USD per million tokens → nano-dollars per token.
INPUT, OUTPUT, CACHE_READ, CACHE_WRITE_5M, CACHE_WRITE_1H = 3000, 15000, 300, 3750, 6000
SYSTEM = "You are the support assistant of a hardware shop. " * 120  # a prefix worth caching


def config(db: Path, upstreams: list[PrefixCacheUpstream]) -> str:
    deployments = "\n".join(
        f"      - {{provider: anthropic, model: claude-sonnet-4-5, base_url: {u.base_url}, api_key: env:AK}}"
        for u in upstreams
    )
    return f"""\
server: {{master_key: env:MK}}
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}"}}
models:
  - name: claude
    routing: {{affinity: {{mode: prefix}}}}
    deployments:
{deployments}
"""


class Env:
    def __init__(self, gateway: GatewayServer, upstreams: list[PrefixCacheUpstream]) -> None:
        self.gateway = gateway
        self.upstreams = upstreams
        self.http = httpx.Client(
            base_url=gateway.url, timeout=20, headers={"authorization": f"Bearer {MASTER}"}
        )
        self.anthropic = anthropic.Anthropic(base_url=gateway.url, api_key=MASTER, max_retries=0, timeout=20)
        self.openai = openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER, max_retries=0, timeout=20)

    def ledger(self, request_id: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while True:
            rows = self.http.get("/admin/ledger", params={"request_id": request_id}).json()["data"]
            if rows or time.monotonic() > deadline:
                return list(rows)
            time.sleep(0.05)

    def reset(self) -> None:
        for upstream in self.upstreams:
            upstream.reset()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    upstreams = [PrefixCacheUpstream(api_key=UPSTREAM_KEY).start() for _ in range(3)]
    db = tmp_path_factory.mktemp("affinity") / "ledger.db"
    gateway = GatewayServer(config(db, upstreams), {"MK": MASTER, "AK": UPSTREAM_KEY}).start()
    try:
        yield Env(gateway, upstreams)
    finally:
        gateway.stop()
        for upstream in upstreams:
            upstream.stop()


def _cost(usage: Any) -> int:
    split = getattr(usage, "cache_creation", None)
    writes_1h = getattr(split, "ephemeral_1h_input_tokens", 0) or 0 if split is not None else 0
    writes = usage.cache_creation_input_tokens or 0
    return (
        usage.input_tokens * INPUT
        + usage.output_tokens * OUTPUT
        + (usage.cache_read_input_tokens or 0) * CACHE_READ
        + (writes - writes_1h) * CACHE_WRITE_5M
        + writes_1h * CACHE_WRITE_1H
    )


def test_a_conversation_stays_on_its_warm_deployment_and_cache_tokens_are_priced(env: Env) -> None:
    env.reset()
    system = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Do you sell soldering irons?"}]
    served: list[str] = []
    for turn in range(5):
        raw = env.anthropic.messages.with_raw_response.create(
            model="claude",
            max_tokens=64,
            system=system,
            messages=messages,  # type: ignore[arg-type]
        )
        message = raw.parse()
        served.append(raw.headers["x-modelyard-deployment"])
        assert raw.headers["x-modelyard-route"] == ("primary" if turn == 0 else "affinity")
        usage = message.usage
        if turn == 0:
            assert usage.cache_creation_input_tokens and not usage.cache_read_input_tokens
        else:
            assert usage.cache_read_input_tokens and not usage.cache_creation_input_tokens
        (row,) = env.ledger(raw.headers["x-request-id"])
        assert row["tokens_cache_read"] == (usage.cache_read_input_tokens or 0)
        assert row["tokens_cache_write"] == (usage.cache_creation_input_tokens or 0)
        assert row["cost_nano"] == _cost(usage) > 0
        assert row["route_reason"] == raw.headers["x-modelyard-route"]
        messages += [{"role": "assistant", "content": "yes"}, {"role": "user", "content": f"and {turn}?"}]
    assert len(set(served)) == 1
    stats = [u.stats() for u in env.upstreams]
    assert sum(s["misses"] for s in stats) == 1 and sum(s["hits"] for s in stats) == 4


def test_streams_are_priced_with_their_cache_tokens_too(env: Env) -> None:
    env.reset()
    system = [{"type": "text", "text": "stream " + SYSTEM, "cache_control": {"type": "ephemeral"}}]
    ids = []
    for _ in range(2):
        with env.anthropic.messages.with_streaming_response.create(
            model="claude",
            max_tokens=64,
            system=system,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
        ) as response:
            ids.append(response.headers["x-request-id"])
            assert b"message_stop" in response.read()
    first, second = env.ledger(ids[0])[0], env.ledger(ids[1])[0]
    assert first["tokens_cache_write"] > 0 and first["tokens_cache_read"] == 0
    assert second["tokens_cache_read"] == first["tokens_cache_write"] and second["tokens_cache_write"] == 0
    assert second["cost_nano"] < first["cost_nano"]
    assert first["deployment"] == second["deployment"]


def test_cache_control_reaches_the_upstream_byte_for_byte(env: Env) -> None:
    env.reset()
    body = {
        "model": "claude",
        "max_tokens": 32,
        "system": [
            {"type": "text", "text": "rules " * 50},
            {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        "tools": [
            {
                "name": "stock",
                "description": "stock level",
                "input_schema": {"type": "object", "properties": {"sku": {"type": "string"}}},
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "long doc " * 40, "cache_control": {"type": "ephemeral"}}
                ],
            }
        ],
    }
    response = env.http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 200, response.text
    (received,) = [b for u in env.upstreams for b in u.bodies]
    for name in ("system", "tools", "messages"):
        assert orjson.dumps(body[name]) in received, name  # the same bytes, not just equal JSON
    assert orjson.loads(received)["model"] == "claude-sonnet-4-5"


def test_an_openai_caller_keeps_its_cache_marks_and_pays_cache_prices(env: Env) -> None:
    """OpenAI-shaped caller, Anthropic model: ``cache_control`` on parts survives the translation,
    and the cache writes (which OpenAI's usage cannot express) are still priced."""
    env.reset()
    mark = {"type": "ephemeral"}
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": "oa " + SYSTEM, "cache_control": mark}]},
        {"role": "user", "content": "hello"},
    ]
    ids = []
    for _ in range(2):
        raw = env.openai.chat.completions.with_raw_response.create(model="claude", messages=messages)  # type: ignore[arg-type]
        ids.append(raw.headers["x-request-id"])
        raw.parse()
    (upstream,) = {
        orjson.loads(b)["system"][0]["cache_control"]["type"] for u in env.upstreams for b in u.bodies
    }
    assert upstream == "ephemeral"
    first, second = env.ledger(ids[0])[0], env.ledger(ids[1])[0]
    assert first["tokens_cache_write"] > 0 and second["tokens_cache_read"] == first["tokens_cache_write"]
    prefix = first["tokens_cache_write"]
    assert first["cost_nano"] - second["cost_nano"] == prefix * (CACHE_WRITE_5M - CACHE_READ)
