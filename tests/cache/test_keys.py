"""Cache keys: what changes the answer changes the key; what does not, does not."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.cache.keys import conversation_of, exact_key, numbers_of, partition_key, tenant_of
from modelyard.policy.auth import ANONYMOUS
from modelyard.providers.base import WireProtocol

OA = WireProtocol.OPENAI
AN = WireProtocol.ANTHROPIC
BASE: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def key(body: dict[str, Any], *, tenant: str = "t", model: str = "m", protocol: WireProtocol = OA) -> str:
    return exact_key(tenant, model, protocol, body)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.7},
        {"top_p": 0.5},
        {"max_tokens": 10},
        {"max_completion_tokens": 10},
        {"stop": ["\n"]},
        {"seed": 1},
        {"n": 2},
        {"response_format": {"type": "json_object"}},
        {"tools": [TOOL]},
        {"tool_choice": "none"},
        {"presence_penalty": 0.5},
        {"logit_bias": {"50256": -100}},
        {"reasoning_effort": "high"},
        {"messages": [{"role": "system", "content": "Be long."}, {"role": "user", "content": "Hi there"}]},
        {"messages": [{"role": "user", "content": "Hi there"}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"}]},
        {"some_future_parameter": True},
    ],
)
def test_every_output_changing_parameter_changes_the_key(change: dict[str, Any]) -> None:
    assert key({**BASE, **change}) != key(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "alice"},
        {"metadata": {"trace": "x"}},
        {"store": False},
        {"cache": True},
        {"api_base": "http://evil"},
    ],
)
def test_fields_that_do_not_change_the_answer_keep_the_key(change: dict[str, Any]) -> None:
    assert key({**BASE, **change}) == key(BASE)


def test_model_tenant_and_protocol_are_part_of_the_key() -> None:
    assert key(BASE, model="other") != key(BASE)
    assert key(BASE, tenant="team:b") != key(BASE)
    assert key(BASE, protocol=AN) != key(BASE)


def test_equivalent_spellings_share_a_key() -> None:
    as_parts = {
        **BASE,
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
        ],
    }
    assert key(as_parts) == key(BASE)
    anthropic = {
        "model": "m",
        "max_tokens": 50,
        "system": "S",
        "messages": [{"role": "user", "content": "Q"}],
    }
    blocks = {
        **anthropic,
        "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Q"}]}],
    }
    assert key(anthropic, protocol=AN) == key(blocks, protocol=AN)
    assert key({**anthropic, "system": "T"}, protocol=AN) != key(anthropic, protocol=AN)


def test_tenants_come_from_the_team_then_the_key() -> None:
    class Key:
        def __init__(self, id: str, team_id: str | None) -> None:
            self.id, self.team_id = id, team_id

    class P:
        def __init__(self, key: Key | None, hint: str = "sk-…abcd") -> None:
            self.key, self.hint = key, hint

    assert tenant_of(P(Key("k1", "red"))) == tenant_of(P(Key("k2", "red"))) == "team:red"
    assert tenant_of(P(Key("k1", None))) == "key:k1"
    assert tenant_of(P(None)) == "master"
    assert tenant_of(ANONYMOUS) == "anonymous"


def test_conversation_split_and_partition() -> None:
    first = conversation_of(OA, BASE)
    assert first is not None and first.query == "Hi there" and first.context == ""
    follow = conversation_of(
        OA,
        {
            **BASE,
            "messages": [
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": "And times 3?"},
            ],
        },
    )
    assert follow is not None and follow.context == "user: What is 2+2?\nassistant: 4"
    assert partition_key("t", "m", first) != partition_key("t", "m", follow)
    assert partition_key("t", "m", first) != partition_key("u", "m", first)
    hot = conversation_of(OA, {**BASE, "temperature": 1.5})
    assert hot is not None and partition_key("t", "m", hot) != partition_key("t", "m", first)
    # Numbers are matched exactly, so a problem with other numbers is another partition.
    a = conversation_of(OA, {"model": "m", "messages": [{"role": "user", "content": "Add 3 and 4"}]})
    b = conversation_of(OA, {"model": "m", "messages": [{"role": "user", "content": "Add 3 and 5"}]})
    assert a is not None and b is not None and partition_key("t", "m", a) != partition_key("t", "m", b)
    assert numbers_of("1,000 cats, 2.5 dogs and 7") == ("1000", "2.5", "7")
    # Tool results and images cannot be compared by meaning.
    tool_turn = {"role": "tool", "tool_call_id": "c1", "content": "42"}
    assert conversation_of(OA, {**BASE, "messages": [*BASE["messages"], tool_turn]}) is None
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}
    assert conversation_of(OA, {**BASE, "messages": [image]}) is None
