"""Server-side conversations and the Responses API on the real embedded model (SmolLM2 through
llama.cpp): the stored history really reaches the model (its own prompt-token count grows by the
earlier turns), and ``/v1/responses`` streams and chains on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import openai
import pytest

from tests.support import gateway_process

pytestmark = pytest.mark.localmodel


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    with (
        gateway_process(tmp_path_factory.mktemp("conv-local")) as (url, log),
        openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120) as client,
    ):
        yield client
    assert "Traceback" not in log.read_text()


def test_conversation_history_reaches_the_local_model(local: openai.OpenAI) -> None:
    cid = "local-" + uuid.uuid4().hex
    question = [{"role": "user", "content": "My favourite colour is green. Say OK."}]
    first = local.chat.completions.create(
        model="local", max_tokens=8, temperature=0, messages=question, extra_body={"conversation_id": cid}
    )
    alone = local.chat.completions.create(
        model="local", max_tokens=8, temperature=0, messages=[{"role": "user", "content": "Which colour?"}]
    )
    second = local.chat.completions.create(
        model="local",
        max_tokens=8,
        temperature=0,
        messages=[{"role": "user", "content": "Which colour?"}],
        extra_body={"conversation_id": cid},
    )
    assert first.usage is not None and alone.usage is not None and second.usage is not None
    # The model's own tokenizer counted the earlier turn (question and answer) in the prompt.
    assert second.usage.prompt_tokens >= alone.usage.prompt_tokens + first.usage.completion_tokens + 8


def test_responses_stream_and_chain_on_the_local_model(local: openai.OpenAI) -> None:
    events = list(local.responses.create(model="local", input="Say hi.", max_output_tokens=8, stream=True))
    assert events[0].type == "response.created" and events[-1].type in (
        "response.completed",
        "response.incomplete",
    )
    first = events[-1].response
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and text == first.output_text
    alone = local.responses.create(model="local", input="Again.", max_output_tokens=4)
    chained = local.responses.create(
        model="local", input="Again.", max_output_tokens=4, previous_response_id=first.id
    )
    assert alone.usage is not None and chained.usage is not None and first.usage is not None
    assert chained.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
