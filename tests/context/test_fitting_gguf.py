"""Fitting steps on the real embedded model's tokenizer (no generation): trim keeps the system
prompt, the tools and the latest turns, never separates a tool call from its result, and fits."""

from __future__ import annotations

import itertools

import pytest

from modelyard.providers.base import WireProtocol
from modelyard.routing.context.counting import GGUFCounter
from modelyard.routing.context.fitting import compress_tool_outputs, plan_trim, split_turns, with_summary
from modelyard.routing.context.tokenizers import GGUFTokenizer
from modelyard.translate import openai_request_to_anthropic
from tests.context.conftest import gguf_path
from tests.context.conversation import TOOLS, conversation

pytestmark = pytest.mark.localmodel


@pytest.fixture(scope="module")
def counter() -> GGUFCounter:
    return GGUFCounter(GGUFTokenizer(gguf_path()))


def test_trim_keeps_system_tools_and_latest_turns_and_fits(counter: GGUFCounter) -> None:
    body = {"model": "local", "messages": conversation(30), "tools": TOOLS}
    full = counter.request(body, WireProtocol.OPENAI)
    assert full > 1500
    plan = plan_trim(body, WireProtocol.OPENAI, counter, 800)
    assert plan is not None
    kept = plan.body["messages"]
    assert plan.prompt_tokens == counter.request(plan.body, WireProtocol.OPENAI) <= 800
    assert plan.dropped == len(body["messages"]) - len(kept) > 0
    assert kept[0] == body["messages"][0]  # the system prompt
    assert plan.body["tools"] == TOOLS
    assert kept[-1] == body["messages"][-1]  # the last user turn
    assert kept[1]["role"] == "user"  # the kept history starts at a user turn
    # the latest turns are kept, contiguous, in order
    assert kept[1:] == body["messages"][len(body["messages"]) - len(kept) + 1 :]
    # adding one more of the dropped turns would not fit
    assert plan.prompt_tokens > 800 - 2 * counter.message(body["messages"][-3]) - 16


def test_trim_never_separates_a_tool_call_from_its_result(counter: GGUFCounter) -> None:
    body = {"model": "local", "messages": conversation(6), "tools": TOOLS}
    for budget in range(300, counter.request(body, WireProtocol.OPENAI) + 1, 7):
        plan = plan_trim(body, WireProtocol.OPENAI, counter, budget)
        if plan is None:
            continue
        kept = plan.body["messages"]
        calls = [m for m in kept if m.get("tool_calls")]
        results = [m for m in kept if m["role"] == "tool"]
        assert len(calls) == len(results)
        for i, message in enumerate(kept):
            if message["role"] == "tool":
                assert kept[i - 1].get("tool_calls"), "a tool result lost its call"


def test_anthropic_trim_keeps_tool_use_with_its_result(counter: GGUFCounter) -> None:
    body = openai_request_to_anthropic(
        {"model": "local", "messages": conversation(8), "tools": TOOLS}, default_max_tokens=64
    )
    _system, turns = split_turns(body["messages"])
    assert len(turns) == 9
    plan = plan_trim(body, WireProtocol.ANTHROPIC, counter, 500)
    assert plan is not None
    kept = plan.body["messages"]
    assert plan.body["system"] == body["system"]
    assert kept[0]["role"] == "user" and kept[-1] == body["messages"][-1]
    for i, message in enumerate(kept):
        blocks = message["content"] if isinstance(message["content"], list) else []
        if any(b.get("type") == "tool_result" for b in blocks):
            assert any(b.get("type") == "tool_use" for b in kept[i - 1]["content"])


def test_the_last_turn_alone_too_large_cannot_be_trimmed(counter: GGUFCounter) -> None:
    body = {"model": "local", "messages": [{"role": "user", "content": "word " * 2000}]}
    assert plan_trim(body, WireProtocol.OPENAI, counter, 1000) is None


def test_long_tool_outputs_lose_their_middle(counter: GGUFCounter) -> None:
    messages = conversation(5)
    at = next(i for i, m in enumerate(messages) if m["role"] == "tool")
    messages[at]["content"] = "\n".join(f"line {i}: tide gauge reading {i % 97} cm" for i in range(400))
    body = {"model": "local", "messages": messages}
    out, cut = compress_tool_outputs(body, WireProtocol.OPENAI, counter, 200, 0.5)
    assert cut == 1
    text = out["messages"][at]["content"]
    assert text.startswith("line 0:") and text.endswith("line 399: tide gauge reading 11 cm")
    assert "tokens of tool output omitted by the gateway" in text
    assert counter.text(text) <= 200 + 30
    assert body["messages"][at]["content"] != text  # the caller's body is not changed in place


def test_summary_goes_after_the_system_prompt(counter: GGUFCounter) -> None:
    messages = conversation(4)
    out = with_summary({"messages": messages}, WireProtocol.OPENAI, "They talked about tides.", 5)
    assert out["messages"][0] == messages[0]
    summary = out["messages"][1]
    assert summary["role"] == "system" and "They talked about tides." in summary["content"]
    assert out["messages"][2:] == messages[5:]


def test_trim_in_steps_keeps_the_prompt_start_stable_as_the_conversation_grows(counter: GGUFCounter) -> None:
    starts = []
    for turns in range(20, 32):
        body = {"model": "local", "messages": conversation(turns)}
        plan = plan_trim(body, WireProtocol.OPENAI, counter, 900, step=4)
        assert plan is not None and plan.prompt_tokens <= 900
        assert plan.dropped_turns % 4 == 0
        starts.append(plan.body["messages"][1]["content"])
    # The first kept turn changes at most once per 4 new turns (one-at-a-time trimming: every turn).
    changes = sum(1 for a, b in itertools.pairwise(starts) if a != b)
    assert changes <= len(starts) // 4 + 1
