"""Non-streaming responses in both directions, validated with the official SDK models."""

from __future__ import annotations

import re

from anthropic.types import Message
from openai.types.chat import ChatCompletion

from modelyard.providers.base import JSONDict
from modelyard.translate import anthropic_response_to_openai, openai_response_to_anthropic

from .helpers import CREATED, GPT, OPENAI_ID


def _completion(message: JSONDict, finish_reason: str = "stop", usage: JSONDict | None = None) -> JSONDict:
    return {
        "id": OPENAI_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": GPT,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage
        or {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        },
        "system_fingerprint": "fp_6b68a8204b",
    }


def _message(
    content: list[JSONDict], stop_reason: str = "end_turn", usage: JSONDict | None = None
) -> JSONDict:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 12, "output_tokens": 6},
    }


# --- OpenAI -> Anthropic -------------------------------------------------------------------------


def test_openai_text_response() -> None:
    resp = _completion({"role": "assistant", "content": "Hello there!", "refusal": None})
    out = openai_response_to_anthropic(resp, model="local-llama")
    Message.model_validate(out)
    assert re.fullmatch(r"msg_[A-Za-z0-9]{24}", out["id"])
    assert {k: v for k, v in out.items() if k != "id"} == {
        "type": "message",
        "role": "assistant",
        "model": "local-llama",
        "content": [{"type": "text", "text": "Hello there!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 19, "output_tokens": 10, "cache_read_input_tokens": 0},
    }


def test_openai_parallel_tool_calls_keep_ids_and_inputs() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Boston, MA", "unit": "f"}'},
            },
            {
                "id": "call_def",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"tz":"EST"}'},
            },
        ],
    }
    out = openai_response_to_anthropic(_completion(message, "tool_calls"), model="m")
    Message.model_validate(out)
    assert out["content"] == [
        {
            "type": "tool_use",
            "id": "call_abc",
            "name": "get_weather",
            "input": {"location": "Boston, MA", "unit": "f"},
        },
        {"type": "tool_use", "id": "call_def", "name": "get_time", "input": {"tz": "EST"}},
    ]
    assert out["stop_reason"] == "tool_use"


def test_openai_unparseable_arguments_are_kept_raw() -> None:
    message = {
        "role": "assistant",
        "content": "Sure.",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1'}}],
    }
    out = openai_response_to_anthropic(_completion(message, "tool_calls"), model="m")
    assert out["content"] == [
        {"type": "text", "text": "Sure."},
        {"type": "tool_use", "id": "c", "name": "f", "input": {"_raw_arguments": '{"a": 1'}},
    ]


def test_openai_empty_arguments_and_missing_id() -> None:
    message = {
        "role": "assistant",
        "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": ""}}],
    }
    block = openai_response_to_anthropic(_completion(message, "tool_calls"), model="m")["content"][0]
    assert block["input"] == {}
    assert block["id"].startswith("toolu_")


def test_openai_stop_with_tool_calls_is_tool_use() -> None:
    message = {
        "role": "assistant",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert openai_response_to_anthropic(_completion(message, "stop"), model="m")["stop_reason"] == "tool_use"


def test_openai_reasoning_content_becomes_leading_thinking_block() -> None:
    message = {"role": "assistant", "content": "42", "reasoning_content": "6 times 7."}
    out = openai_response_to_anthropic(_completion(message), model="m")
    Message.model_validate(out)
    assert out["content"] == [
        {"type": "thinking", "thinking": "6 times 7.", "signature": ""},
        {"type": "text", "text": "42"},
    ]


def test_openai_reasoning_field_variant() -> None:
    message = {"role": "assistant", "content": "ok", "reasoning": "hmm"}
    out = openai_response_to_anthropic(_completion(message), model="m")
    assert out["content"][0] == {"type": "thinking", "thinking": "hmm", "signature": ""}


def test_openai_length_and_content_filter() -> None:
    msg = {"role": "assistant", "content": "trunc"}
    assert openai_response_to_anthropic(_completion(msg, "length"), model="m")["stop_reason"] == "max_tokens"
    assert (
        openai_response_to_anthropic(_completion(msg, "content_filter"), model="m")["stop_reason"]
        == "refusal"
    )


def test_openai_refusal_becomes_text_with_refusal_stop() -> None:
    msg = {"role": "assistant", "content": None, "refusal": "I'm sorry, I can't help with that."}
    out = openai_response_to_anthropic(_completion(msg), model="m")
    assert out["content"] == [{"type": "text", "text": "I'm sorry, I can't help with that."}]
    assert out["stop_reason"] == "refusal"


def test_openai_cached_tokens_are_split_out_of_input() -> None:
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920},
    }
    out = openai_response_to_anthropic(
        _completion({"role": "assistant", "content": "x"}, usage=usage), model="m"
    )
    assert out["usage"] == {"input_tokens": 86, "output_tokens": 300, "cache_read_input_tokens": 1920}


