"""The official ``openai`` SDK against a running gateway: chat, streams, tools, JSON mode,
embeddings, models and errors, each as the SDK's own types and exception classes."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import openai
import orjson
import pytest
from pydantic import BaseModel

from tests.fakes import FakeUpstream, GatewayServer, recording
from tests.fakes.bodies import (
    ANTHROPIC_TOOL_TEXT,
    ANTHROPIC_TOOL_USES,
    OPENAI_TOOL_CALLS,
    OPENAI_TOOLS,
    QUESTION,
    TEXT_ANSWER,
)

Fakes = tuple[FakeUpstream, FakeUpstream]
TOOLS: Any = OPENAI_TOOLS
MESSAGES: Any = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}]


@pytest.mark.parametrize(
    ("model", "answer", "deployment"),
    [
        ("oa-rec-text", TEXT_ANSWER, "openai/rec-text"),
        ("an-rec-text", TEXT_ANSWER, "anthropic/rec-text"),
        ("fake-echo", f"echo: {QUESTION}", "fake/echo"),
        ("fake-an-echo", f"echo: {QUESTION}", "fake/echo"),
    ],
)
def test_chat_completion(openai_client: openai.OpenAI, model: str, answer: str, deployment: str) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, max_tokens=64
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == answer
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert raw.headers["x-modelyard-deployment"] == deployment
    assert raw.headers["x-request-id"].startswith("req_")
    assert float(raw.headers["x-modelyard-overhead-ms"]) >= 0


@pytest.mark.parametrize("model", ["oa-rec-text", "an-rec-text", "fake-echo", "fake-an-echo"])
def test_streamed_chat_with_usage(openai_client: openai.OpenAI, model: str) -> None:
    stream = openai_client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == (TEXT_ANSWER if model.startswith(("oa", "an")) else f"echo: {QUESTION}")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert (
        chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    )


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("oa-rec-tools", [(i, n, a) for i, n, a in OPENAI_TOOL_CALLS]),
        ("an-rec-tools", [(i, n, a) for i, n, a in ANTHROPIC_TOOL_USES]),
        (
            "fake-tools",
            [
                ("call_fake0", "get_weather", '{"city":"test","unit":"test"}'),
                ("call_fake1", "get_local_time", '{"timezone":"test"}'),
            ],
        ),
    ],
)
def test_streamed_tool_calls_assemble_in_the_sdk(
    openai_client: openai.OpenAI, model: str, expected: list[tuple[str, str, str]]
) -> None:
    with openai_client.chat.completions.stream(model=model, messages=MESSAGES, tools=TOOLS) as stream:
        deltas = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    assert len(deltas) >= len(expected) * 2, "arguments arrived in pieces"
    calls = final.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == expected
    assert final.choices[0].finish_reason == "tool_calls"
    if model == "an-rec-tools":
        assert final.choices[0].message.content == ANTHROPIC_TOOL_TEXT


def test_non_streamed_tool_calls(openai_client: openai.OpenAI, upstreams: Fakes) -> None:
    completion = openai_client.chat.completions.create(
        model="oa-rec-tools",
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice="auto",
        parallel_tool_calls=True,
    )
    calls = completion.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, orjson.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        (i, n, orjson.loads(a)) for i, n, a in OPENAI_TOOL_CALLS
    ]
    sent = upstreams[0].last().json
    assert (
        sent["tools"] == OPENAI_TOOLS
        and sent["tool_choice"] == "auto"
        and sent["parallel_tool_calls"] is True
    )


def test_json_object_mode_is_passed_upstream(openai_client: openai.OpenAI, upstreams: Fakes) -> None:
    completion = openai_client.chat.completions.create(
        model="oa-rec-json", messages=MESSAGES, response_format={"type": "json_object"}
    )
    assert orjson.loads(completion.choices[0].message.content or "")["city"] == "Paris"
    assert upstreams[0].last().json["response_format"] == {"type": "json_object"}


class City(BaseModel):
    city: str
    country: str
    population_millions: float


def test_json_schema_mode_is_passed_upstream_and_parsed(
    openai_client: openai.OpenAI, upstreams: Fakes
) -> None:
    completion = openai_client.chat.completions.parse(
        model="oa-rec-json", messages=MESSAGES, response_format=City
    )
    assert completion.choices[0].message.parsed == City(
        city="Paris", country="France", population_millions=2.1
    )
    sent = upstreams[0].last().json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "City"
    assert sent["json_schema"]["strict"] is True
    assert set(sent["json_schema"]["schema"]["properties"]) == {"city", "country", "population_millions"}


def test_json_mode_for_an_anthropic_model_becomes_an_instruction(
    openai_client: openai.OpenAI, upstreams: Fakes
) -> None:
    schema: Any = {"name": "city", "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    openai_client.chat.completions.create(
        model="an-rec-text", messages=MESSAGES, response_format={"type": "json_schema", "json_schema": schema}
    )
    sent = upstreams[1].last().json
    assert "response_format" not in sent
    assert "JSON" in sent["system"] and '"city"' in sent["system"]


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
def test_embeddings_from_the_fake_provider(openai_client: openai.OpenAI, encoding_format: str | None) -> None:
    extra: Any = {"encoding_format": encoding_format} if encoding_format else {}
    result = openai_client.embeddings.create(model="fake-echo", input=["hello", "abc"], **extra)
    assert [d.index for d in result.data] == [0, 1]
    vectors: list[Any] = [d.embedding for d in result.data]
    if encoding_format == "base64":  # asked for explicitly, the SDK hands the base64 text over as is
        vectors = [np.frombuffer(base64.b64decode(v), dtype="<f4").tolist() for v in vectors]
    assert vectors == [[5.0, 1.0, 0.5], [3.0, 1.0, 0.5]]
    assert result.usage.prompt_tokens == 2 and result.model == "fake-echo"


def test_embeddings_from_an_openai_upstream(openai_client: openai.OpenAI, upstreams: Fakes) -> None:
    result = openai_client.embeddings.create(model="oa-embed", input=["first text", "second text"])
    recorded = orjson.loads(recording("openai", "rec-embed.json"))["data"]
    for got, want in zip(result.data, recorded, strict=True):
        np.testing.assert_allclose(got.embedding, want["embedding"], rtol=1e-6)
    sent = upstreams[0].last()
    assert sent.path == "/v1/embeddings" and sent.json["model"] == "rec-embed"
    assert sent.json["input"] == ["first text", "second text"]


def test_models_list_and_retrieve(openai_client: openai.OpenAI) -> None:
    ids = {m.id for m in openai_client.models.list()}
    assert {"oa-rec-text", "gpt-4o-mini", "an-rec-text", "claude-sonnet-4-5", "fake-echo"} <= ids
    assert "local" not in ids, "embedded models are off in the test config"
    model = openai_client.models.retrieve("fake-echo")
    assert model.id == "fake-echo" and model.owned_by == "fake"
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("no-such-model")


@pytest.mark.parametrize(
    ("model", "kwargs", "exc_type", "status"),
    [
        ("no-such-model", {}, openai.NotFoundError, 404),
        ("fake-echo", {"temperature": 5}, openai.BadRequestError, 400),
        ("fake-echo", {"max_tokens": 10**9}, openai.BadRequestError, 400),
        ("oa-err-400", {}, openai.BadRequestError, 400),
        ("oa-err-429", {}, openai.RateLimitError, 429),
        ("an-err-429", {}, openai.RateLimitError, 429),
        ("fake-429", {}, openai.RateLimitError, 429),
        ("oa-err-500", {}, openai.InternalServerError, 500),
        ("an-err-500", {}, openai.InternalServerError, 500),
        ("fake-503", {}, openai.InternalServerError, 503),
        ("an-err-529", {}, openai.InternalServerError, 503),
        ("oa-badkey", {}, openai.InternalServerError, 502),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_errors_are_the_sdks_exception_classes(
    openai_client: openai.OpenAI,
    model: str,
    kwargs: dict[str, Any],
    exc_type: type[openai.APIStatusError],
    status: int,
    stream: bool,
) -> None:
    with pytest.raises(exc_type) as caught:
        openai_client.chat.completions.create(model=model, messages=MESSAGES, stream=stream, **kwargs)
    error = caught.value
    assert error.status_code == status
    assert isinstance(error.body, dict) and error.body["message"] and error.body["type"]
    assert error.request_id == error.response.headers["x-request-id"]


def test_wrong_gateway_key_is_an_authentication_error(gateway: GatewayServer) -> None:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="not-the-key", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="fake-echo", messages=MESSAGES)
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert caught.value.status_code == 401


def test_stream_cut_mid_way_raises_in_the_sdk(openai_client: openai.OpenAI) -> None:
    received: list[str] = []
    with pytest.raises(openai.APIError, match=r"upstream|stream"):
        for chunk in openai_client.chat.completions.create(
            model="oa-drop-mid", messages=MESSAGES, stream=True
        ):
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(received) == "The capital", "the chunks before the cut were delivered"
