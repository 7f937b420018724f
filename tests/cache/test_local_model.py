"""The cache in front of the real embedded model (SmolLM2 through llama.cpp), in a served gateway
process: a real token stream is stored, replayed with equal content, and found again by meaning
with the embedding model the gateway already serves."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support import gateway_process

pytestmark = pytest.mark.localmodel

CONFIG = """
cache:
  enabled: true
  semantic: {enabled: true}
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    with gateway_process(tmp_path_factory.mktemp("cache-local"), CONFIG) as (url, log):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        try:
            yield client
        finally:
            client.close()
    assert "Traceback" not in log.read_text()


def streamed(client: openai.OpenAI, messages: list[Any]) -> tuple[str, str, str | None]:
    raw = client.chat.completions.with_raw_response.create(
        model="local", max_tokens=24, temperature=0, stream=True, messages=messages
    )
    text, finish = "", None
    for chunk in raw.parse():
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return raw.headers["x-modelyard-cache"], text, finish


def test_a_real_stream_is_replayed_with_equal_content(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
    state, original, finish = streamed(client, messages)
    assert state == "miss" and original and finish in ("stop", "length")
    time.sleep(0.2)
    assert streamed(client, messages) == ("hit", original, finish)
    plain = client.chat.completions.with_raw_response.create(
        model="local", max_tokens=24, temperature=0, messages=messages
    )
    assert plain.headers["x-modelyard-cache"] == "hit"
    assert plain.parse().choices[0].message.content == original
    # A paraphrase is found by meaning (the gateway's own MiniLM, threshold 0.96).
    state, again, _ = streamed(client, [{"role": "user", "content": "Name three colors of the rainbow."}])
    assert (state, again) == ("hit", original)
