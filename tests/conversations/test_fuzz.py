"""Malformed Responses requests and conversation fields, generated (hypothesis): whatever the body,
the answer is never a 5xx and always an error in OpenAI's shape (DESIGN invariant 7)."""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)
KINDS = st.sampled_from(
    [
        "message",
        "function_call",
        "function_call_output",
        "reasoning",
        "item_reference",
        "input_text",
        "input_image",
    ]
)
ROLES = st.sampled_from(["user", "assistant", "system", "developer", "tool", "robot"])


def _items() -> st.SearchStrategy[Any]:
    part = st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(
                ["input_text", "output_text", "input_image", "input_file", "refusal", "x"]
            ),
            "text": SCALARS,
            "image_url": SCALARS,
            "file_data": SCALARS,
        },
    )
    item = st.fixed_dictionaries(
        {},
        optional={
            "type": KINDS,
            "role": ROLES,
            "content": st.one_of(SCALARS, st.lists(st.one_of(part, SCALARS), max_size=3)),
            "call_id": SCALARS,
            "name": SCALARS,
            "arguments": st.one_of(SCALARS, st.dictionaries(st.text(max_size=3), SCALARS, max_size=2)),
            "output": st.one_of(SCALARS, st.lists(part, max_size=2)),
        },
    )
    return st.one_of(SCALARS, st.lists(st.one_of(item, SCALARS), max_size=4))


BODIES = st.fixed_dictionaries(
    {"model": st.one_of(st.just("echo"), SCALARS)},
    optional={
        "input": _items(),
        "instructions": SCALARS,
        "previous_response_id": SCALARS,
        "conversation": st.one_of(SCALARS, st.dictionaries(st.just("id"), SCALARS)),
        "tools": st.one_of(
            SCALARS,
            st.lists(st.dictionaries(st.sampled_from(["type", "name", "parameters"]), SCALARS), max_size=2),
        ),
        "tool_choice": st.one_of(SCALARS, st.dictionaries(st.sampled_from(["type", "name"]), SCALARS)),
        "text": st.one_of(
            SCALARS,
            st.dictionaries(st.just("format"), st.dictionaries(st.sampled_from(["type", "schema"]), SCALARS)),
        ),
        "max_output_tokens": SCALARS,
        "temperature": SCALARS,
        "stream": SCALARS,
        "store": SCALARS,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_responses_never_a_5xx(http: httpx.Client, body: dict[str, Any]) -> None:
    r = http.post("/v1/responses", json=body)
    assert r.status_code < 500, (body, r.text)
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["message"], str) and error["message"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    conversation=st.one_of(
        SCALARS, st.lists(SCALARS, max_size=2), st.dictionaries(st.text(max_size=2), SCALARS, max_size=1)
    )
)
def test_conversation_id_never_a_5xx(http: httpx.Client, conversation: Any) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "conversation_id": conversation}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code < 500, (conversation, r.text)
    r = http.post(
        "/v1/messages",
        json={**body, "model": "an-echo", "max_tokens": 5},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert r.status_code < 500, (conversation, r.text)
