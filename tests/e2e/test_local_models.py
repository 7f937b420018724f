"""End to end with the real embedded models: the gateway as users start it, real SDK clients.

Starts ``python -m modelyard serve`` with zero config (only cloud variables cleared), waits for
/readyz, then gets a real completion (plain and streamed, through both SDKs) and real embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from tests.support import gateway_process

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

pytestmark = pytest.mark.localmodel


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gateway_process(tmp_path_factory.mktemp("local")) as (url, log):
        yield url
    assert "Traceback" not in log.read_text()


def test_zero_config_lists_the_embedded_models(gateway: str) -> None:
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="unused")
    assert {m.id for m in client.models.list()} >= {"local", "all-MiniLM-L6-v2"}


def test_real_completion_from_the_embedded_model(gateway: str) -> None:
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="unused")
    raw = client.chat.completions.with_raw_response.create(
        model="local",
        max_tokens=16,
        temperature=0,
        seed=1,
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}],
    )
    reply = raw.parse()
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert (
        reply.usage is not None and reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 16
    )
    assert raw.headers["x-modelyard-deployment"].startswith("llamacpp/")
    assert float(raw.headers["x-modelyard-overhead-ms"]) >= 0


def test_real_streamed_completion_with_usage(gateway: str) -> None:
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="local",
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Count: one, two,"}],
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces).strip()
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0


def test_anthropic_sdk_served_by_the_local_model(gateway: str) -> None:
    client = anthropic.Anthropic(base_url=gateway, api_key="unused")
    message = client.messages.create(
        model="local",
        max_tokens=12,
        system="Answer briefly.",
        messages=[{"role": "user", "content": "Name a colour."}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content and message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    with client.messages.stream(
        model="local", max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    counted = client.messages.count_tokens(model="local", messages=[{"role": "user", "content": "Hi there"}])
    assert counted.input_tokens > 0


def test_real_embeddings_from_the_embedded_model(gateway: str) -> None:
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="unused")
    result = client.embeddings.create(  # the SDK asks for base64 and decodes it
        model="all-MiniLM-L6-v2",
        input=["A cat sits on the mat.", "A kitten is sitting on a rug.", "Quarterly revenue grew 4%."],
    )
    vectors = [d.embedding for d in result.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-3) for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2
    assert result.usage.prompt_tokens > 0
    floats = client.embeddings.create(
        model="all-MiniLM-L6-v2", input="A cat sits on the mat.", encoding_format="float"
    )
    assert max(abs(a - b) for a, b in zip(floats.data[0].embedding, vectors[0], strict=True)) < 1e-5
