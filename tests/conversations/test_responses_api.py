"""``POST /v1/responses`` through the official ``openai`` SDK against a real gateway: text, a
``previous_response_id`` chain, function tools round trip, streaming (events parsed by the SDK),
retrieve, delete, input_items; bad input gets 400/404 in OpenAI's shape."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.conversations.conftest import new_key
from tests.fakes import FakeUpstream

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_text_answer(oa: openai.OpenAI) -> None:
    r = oa.responses.create(model="echo", input="hello there", instructions="be brief")
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "completed"
    assert r.output_text == "echo: hello there"
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.usage is not None and r.usage.output_tokens > 0 and r.usage.input_tokens > 0
    assert r.instructions == "be brief" and r.model == "echo"


def test_previous_response_chain_reaches_the_model(oa: openai.OpenAI, fake_openai: FakeUpstream) -> None:
    first = oa.responses.create(model="echo", input="my name is Ada")
    second = oa.responses.create(model="echo", input="what is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    fake_openai.clear()
    third = oa.responses.create(model="oa-text", input="and once more", previous_response_id=second.id)
    assert third.status == "completed" and third.output_text
    sent = fake_openai.last().json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "user"]
    assert sent[0]["content"] == "my name is Ada"
    assert sent[1]["content"] == "echo: my name is Ada"
    assert sent[3]["content"] == "echo: what is my name?"
    assert sent[4]["content"] == "and once more"


def test_instructions_are_not_carried_along_the_chain(oa: openai.OpenAI, fake_openai: FakeUpstream) -> None:
    first = oa.responses.create(model="oa-text", input="hi", instructions="talk like a pirate")
    fake_openai.clear()
    oa.responses.create(
        model="oa-text", input="again", previous_response_id=first.id, instructions="be formal"
    )
    sent = fake_openai.last().json["messages"]
    assert sent[0] == {"role": "system", "content": "be formal"}
    assert not any(m.get("content") == "talk like a pirate" for m in sent)


@pytest.mark.parametrize("model", ["tools", "an-tools"])
def test_function_call_round_trip(oa: openai.OpenAI, model: str) -> None:
    first = oa.responses.create(model=model, input="weather in Paris?", tools=[WEATHER_TOOL])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].arguments == '{"city":"test"}' and calls[0].call_id
    second = oa.responses.create(
        model="echo",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temp": 21}'}],
    )
    # The echo model answers the last *user* text: the history (with the call) reached it intact.
    assert second.output_text == "echo: weather in Paris?"


def test_function_call_items_sent_by_the_client(oa: openai.OpenAI, fake_openai: FakeUpstream) -> None:
    fake_openai.clear()
    oa.responses.create(
        model="oa-text",
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "21C"},
        ],
        tools=[WEATHER_TOOL],
    )
    body = fake_openai.last().json
    assert body["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "21C"}
    assert body["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("model", ["echo", "an-echo", "oa-text", "an-text"])
def test_stream_equals_plain_answer(oa: openai.OpenAI, model: str) -> None:
    plain = oa.responses.create(model=model, input="stream me please")
    events = list(oa.responses.create(model=model, input="stream me please", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for expected in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
    ):
        assert expected in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == plain.output_text
    final = events[-1].response
    assert final.output_text == plain.output_text and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0


def test_stream_helper_accumulates_and_chains(oa: openai.OpenAI) -> None:
    with oa.responses.stream(model="echo", input="first turn") as stream:
        final = stream.get_final_response()
    assert final.output_text == "echo: first turn"
    follow = oa.responses.create(model="oa-text", input="next", previous_response_id=final.id)
    assert follow.status == "completed"


def test_streamed_function_call(oa: openai.OpenAI) -> None:
    with oa.responses.stream(model="tools", input="weather?", tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_response()
    calls = [i for i in final.output if i.type == "function_call"]
    assert len(calls) == 1 and calls[0].arguments == '{"city":"test"}'
    done = oa.responses.create(
        model="echo",
        previous_response_id=final.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
    )
    assert done.output_text == "echo: weather?"


def test_cut_stream_ends_failed_and_is_not_stored(oa: openai.OpenAI) -> None:
    events = list(oa.responses.create(model="cut", input="cut me", stream=True))
    assert events[-1].type == "response.failed"
    response_id = events[0].response.id
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(response_id)


def test_retrieve_input_items_and_delete(oa: openai.OpenAI) -> None:
    created = oa.responses.create(model="echo", input="keep me")
    got = oa.responses.retrieve(created.id)
    assert got.id == created.id and got.output_text == "echo: keep me"
    items = oa.responses.input_items.list(created.id)
    assert [i.type for i in items.data] == ["message"]
    oa.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(created.id)
    with pytest.raises(openai.BadRequestError) as info:
        oa.responses.create(model="echo", input="x", previous_response_id=created.id)
    assert info.value.code == "previous_response_not_found"


def test_store_false_is_not_kept(oa: openai.OpenAI) -> None:
    r = oa.responses.create(model="echo", input="forget me", store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(r.id)


def test_other_keys_cannot_see_or_continue(oa: openai.OpenAI, http: httpx.Client, gw: Any) -> None:
    mine = oa.responses.create(model="echo", input="secret plans")
    key, _ = new_key(http, team_id="other-team")
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10) as stranger:
        with pytest.raises(openai.NotFoundError):
            stranger.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            stranger.responses.delete(mine.id)
        with pytest.raises(openai.BadRequestError) as info:
            stranger.responses.create(model="echo", input="x", previous_response_id=mine.id)
        assert "secret" not in info.value.message
        own = stranger.responses.create(model="echo", input="mine")
        assert stranger.responses.retrieve(own.id).id == own.id
    assert oa.responses.retrieve(mine.id).id == mine.id  # the master key sees everything


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "echo"}, "input"),
        ({"input": "hi"}, "model"),
        ({"model": "echo", "input": 42}, "input"),
        ({"model": "echo", "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"model": "echo", "input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
        ({"model": "echo", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        (
            {"model": "echo", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].image_url",
        ),
        ({"model": "echo", "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "echo", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "echo", "input": "hi", "previous_response_id": "resp_nope"}, "previous_response_id"),
        ({"model": "echo", "input": "hi", "background": True}, "background"),
    ],
)
def test_bad_input_is_a_400_in_openai_shape(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    r = http.post("/v1/responses", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_unknown_model_and_unknown_response(http: httpx.Client) -> None:
    assert http.post("/v1/responses", json={"model": "nope", "input": "hi"}).status_code == 404
    r = http.get("/v1/responses/resp_unknown")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    assert http.delete("/v1/responses/resp_unknown").status_code == 404


def test_responses_continue_a_server_side_conversation(oa: openai.OpenAI, http: httpx.Client) -> None:
    """``conversation`` (or the x-modelyard-conversation header) keeps the history in a
    conversation, shared with the chat APIs, instead of a response chain."""
    cid = "resp-conv-" + uuid.uuid4().hex
    first = oa.responses.create(model="echo", input="one", extra_body={"conversation": cid})
    assert first.output_text == "echo: one" and first.store is False
    oa.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "two"}], extra_body={"conversation_id": cid}
    )
    oa.responses.create(model="echo", input="three", extra_headers={"x-modelyard-conversation": cid})
    stored = http.get(f"/admin/conversations/{cid}").json()
    assert [m["content"] for m in stored["messages"]] == [
        "one",
        "echo: one",
        "two",
        "echo: two",
        "three",
        "echo: three",
    ]
    r = http.post(
        "/v1/responses",
        json={"model": "echo", "input": "x", "conversation": cid, "previous_response_id": first.id},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "conversation"


def test_responses_are_in_the_ledger_and_request_log(oa: openai.OpenAI, http: httpx.Client) -> None:
    raw = oa.responses.with_raw_response.create(model="echo", input="count me")
    request_id = raw.headers["x-request-id"]
    assert raw.headers["x-modelyard-deployment"] and float(raw.headers["x-modelyard-overhead-ms"]) >= 0
    deadline = time.monotonic() + 10
    while True:
        ledger = http.get("/admin/ledger", params={"request_id": request_id}).json()["data"]
        logged = http.get(f"/admin/requests/{request_id}")
        if (ledger and logged.status_code == 200) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ledger and ledger[0]["tokens_out"] > 0
    assert logged.status_code == 200 and logged.json()["request"]["path"] == "/v1/responses"
    assert logged.json()["request"]["operation"] == "chat"