def test_openai_response_without_usage_or_choices_is_still_valid() -> None:
    out = openai_response_to_anthropic({"id": "x", "choices": []}, model="m")
    Message.model_validate(out)
    assert out["content"] == []
    assert out["stop_reason"] == "end_turn"
    assert out["usage"] == {"input_tokens": 0, "output_tokens": 0}


# --- Anthropic -> OpenAI -------------------------------------------------------------------------


def test_anthropic_text_response() -> None:
    out = anthropic_response_to_openai(
        _message([{"type": "text", "text": "Hi! My name is Claude."}]), model="claude"
    )
    ChatCompletion.model_validate(out)
    assert re.fullmatch(r"chatcmpl-[A-Za-z0-9]{29}", out["id"])
    assert isinstance(out["created"], int)
    assert out["object"] == "chat.completion"
    assert out["model"] == "claude"
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi! My name is Claude.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 6,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_anthropic_tool_use_becomes_tool_calls() -> None:
    content = [
        {"type": "text", "text": "I'll check the weather."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA", "unit": "celsius"},
        },
        {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}},
    ]
    out = anthropic_response_to_openai(_message(content, "tool_use"), model="claude")
    ChatCompletion.model_validate(out)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the weather."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {
                "name": "get_weather",
                "arguments": '{"location":"San Francisco, CA","unit":"celsius"}',
            },
        },
        {"id": "toolu_02", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]


def test_anthropic_tool_use_only_has_null_content() -> None:
    content = [{"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}}]
    out = anthropic_response_to_openai(_message(content, "tool_use"), model="c")
    assert out["choices"][0]["message"]["content"] is None


def test_anthropic_thinking_becomes_reasoning_content() -> None:
    content = [
        {"type": "thinking", "thinking": "Let me add.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
        {"type": "text", "text": "4"},
    ]
    message = anthropic_response_to_openai(_message(content), model="c")["choices"][0]["message"]
    assert message["reasoning_content"] == "Let me add."
    assert message["content"] == "4"


def test_anthropic_text_blocks_with_citations_join_seamlessly() -> None:
    content = [
        {"type": "text", "text": "According to the document, "},
        {
            "type": "text",
            "text": "the grass is green",
            "citations": [{"type": "char_location", "cited_text": "g"}],
        },
        {"type": "text", "text": "."},
    ]
    message = anthropic_response_to_openai(_message(content), model="c")["choices"][0]["message"]
    assert message["content"] == "According to the document, the grass is green."


def test_anthropic_server_tool_blocks_are_left_out() -> None:
    content = [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "text", "text": "Found it."},
    ]
    message = anthropic_response_to_openai(_message(content), model="c")["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Found it.", "refusal": None}


def test_anthropic_cache_usage_maps_to_prompt_tokens() -> None:
    usage = {
        "input_tokens": 21,
        "cache_creation_input_tokens": 188086,
        "cache_read_input_tokens": 0,
        "output_tokens": 393,
    }
    out = anthropic_response_to_openai(_message([{"type": "text", "text": "x"}], usage=usage), model="c")
    assert out["usage"]["prompt_tokens"] == 188107
    assert out["usage"]["total_tokens"] == 188500
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def test_anthropic_stop_reasons() -> None:
    text = [{"type": "text", "text": "x"}]
    for stop, finish in [("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter")]:
        assert (
            anthropic_response_to_openai(_message(text, stop), model="c")["choices"][0]["finish_reason"]
            == finish
        )
