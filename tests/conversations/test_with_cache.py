"""Server-side conversations with the exact response cache on: the cache keys on the expanded
history (a follow-up never hits the first turn's answer), and an answer served from the cache
(plain, or replayed as a stream) is appended to the conversation like any other."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conversations.conftest import ENVIRON, MASTER, MASTER_H, gateway_yaml
from tests.fakes import GatewayServer


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    db: Path = tmp_path_factory.mktemp("conv-cache") / "gw.db"
    server = GatewayServer(gateway_yaml(f'"sqlite:///{db}"', extra="cache: {enabled: true}"), ENVIRON).start()
    try:
        yield server
    finally:
        server.stop()


def _turn(client: openai.OpenAI, cid: str, text: str, stream: bool) -> str | None:
    raw = client.chat.completions.with_raw_response.create(
        model="echo",
        messages=[{"role": "user", "content": text}],
        stream=stream,
        extra_body={"conversation_id": cid},
    )
    if stream:
        answer = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        answer = raw.parse().choices[0].message.content or ""
    assert answer == f"echo: {text}"
    return raw.headers.get("x-modelyard-cache")


@pytest.mark.parametrize("stream", [False, True])
def test_cache_hits_are_appended(cached: GatewayServer, stream: bool) -> None:
    text = "cache me " + uuid.uuid4().hex[:6]
    cid = "conv-cache-" + uuid.uuid4().hex
    admin = httpx.Client(base_url=cached.url, headers=MASTER_H, timeout=10)
    with (
        admin,
        openai.OpenAI(base_url=cached.url + "/v1", api_key=MASTER, max_retries=0, timeout=10) as client,
    ):
        assert _turn(client, cid, text, stream) == "miss"
        # The same first turn again (the conversation deleted, so the history is the same): a hit,
        # once the cache has written the answer (it writes in the background).
        deadline = time.monotonic() + 5
        while True:
            assert admin.delete(f"/admin/conversations/{cid}").status_code == 200
            status = _turn(client, cid, text, stream)
            if status == "hit" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == "hit"
        stored = admin.get(f"/admin/conversations/{cid}").json()
        assert stored["turns"] == 1 and [m["content"] for m in stored["messages"]] == [text, f"echo: {text}"]
        # A follow-up carries its history: never the first turn's cached answer.
        assert _turn(client, cid, text, stream) == "miss"
        assert admin.get(f"/admin/conversations/{cid}").json()["turns"] == 2
