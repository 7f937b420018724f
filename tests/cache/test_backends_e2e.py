"""The SQLite and Redis backends behind real gateways: answers survive a restart (SQLite) and are
shared between replicas (Redis)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
import redis

from tests.fakes import GatewayServer
from tests.fakes.config import MASTER_KEY

REDIS_ENV = "MODELYARD_TEST_REDIS_URL"


def ask(gateway: GatewayServer, messages: list[dict[str, str]]) -> str:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=20) as client:
        raw = client.chat.completions.with_raw_response.create(model="echo", messages=messages)  # type: ignore[arg-type]
        assert raw.parse().choices[0].message.content == "echo: " + messages[-1]["content"]
        return raw.headers["x-modelyard-cache"]


def test_sqlite_answers_survive_a_restart(
    cached_gateway_factory: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    lines = f"  backend: sqlite\n  path: {tmp_path / 'cache.db'}\n"
    messages = [{"role": "user", "content": f"persist {uuid.uuid4().hex}"}]
    first = cached_gateway_factory(lines)
    assert ask(first, messages) == "miss"
    first.stop()  # closing the cache finishes its writes
    second = cached_gateway_factory(lines)
    assert ask(second, messages) == "hit"
    assert (tmp_path / "cache.db").exists()


def test_redis_answers_are_shared_between_replicas(
    cached_gateway_factory: Callable[..., GatewayServer],
) -> None:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"set {REDIS_ENV}=redis://127.0.0.1:6379/0 (a Redis you may write to) to run this test")
    prefix = f"modelyard-test:cache:{uuid.uuid4().hex[:12]}:"
    lines = f"  backend: redis\n  redis_url: env:TEST_CACHE_REDIS\n  redis_prefix: '{prefix}'\n"
    one = cached_gateway_factory(lines, {"TEST_CACHE_REDIS": url})
    two = cached_gateway_factory(lines, {"TEST_CACHE_REDIS": url})
    messages = [{"role": "user", "content": f"shared {uuid.uuid4().hex}"}]
    try:
        assert ask(one, messages) == "miss"
        time.sleep(0.1)  # the write happens just after the answer
        assert ask(two, messages) == "hit"
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=prefix + "*"))
        assert keys, "nothing was written under the test prefix"
        client.delete(*keys)
        client.close()


def test_redis_shares_the_semantic_index_between_replicas(
    cached_gateway_factory: Callable[..., GatewayServer],
) -> None:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"set {REDIS_ENV}=redis://127.0.0.1:6379/0 (a Redis you may write to) to run this test")
    prefix = f"modelyard-test:cache:{uuid.uuid4().hex[:12]}:"
    lines = f"  backend: redis\n  redis_url: env:TEST_CACHE_REDIS\n  redis_prefix: '{prefix}'\n"
    one = cached_gateway_factory(lines, {"TEST_CACHE_REDIS": url})
    two = cached_gateway_factory(lines, {"TEST_CACHE_REDIS": url})

    def sem(gateway: GatewayServer, text: str) -> str:
        with openai.OpenAI(
            base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=20
        ) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="sem", messages=[{"role": "user", "content": text}]
            )
            assert raw.parse().choices[0].message.content == "echo: How do I reset my password?"
            return raw.headers["x-modelyard-cache"]

    try:
        assert sem(one, "How do I reset my password?") == "miss"
        time.sleep(0.5)  # replica two follows the shared index in the background (XREAD BLOCK)
        assert sem(two, "How can I reset my password?") == "hit"
        # A replica started later reads the whole stream: the semantic tier survives restarts.
        three = cached_gateway_factory(lines, {"TEST_CACHE_REDIS": url})
        time.sleep(0.5)
        assert sem(three, "How could I reset my password?") == "hit"
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
